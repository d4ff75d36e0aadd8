//! Certificates for QUIC and TLS-over-TCP: from PEM files, or self-signed for development.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, GatewayConfig};

/// ALPN protocol id of the unit protocol on QUIC and TLS.
pub const ALPN: &[u8] = b"smartsolar-rtc/1";

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
        let provider = Arc::new(chacha_first_provider());
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
        // Our order, not the client's: ChaCha20-Poly1305 whenever the unit offers it.
        cfg.ignore_client_order = true;
        Ok(cfg)
    }
}

/// *ring*'s cipher suites with ChaCha20-Poly1305 first (AES-GCM stays for units without it,
/// and QUIC's Initial packets always use AES-128-GCM).
///
/// Why: a connection holds its packet keys for its whole life, four of them (both directions,
/// current and next key phase) plus two header-protection keys. An AES-GCM key in *ring* is
/// its expanded key schedule and GHASH table, about 0.6 KB; a ChaCha20 key is its 32 bytes. For
/// tens of thousands of idle units that is about 2.5 KB each (docs/decisions.md). Units are
/// small cellular modems, often without AES instructions, where ChaCha20 is also the faster
/// cipher; the gateway's cost per ~100-byte frame is about the same either way.
fn chacha_first_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    let chacha = |s: &rustls::SupportedCipherSuite| {
        matches!(
            s.suite(),
            S::TLS13_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    };
    // Stable: within each group the provider's own order stays.
    provider.cipher_suites.sort_by_key(|s| !chacha(s));
    provider
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full TLS 1.3 handshake in memory between `client` and the gateway's server config;
    /// returns the suite the server chose.
    fn negotiate(client_suites: &[rustls::CipherSuite]) -> rustls::CipherSuite {
        let identity = Identity::load(&GatewayConfig::loopback("t")).unwrap();
        let server_cfg = Arc::new(identity.rustls_server(true).unwrap());
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .retain(|s| client_suites.contains(&s.suite()));
        // The client's preference is the order given.
        provider.cipher_suites.sort_by_key(|s| {
            client_suites
                .iter()
                .position(|c| *c == s.suite())
                .unwrap_or(usize::MAX)
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let mut client_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_cfg.alpn_protocols = vec![ALPN.to_vec()];
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_cfg), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(server_cfg).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking(), "handshake completes");
        server.negotiated_cipher_suite().unwrap().suite()
    }

    #[test]
    fn the_gateway_picks_chacha20_when_offered_and_aes_otherwise() {
        use rustls::CipherSuite as S;
        // The client prefers AES; the gateway's order wins.
        assert_eq!(
            negotiate(&[
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_CHACHA20_POLY1305_SHA256
            ]),
            S::TLS13_CHACHA20_POLY1305_SHA256
        );
        // A unit without ChaCha20 still connects.
        assert_eq!(
            negotiate(&[S::TLS13_AES_128_GCM_SHA256]),
            S::TLS13_AES_128_GCM_SHA256
        );
    }
}
