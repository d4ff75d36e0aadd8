//! Online status and the presence registry.
//!
//! Two different consumers of "which unit is connected":
//! - [`PresenceSink`]: the *record* (control-plane: `rtc_connection_history` rows and the
//!   product's `latest_rtc_*` fields). Called in order per unit; may be slow.
//! - [`PresenceRegistry`]: the *routing table* shared by all gateway processes: IMEI → node id
//!   of the gateway holding the unit's session. Read on the MT path, so it must be fast (Redis,
//!   or a table with an index); [`MemoryPresence`] shares it between gateways in one process.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dashmap::DashMap;

use codec::Transport;

/// `rtc_connection_history.connection_status_reason`, spelled as the spec lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusReason {
    /// Set by hand (`/products/<imei>/rtc_online_status`); never chosen by the gateway.
    UserRequest,
    /// The connection ended without the unit saying why (closed, reset, replaced, shutdown).
    Unknown,
    /// The unit said its battery is low (offline notice).
    LowBatteryVoltage,
    /// The unit sent nothing for longer than the idle timeout.
    Inactivity,
    /// The unit said it goes to sleep (offline notice).
    SleepMode,
    /// The unit connected and was admitted (online).
    MessageReceived,
}

impl StatusReason {
    /// The spec's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserRequest => "user-request",
            Self::Unknown => "unknown",
            Self::LowBatteryVoltage => "low-battery-voltage",
            Self::Inactivity => "inactivity",
            Self::SleepMode => "sleep-mode",
            Self::MessageReceived => "message-received",
        }
    }

    /// From a unit's offline notice.
    pub const fn from_offline(reason: codec::mo::OfflineReason) -> Self {
        match reason {
            codec::mo::OfflineReason::LowBatteryVoltage => Self::LowBatteryVoltage,
            codec::mo::OfflineReason::SleepMode => Self::SleepMode,
            codec::mo::OfflineReason::Unknown => Self::Unknown,
        }
    }
}

/// Receives a unit's online/offline transitions, in order per unit.
#[async_trait]
pub trait PresenceSink: Send + Sync + 'static {
    /// The unit was admitted on `transport` (`connection_status` online, reason
    /// `message-received`). `at_ms` is unix milliseconds.
    async fn connected(&self, imei: &str, transport: Transport, at_ms: i64);

    /// The unit's session ended (`connection_status` offline) with `reason`, and `info` for
    /// `connection_status_info`.
    async fn disconnected(
        &self,
        imei: &str,
        reason: StatusReason,
        info: Option<String>,
        at_ms: i64,
    );
}

/// Ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPresenceSink;

#[async_trait]
impl PresenceSink for NoPresenceSink {
    async fn connected(&self, _: &str, _: Transport, _: i64) {}
    async fn disconnected(&self, _: &str, _: StatusReason, _: Option<String>, _: i64) {}
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// [`PresenceSink::connected`].
    Online(String, Transport),
    /// [`PresenceSink::disconnected`].
    Offline(String, StatusReason, Option<String>),
}

/// Records transitions, for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingPresence {
    events: Arc<Mutex<Vec<PresenceEvent>>>,
}

impl RecordingPresence {
    /// Transitions so far.
    pub fn events(&self) -> Vec<PresenceEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl PresenceSink for RecordingPresence {
    async fn connected(&self, imei: &str, transport: Transport, _: i64) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PresenceEvent::Online(imei.to_owned(), transport));
    }

    async fn disconnected(&self, imei: &str, reason: StatusReason, info: Option<String>, _: i64) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PresenceEvent::Offline(imei.to_owned(), reason, info));
    }
}

/// IMEI → node holding the unit, shared by every gateway on one bus.
#[async_trait]
pub trait PresenceRegistry: Send + Sync + 'static {
    /// `node` now holds `imei` (overwrites: the newest connection wins).
    async fn claim(&self, imei: &str, node: &str);

    /// `node` no longer holds `imei`: removes the entry only if it still names `node`, so a
    /// unit that already reconnected elsewhere is not erased by the old node's late release.
    async fn release(&self, imei: &str, node: &str);

    /// The node holding `imei`, if any.
    async fn lookup(&self, imei: &str) -> Option<String>;
}

/// An in-process registry; clones share the map.
#[derive(Debug, Default, Clone)]
pub struct MemoryPresence {
    map: Arc<DashMap<String, String>>,
}

impl MemoryPresence {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[async_trait]
impl PresenceRegistry for MemoryPresence {
    async fn claim(&self, imei: &str, node: &str) {
        self.map.insert(imei.to_owned(), node.to_owned());
    }

    async fn release(&self, imei: &str, node: &str) {
        self.map.remove_if(imei, |_, v| v == node);
    }

    async fn lookup(&self, imei: &str) -> Option<String> {
        self.map.get(imei).map(|v| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn release_only_by_the_holder() {
        let r = MemoryPresence::new();
        r.claim("1", "a").await;
        r.claim("1", "b").await; // reconnected elsewhere
        r.release("1", "a").await; // the old node's late release
        assert_eq!(r.lookup("1").await.as_deref(), Some("b"));
        r.release("1", "b").await;
        assert_eq!(r.lookup("1").await, None);
    }

    #[test]
    fn reasons_are_spelled_as_in_the_spec() {
        let all = [
            StatusReason::UserRequest,
            StatusReason::Unknown,
            StatusReason::LowBatteryVoltage,
            StatusReason::Inactivity,
            StatusReason::SleepMode,
            StatusReason::MessageReceived,
        ];
        let names: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "user-request",
                "unknown",
                "low-battery-voltage",
                "inactivity",
                "sleep-mode",
                "message-received"
            ]
        );
    }
}
