//! A stored letter's payload in readable form.

use codec::envelope::decode_mo_queue_envelope;
use codec::render_cbor;

/// The payload's CBOR message in diagnostic notation.
pub fn readable(payload: &str) -> Result<String, String> {
    let env = decode_mo_queue_envelope(payload.as_bytes())
        .map_err(|e| format!("the payload is not an MO queue envelope ({e})"))?;
    let bytes = env
        .message_bytes()
        .map_err(|e| format!("the message is not base64 ({e})"))?;
    render_cbor(&bytes).map_err(|e| format!("{e}; bytes h'{}'", hex::encode(&bytes)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The spec's example payload (`rtc_dead_letter` GET).
    pub(crate) const SPEC_PAYLOAD: &str = "{\"ident\": \"Aeris/10.112.89.62\", \"message\": \"ggSfghpaebuvaUNvbm5lY3RlZP8=\", \"correlation_id\": \"d478ea0eeadc47e8aead97502235ccac\", \"timestamp\": \"2018-02-06T14:29:14.349698\", \"ident_type\": \"IP\"}";

    #[test]
    fn the_spec_payload_reads_as_its_event_log() {
        assert_eq!(
            readable(SPEC_PAYLOAD).unwrap(),
            "[4, [[1517927343, \"Connected\"]]]"
        );
        assert!(readable("not json")
            .unwrap_err()
            .contains("not an MO queue envelope"));
        let truncated = SPEC_PAYLOAD.replace("ggSfghpaebuvaUNvbm5lY3RlZP8=", "ggSf");
        assert!(readable(&truncated).unwrap_err().contains("h'"));
    }
}
