#![no_main]
//! MessagePack bus envelope decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::decode_bus_envelope(data);
});
