//! Subscribers' secret keys at rest: AES-256-GCM under a server key.
//!
//! The stored form is `v1:` + base64(nonce ‖ ciphertext ‖ tag) with a fresh
//! random 96-bit nonce per key. The AES key is SHA-256 of the configured
//! `webhook_secret_key`; without one, a development key derived from a
//! fixed public label is used, and a warning says so (once per process).
//! Neither the server key nor a subscriber key is ever logged.

use std::sync::Once;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::ControlPlaneConfig;

const PREFIX: &str = "v1:";
const DEVELOPMENT_LABEL: &str = "smartsolar-insecure-development-webhook-key";
static WARN_DEVELOPMENT_KEY: Once = Once::new();

/// Why a stored key could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not in the `v1:` format, or not valid base64.
    #[error("stored webhook key is malformed")]
    Malformed,
    /// Authentication failed: a different server key, or tampering.
    #[error("stored webhook key cannot be decrypted with the configured webhook_secret_key")]
    Undecryptable,
}

/// Encrypts and decrypts subscriber keys.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// The box for the configured server key (see the module docs).
    pub fn from_config(config: &ControlPlaneConfig) -> Self {
        let material = match &config.webhook_secret_key {
            Some(key) => key.expose().to_string(),
            None => {
                WARN_DEVELOPMENT_KEY.call_once(|| {
                    tracing::warn!(
                        "webhook_secret_key is not set (SMARTSOLAR_WEBHOOK_SECRET_KEY): subscriber \
                         keys are encrypted with a development key derived from a public label; \
                         set a random key in production"
                    );
                });
                DEVELOPMENT_LABEL.to_string()
            }
        };
        Self::from_material(&material)
    }

    fn from_material(material: &str) -> Self {
        let key = Sha256::digest(material.as_bytes());
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// The stored form of a subscriber key.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("AES-GCM encryption of a short key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// The subscriber key from its stored form.
    pub fn open(&self, stored: &str) -> Result<String, SecretError> {
        let data = stored
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|d| d.len() > 12)
            .ok_or(SecretError::Malformed)?;
        let (nonce, sealed) = data.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_fail_closed() {
        let a = SecretBox::from_material("server key a");
        let b = SecretBox::from_material("server key b");
        let sealed = a.seal("n9QgxA1GO0bzBVontkWkWg==");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("n9QgxA1GO0bzBVontkWkWg=="));
        assert_ne!(sealed, a.seal("n9QgxA1GO0bzBVontkWkWg=="), "fresh nonce");
        assert_eq!(a.open(&sealed).unwrap(), "n9QgxA1GO0bzBVontkWkWg==");
        assert!(matches!(b.open(&sealed), Err(SecretError::Undecryptable)));
        assert!(matches!(a.open("plain"), Err(SecretError::Malformed)));
        assert!(format!("{a:?}").contains("***"));
    }
}
