//! The SMARTSolar RTC gateway: holds the connections of tens of thousands of units, puts what
//! they send on the bus and delivers the commands the control-plane sends them.
//!
//! # Layout
//!
//! - [`config`]: [`GatewayConfig`], the one typed configuration.
//! - [`capture`]: capture mode (what units send, to a file, for `load-test replay`).
//! - [`proto`]: per-unit protocol state without I/O (handshake, MT queue with retries, rate
//!   limit), tested with a fake clock.
//! - [`directory`], [`presence`], [`fallback`], [`mt`], [`pending`]: the contracts with the rest
//!   of the platform (who may connect, online records and routing, WAKEUP fallback, the MT client
//!   and envelopes, the record of pending MT commands), defined in the `rtc` crate and re-exported here.
//! - `server`: the running gateway: listeners, the session driver (one task per connection),
//!   MT shards, the MT consumers, graceful shutdown.
//! - `transport`: QUIC, framed TCP (optionally TLS) and legacy HTTP front ends.
//! - [`metrics`]: metric names.
//!
//! # Running
//!
//! ```no_run
//! # async fn f(deps: gateway::Deps) -> Result<(), gateway::Error> {
//! let config = gateway::GatewayConfig::default();
//! gateway::run(config, deps, tokio::signal::ctrl_c()).await
//! # }
//! ```
//! or, to learn the bound addresses first (tests bind `127.0.0.1:0`):
//! `let gw = Gateway::bind(config, deps).await?; gw.local_addrs(); gw.run(shutdown).await`.

pub mod capture;
pub mod config;
pub mod metrics;
pub mod proto;
mod server;
mod tls;
mod transport;

// The contracts with the rest of the platform live in the `rtc` crate; re-exported so the
// gateway's own modules and its users name them in one place.
pub use rtc::{directory, fallback, mt, pending, presence};

use std::future::Future;
use std::sync::Arc;

use bus::{Bus, BusError};
pub(crate) use rtc::unix_ms;

pub use config::GatewayConfig;
pub use directory::{MemoryDirectory, UnitCredentials, UnitDirectory};
pub use fallback::{Fallback, NoFallback, RecordingFallback};
pub use mt::MtClient;
pub use pending::{MemoryPendingMt, NoPendingMt, PendingCommand, PendingMt};
pub use presence::{
    MemoryPresence, NoPresenceSink, PresenceRegistry, PresenceSink, RecordingPresence, StatusReason,
};
pub use server::{Gateway, LocalAddrs};
pub use tls::ALPN;

/// What the gateway is wired to. Everything is a trait object so the control-plane can supply
/// database-backed implementations and tests in-memory ones.
#[derive(Clone)]
pub struct Deps {
    /// The message bus (MO out, MT in, replies out).
    pub bus: Arc<dyn Bus>,
    /// Unit credentials.
    pub directory: Arc<dyn UnitDirectory>,
    /// Online/offline records.
    pub presence: Arc<dyn PresenceSink>,
    /// Which gateway holds which unit (shared by all gateways on the bus).
    pub registry: Arc<dyn PresenceRegistry>,
    /// Unreachable units.
    pub fallback: Arc<dyn Fallback>,
    /// The record of what each unit must still get, read when a unit connects or polls.
    pub pending: Arc<dyn PendingMt>,
}

/// Gateway failures (start-up only: once running, per-connection errors close that
/// connection and are counted, never returned).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("gateway configuration: {0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate or key problems.
    #[error("TLS: {0}")]
    Tls(String),
    /// The bus refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// Binds the configured listeners and runs until `shutdown` resolves, then drains: stops
/// accepting, stops taking MT commands, lets sessions finish what they read, hands undelivered
/// MT commands back to the bus for another gateway, and returns.
pub async fn run(
    config: GatewayConfig,
    deps: Deps,
    shutdown: impl Future + Send,
) -> Result<(), Error> {
    Gateway::bind(config, deps).await?.run(shutdown).await;
    Ok(())
}

/// Where the gateway keeps the certificate it generates when none is configured and its
/// `tls_dir` is `dir` (`serve` uses the data directory): units, and the demo fleet, pin it.
pub fn generated_certificate_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(tls::CERT_FILE)
}

/// The MT shard (of `shards`) that owns unit `imei`: FNV-1a of the IMEI, the same function the
/// bus partitions by ([`bus::partition_for`]), so it is stable across processes and cheap; IMEIs
/// are already well spread.
pub fn shard_index(imei: &str, shards: usize) -> usize {
    bus::partition_for(imei.as_bytes(), shards.max(1) as u32) as usize
}
