#![no_main]
//! Frame boundary detection with a small limit.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::frame::parse(data, 1024);
});
