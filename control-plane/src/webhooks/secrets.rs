//! Subscribers' secret keys at rest: AES-256-GCM under a server key.
//!
//! The stored form is `v1:` + base64(nonce ‖ ciphertext ‖ tag) with a fresh
//! random 96-bit nonce per key. The AES key is SHA-256 of the configured
//! `webhook_secret_key`. The `smartsolar` binary never runs without one:
//! when none is configured it generates a random key on first start into
//! `<data_dir>/webhook-secret.key` (mode 0600) and reads it from then on
//! ([`load_or_create_key`]). Only a library user that configures nothing
//! (in-process tests) falls back to a development key derived from a fixed
//! public label, with a warning (once per process).
//! Neither the server key nor a subscriber key is ever logged.

use std::io::Write as _;
use std::path::Path;

use std::sync::Once;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::{ControlPlaneConfig, Secret};

/// The file under the data directory that holds the generated server key.
pub const KEY_FILE: &str = "webhook-secret.key";

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

/// The server key stored in `dir/`[`KEY_FILE`], created with 32 random
/// bytes (hex) and mode 0600 when it does not exist yet. An empty or
/// unreadable file is an error: silently replacing it would make every
/// stored subscriber key undecryptable.
pub fn load_or_create_key(dir: &Path) -> std::io::Result<Secret> {
    let path = dir.join(KEY_FILE);
    let read = |path: &Path| -> std::io::Result<Secret> {
        let text = std::fs::read_to_string(path)?;
        let key = text.trim();
        if key.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is empty; restore it or set SMARTSOLAR_WEBHOOK_SECRET_KEY",
                    path.display()
                ),
            ));
        }
        Ok(Secret::new(key))
    };
    match read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    std::fs::create_dir_all(dir)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(key.as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated the webhook secret key (set SMARTSOLAR_WEBHOOK_SECRET_KEY to share one between nodes)");
            Ok(Secret::new(key))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e),
    }
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
    fn the_generated_key_is_private_random_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(dir.path()).unwrap();
        assert_eq!(first.expose().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = load_or_create_key(dir.path()).unwrap();
        assert_eq!(first.expose(), again.expose(), "reused on restart");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create_key(other.path()).unwrap().expose(),
            first.expose()
        );
        std::fs::write(dir.path().join(KEY_FILE), "\n").unwrap();
        assert!(
            load_or_create_key(dir.path()).is_err(),
            "never silently replaced"
        );
    }

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
