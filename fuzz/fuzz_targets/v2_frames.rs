#![no_main]
//! Protocol version 2 (docs/rtc-protocol.md §8): a numbered MO frame as the gateway splits it,
//! the message after the number as it decodes it, and the acknowledgement as a unit reads it.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, message)) = smartsolar_codec::ack::split_sequenced(data) {
        let _ = smartsolar_codec::decode_mo(message);
    }
    let _ = smartsolar_codec::ack::decode_ack(data);
});
