#![no_main]
//! Diagnostic rendering of arbitrary CBOR (dead-letter decode endpoint): bounded recursion.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smartsolar_codec::render_cbor(data);
});
