#![no_main]
//! Legacy `GET /rc_data` response decoding.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::legacy::decode_rc_settings(data);
});
