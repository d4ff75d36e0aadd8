#![no_main]
//! JSON dead letter decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::decode_dead_letter(data);
});
