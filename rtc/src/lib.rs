//! The RTC contracts between the services: what the gateway needs from the rest of the
//! platform, and how the rest of the platform talks to it over the bus.
//!
//! Its own small crate so that dependencies point inward: the gateway and the control-plane
//! both depend on this crate (and on `bus` and `codec`), never on each other. The control-plane
//! implements the traits over its database; the gateway calls them; tests use the in-memory
//! implementations here.
//!
//! - [`directory`]: [`UnitDirectory`], who may connect.
//! - [`presence`]: [`PresenceSink`] (online/offline records) and [`PresenceRegistry`] (which
//!   gateway holds which unit, for MT routing).
//! - [`fallback`]: [`Fallback`], called when a unit stays unreachable (WAKEUP SMS).
//! - [`pending`]: [`PendingMt`], the record of the MT commands a unit must still get (the
//!   gateway's queues are a cache of it).
//! - [`mt`]: [`MtClient`], the MT enqueue API, and the envelopes of MT commands and of the
//!   gateway's MT outcome records.
//! - [`control`]: [`GatewayControl`], instructions every gateway reads (a unit's credentials
//!   changed: forget them, close its session).

pub mod control;
pub mod directory;
pub mod fallback;
pub mod mt;
pub mod pending;
pub mod presence;

pub use control::GatewayControl;
pub use directory::{MemoryDirectory, UnitCredentials, UnitDirectory};
pub use fallback::{Fallback, NoFallback, RecordingFallback};
pub use mt::MtClient;
pub use pending::{MemoryPendingMt, NoPendingMt, PendingCommand, PendingMt};
pub use presence::{
    MemoryPresence, NoPresenceSink, PresenceRegistry, PresenceSink, RecordingPresence, StatusReason,
};

/// Unix time in milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
