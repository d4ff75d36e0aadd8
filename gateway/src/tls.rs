//! Certificates for QUIC and TLS-over-TCP: from configured PEM files, or a self-signed one
//! generated once into `tls_dir` and reused (units pin it), or, without a `tls_dir`, a fresh
//! one per start (tests).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, GatewayConfig};

pub use codec::handshake::ALPN;

/// The generated certificate's file in `tls_dir`.
pub(crate) const CERT_FILE: &str = "gateway-cert.pem";
/// The generated key's file in `tls_dir` (mode 0600).
pub(crate) const KEY_FILE: &str = "gateway-key.pem";

/// A certificate chain and its key.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// Writes a new self-signed certificate for `localhost` and its key (mode 0600, created
/// exclusively, so two gateways sharing the directory cannot both write one).
fn generate_into(dir: &Path, cert: &Path, key: &Path) -> Result<(), Error> {
    let tls = |what: &Path, e: std::io::Error| Error::Tls(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(dir).map_err(|e| tls(dir, e))?;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(key) {
        Ok(mut file) => {
            file.write_all(ck.signing_key.serialize_pem().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| tls(key, e))?;
            std::fs::write(cert, ck.cert.pem()).map_err(|e| tls(cert, e))?;
            tracing::info!(cert = %cert.display(), "generated the gateway's TLS certificate; units can pin it");
            Ok(())
        }
        // Another process is writing them; its pair is the one to use.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for _ in 0..50 {
                if cert.exists() {
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(Error::Tls(format!(
                "{} exists without {}: restore the pair or remove the key",
                key.display(),
                cert.display()
            )))
        }
        Err(e) => Err(tls(key, e)),
    }
}

impl Identity {
    pub(crate) fn load(config: &GatewayConfig) -> Result<Self, Error> {
        match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => Self::from_files(cert, key),
            _ if config.tls_dir.is_some() => {
                let dir = config.tls_dir.as_deref().unwrap_or(Path::new("."));
                let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
                if !cert.exists() || !key.exists() {
                    generate_into(dir, &cert, &key)?;
                }
                Self::from_files(&cert, &key)
            }
            _ => {
                let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                    .map_err(|e| Error::Tls(e.to_string()))?;
                tracing::warn!("no TLS certificate configured: using a generated self-signed one (development only)");
                Ok(Self {
                    chain: vec![ck.cert.der().clone()],
                    key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
                })
            }
        }
    }

    fn from_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
        Ok(Self { chain, key })
    }

    /// For the legacy HTTPS listener: TLS 1.3 or 1.2 (HTTP-only firmware is old), ALPN
    /// `http/1.1` (offered or not: a client without ALPN is served too).
    pub(crate) fn rustls_https(&self) -> Result<rustls::ServerConfig, Error> {
        let mut cfg = self.rustls_server(false)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    pub(crate) fn rustls_server(&self, tls13_only: bool) -> Result<rustls::ServerConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_certificate_is_kept_and_its_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let config = GatewayConfig {
            tls_dir: Some(dir.path().to_path_buf()),
            ..GatewayConfig::default()
        };
        let first = Identity::load(&config).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Identity::load(&config).unwrap();
        assert_eq!(
            first.chain, again.chain,
            "reused on restart: units can pin it"
        );
        let elsewhere = tempfile::tempdir().unwrap();
        let other = Identity::load(&GatewayConfig {
            tls_dir: Some(elsewhere.path().to_path_buf()),
            ..GatewayConfig::default()
        })
        .unwrap();
        assert_ne!(first.chain, other.chain);
        assert!(GatewayConfig::default().tcp_tls, "TLS on TCP by default");
        assert!(
            !GatewayConfig::loopback("t").tcp_tls,
            "plain only when chosen"
        );
    }

    #[test]
    fn legacy_http_is_https_exactly_when_a_certificate_is_configured_unless_chosen() {
        let plain = GatewayConfig::default();
        assert!(
            !plain.http_uses_tls(),
            "HTTP-only units in the field speak plain HTTP"
        );
        let with_cert = GatewayConfig {
            tls_cert_path: Some("cert.pem".into()),
            tls_key_path: Some("key.pem".into()),
            ..GatewayConfig::default()
        };
        assert!(with_cert.http_uses_tls());
        assert!(!GatewayConfig {
            http_tls: Some(false),
            ..with_cert
        }
        .http_uses_tls());
        assert!(GatewayConfig {
            http_tls: Some(true),
            ..plain
        }
        .http_uses_tls());
    }
}
