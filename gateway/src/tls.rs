//! Certificates for QUIC and TLS-over-TCP: from PEM files, or self-signed for development.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, GatewayConfig};

pub use codec::handshake::ALPN;

/// A certificate chain and its key.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl Identity {
    pub(crate) fn load(config: &GatewayConfig) -> Result<Self, Error> {
        match (&config.tls_cert_path, &config.tls_key_path) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
                Ok(Self { chain, key })
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
