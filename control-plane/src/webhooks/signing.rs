//! The `X-BBOXX-Signature` of a notification and subscribers' secret keys.
//!
//! The spec's verification code computes
//! `base64(HMAC-SHA1(key, payload + url))` where `key` is the secret exactly
//! as the subscriber received it (the base64 text, used as bytes, not
//! decoded), `payload` the exact request body and `url` the exact URL the
//! subscriber gave. This module computes the same thing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-BBOXX-Signature";

/// `base64(HMAC-SHA1(key, payload ++ url))`, with padding, no newline.
pub fn signature(key: &str, payload: &[u8], url: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(payload);
    mac.update(url.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a received signature in constant time.
pub fn verify(key: &str, payload: &[u8], url: &str, signature: &str) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(payload);
    mac.update(url.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

/// A new secret key: 16 random bytes in base64, 24 characters, like the
/// spec's example (`n9QgxA1GO0bzBVontkWkWg==`).
pub fn new_key() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_algorithm() {
        // Computed with the spec's Python code (hmac.new(key, payload + url,
        // sha1).digest().encode("base64").rstrip('\n')).
        let payload = br#"{"channel":"dcm","timestamp":"2020-01-01T00:00:00.000000","data":{"final_balance":42}}"#;
        let url = "http://example_domain/example_endpoint";
        let key = "n9QgxA1GO0bzBVontkWkWg==";
        assert_eq!(signature(key, payload, url), "RHgD4d5l4Vp43BXjIu9fi+hbvBA=");
        assert!(verify(key, payload, url, "RHgD4d5l4Vp43BXjIu9fi+hbvBA="));
        assert!(!verify(
            key,
            payload,
            "http://example_domain/example_endpoint/",
            "RHgD4d5l4Vp43BXjIu9fi+hbvBA="
        ));
        assert!(!verify(
            "other",
            payload,
            url,
            "RHgD4d5l4Vp43BXjIu9fi+hbvBA="
        ));
    }

    #[test]
    fn keys_look_like_the_spec_example() {
        let a = new_key();
        assert_eq!(a.len(), 24);
        assert!(a.ends_with("=="));
        assert_ne!(a, new_key());
    }
}
