#![no_main]
//! Legacy `POST /rc_data` body decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::legacy::decode_rc_status(data);
});
