//! The gateway's one typed configuration (a section of the `smartsolar` config file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bus::Topics;
use serde::Deserialize;

use crate::proto::mt::MtPolicy;

pub use rtc::mt::node_topic;

/// Everything the gateway needs to know; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// This process's id in the presence registry and its MT topic (`<mt>.node.<id>`):
    /// letters, digits, `-` and `_`.
    pub node_id: String,
    /// QUIC (UDP) listen address; `None` disables QUIC.
    pub quic_listen: Option<SocketAddr>,
    /// Receive and send buffer (bytes) asked for the QUIC UDP socket. The kernel default
    /// (~208 KiB) holds ~90 datagrams: a connect storm's Initials overflow it, and each loss
    /// costs a unit a handshake retransmission timeout that doubles on every further loss.
    /// Linux caps it at `net.core.rmem_max`/`wmem_max` (the effective size is logged).
    pub quic_socket_buffer: usize,
    /// Framed TCP listen address; `None` disables it.
    pub tcp_listen: Option<SocketAddr>,
    /// Legacy HTTP listen address (`/rm_data`, `/rc_data`); `None` disables it.
    pub http_listen: Option<SocketAddr>,
    /// Serve legacy HTTP over TLS (HTTPS, as protocol §6 says). Unset (the default): HTTPS
    /// exactly when a certificate is configured (`tls_cert_path`), since units verify a name
    /// and a chain there; plain HTTP otherwise, which is what HTTP-only units in the field
    /// speak today. `true` with no certificate configured uses the generated one in `tls_dir`.
    pub http_tls: Option<bool>,
    /// Certificate chain and key (PEM) for QUIC and TLS-over-TCP. Without them the
    /// certificate kept in `tls_dir` is used (generated there on first start).
    pub tls_cert_path: Option<PathBuf>,
    /// See `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// Where the generated certificate is kept when no `tls_cert_path`/`tls_key_path` is
    /// configured: `gateway-cert.pem` and `gateway-key.pem` (mode 0600), created on first start
    /// and reused on every restart, so units can pin it. The binary sets it to its data
    /// directory. Unset: a fresh self-signed certificate per start (tests only).
    pub tls_dir: Option<PathBuf>,
    /// Wrap the TCP listener in TLS (default). Plain TCP carries MT frames, payment commands
    /// included, without integrity protection: switch it off only on a network you trust, or in
    /// tests and the load test (`SMARTSOLAR_GATEWAY_TCP_TLS=false`).
    pub tcp_tls: bool,
    /// The private-APN network (`rtc_network_name`, e.g. `Aeris`) the QUIC and TCP listeners
    /// face: units are then looked up by source address first.
    pub ip_network: Option<String>,
    /// Largest frame payload accepted (bytes).
    pub max_frame: usize,
    /// Hello to welcome, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// A session that receives nothing (not even a keepalive) for this long is closed with
    /// reason `inactivity`.
    pub idle_timeout_ms: u64,
    /// A frame write that takes longer than this closes the session (slow unit).
    pub write_timeout_ms: u64,
    /// Connections held at once (all transports); more are refused.
    pub max_connections: usize,
    /// Outbound frames buffered per session; a unit that lets it fill is disconnected.
    pub session_queue: usize,
    /// Per-connection MO rate (messages per second); faster units are paced.
    pub rate_per_sec: f64,
    /// Per-connection burst allowance (messages).
    pub rate_burst: u32,
    /// MT shards (0: one per core).
    pub shards: usize,
    /// Messages buffered per shard.
    pub shard_queue: usize,
    /// MT retry policy.
    pub mt: MtSettings,
    /// Bus topic names.
    pub topics: Topics,
    /// On shutdown, how long sessions get to finish in-flight work.
    pub shutdown_grace_ms: u64,
    /// Capture mode: append every MO message units send to this file (JSON lines, see
    /// `docs/operations.md`), for `load-test replay`. Off (`None`) by default.
    pub capture_path: Option<PathBuf>,
}

/// MT delivery settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtSettings {
    /// Wait for the first reply (later waits double).
    pub ack_timeout_ms: u64,
    /// Longest wait between attempts.
    pub backoff_max_ms: u64,
    /// Attempts before the fallback (WAKEUP SMS) is called.
    pub max_attempts: u32,
    /// Commands queued per unit.
    pub queue_capacity: usize,
    /// A command not answered this long after the API created it expires.
    pub ttl_ms: u64,
}

impl Default for MtSettings {
    fn default() -> Self {
        Self {
            ack_timeout_ms: 10_000,
            backoff_max_ms: 300_000,
            max_attempts: 5,
            queue_capacity: 64,
            ttl_ms: 24 * 3600 * 1000,
        }
    }
}

impl MtSettings {
    /// As the pure policy.
    pub const fn policy(&self) -> MtPolicy {
        MtPolicy {
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            max_attempts: self.max_attempts,
            queue_capacity: self.queue_capacity,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            node_id: "gw1".into(),
            quic_listen: Some(([0, 0, 0, 0], 4433).into()),
            quic_socket_buffer: 8 << 20,
            tcp_listen: Some(([0, 0, 0, 0], 4434).into()),
            http_listen: Some(([0, 0, 0, 0], 8089).into()),
            http_tls: None,
            tls_cert_path: None,
            tls_key_path: None,
            tls_dir: None,
            tcp_tls: true,
            ip_network: None,
            max_frame: codec::frame::DEFAULT_MAX_FRAME,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 15 * 60 * 1000,
            write_timeout_ms: 10_000,
            max_connections: 100_000,
            session_queue: 16,
            rate_per_sec: 20.0,
            rate_burst: 100,
            shards: 0,
            shard_queue: 4096,
            mt: MtSettings::default(),
            topics: Topics::default(),
            shutdown_grace_ms: 10_000,
            capture_path: None,
        }
    }
}

impl GatewayConfig {
    /// Listeners on 127.0.0.1 with OS-chosen ports, for tests.
    pub fn loopback(node_id: &str) -> Self {
        let any = Some(([127, 0, 0, 1], 0).into());
        Self {
            node_id: node_id.into(),
            quic_listen: any,
            tcp_listen: any,
            http_listen: any,
            // Tests and the load test speak plain framed TCP, by this explicit choice.
            tcp_tls: false,
            ..Self::default()
        }
    }

    /// The topic carrying MT commands to this node: `<mt>.node.<node_id>`.
    pub fn node_topic(&self) -> String {
        node_topic(&self.topics, &self.node_id)
    }

    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let ok = !self.node_id.is_empty()
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(crate::Error::Config(format!(
                "node_id {:?}: use letters, digits, '-' and '_'",
                self.node_id
            )));
        }
        if self.tls_cert_path.is_some() != self.tls_key_path.is_some() {
            return Err(crate::Error::Config(
                "tls_cert_path and tls_key_path go together".into(),
            ));
        }
        Ok(())
    }

    /// Whether the legacy HTTP listener speaks TLS (see `http_tls`).
    pub fn http_uses_tls(&self) -> bool {
        self.http_tls.unwrap_or(self.tls_cert_path.is_some())
    }

    pub(crate) const fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(crate) const fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub(crate) const fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}
