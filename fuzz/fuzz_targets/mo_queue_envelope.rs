#![no_main]
//! JSON MO queue envelope decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::decode_mo_queue_envelope(data);
});
