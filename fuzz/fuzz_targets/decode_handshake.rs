#![no_main]
//! Handshake decoding: the first bytes any client sends.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::decode_handshake(data);
});
