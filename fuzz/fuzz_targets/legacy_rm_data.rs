#![no_main]
//! Legacy `POST /rm_data` body decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::legacy::decode_rm_data(data);
});
