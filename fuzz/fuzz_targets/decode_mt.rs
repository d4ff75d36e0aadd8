#![no_main]
//! MT decoding (the unit simulator's side).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::decode_mt(data);
});
