//! The SMARTSolar RTC gateway: holds the connections of tens of thousands of units, puts what
//! they send on the bus and delivers the commands the control-plane sends them.
//!
//! # Layout
//!
//! - [`config`]: [`GatewayConfig`], the one typed configuration.
//! - [`capture`]: capture mode (what units send, to a file, for `load-test replay`).
//! - [`proto`]: per-unit protocol state without I/O (handshake, MT queue with retries, rate
//!   limit), tested with a fake clock.
//! - [`directory`]: [`UnitDirectory`], who may connect (control-plane implements it).
//! - [`presence`]: [`PresenceSink`] (online/offline records) and [`PresenceRegistry`] (which
//!   gateway holds which unit, for MT routing).
//! - [`fallback`]: [`Fallback`], called when a unit stays unreachable (WAKEUP SMS).
//! - [`mt`]: [`MtClient`], the MT enqueue API, and the gateway's MT outcome records.
//! - `server`: the running gateway: listeners, the session driver (one task per connection),
//!   MT shards, the MT consumers, graceful shutdown.
//! - `transport`: QUIC, framed TCP (optionally TLS) and legacy HTTP front ends.
//! - [`sim`]: a unit simulator speaking all three transports (tests and the load test).
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
pub mod directory;
pub mod fallback;
pub mod metrics;
pub mod mt;
pub mod presence;
pub mod proto;
mod server;
pub mod sim;
mod tls;
mod transport;

use std::future::Future;
use std::sync::Arc;

use ingest::bus::{Bus, BusError};

pub use config::GatewayConfig;
pub use directory::{MemoryDirectory, UnitCredentials, UnitDirectory};
pub use fallback::{Fallback, NoFallback, RecordingFallback};
pub use mt::MtClient;
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

/// The MT shard (of `shards`) that owns unit `imei`: FNV-1a of the IMEI, the same function the
/// bus partitions by ([`ingest::bus::memory::partition_for`]), so it is stable across processes
/// and cheap; IMEIs are already well spread.
pub fn shard_index(imei: &str, shards: usize) -> usize {
    ingest::bus::memory::partition_for(imei.as_bytes(), shards.max(1) as u32) as usize
}

/// Unix time in milliseconds.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
