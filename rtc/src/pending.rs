//! What a unit must still get: the record of pending MT commands, which the database keeps.
//!
//! The gateway's MT queues are a cache of it. A gateway asks [`PendingMt::pending`] when a unit
//! connects (QUIC, TCP) and before it answers a legacy HTTP poll, and queues what it gets in
//! the unit's MT queue in that order, ignoring correlation ids it already holds. So a command
//! survives a crash or restart of any gateway, and the bus is not the only copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use codec::CorrelationId;

/// One MT command the unit has not answered yet, as it was first sent: same correlation id,
/// same bytes, so the unit (and the gateway's queue) recognise it as a resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    /// The MT message's correlation id (`rtc_message_history.message_reference`).
    pub correlation_id: CorrelationId,
    /// The CBOR MT message, byte for byte as recorded.
    pub message: Vec<u8>,
}

/// The record of what each unit must still get.
#[async_trait]
pub trait PendingMt: Send + Sync + 'static {
    /// The commands `imei` must still get, oldest first (the order they must reach it in).
    /// Empty when there are none, and when the record cannot be read (logged by the
    /// implementation: the unit gets them on a later connect).
    async fn pending(&self, imei: &str) -> Vec<PendingCommand>;
}

/// No record (a gateway whose MT commands live on the bus only).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPendingMt;

#[async_trait]
impl PendingMt for NoPendingMt {
    async fn pending(&self, _: &str) -> Vec<PendingCommand> {
        Vec::new()
    }
}

/// An in-memory record, for tests; clones share it.
#[derive(Debug, Default, Clone)]
pub struct MemoryPendingMt {
    map: Arc<Mutex<HashMap<String, Vec<PendingCommand>>>>,
}

impl MemoryPendingMt {
    /// Sets what `imei` must still get.
    pub fn set(&self, imei: &str, commands: Vec<PendingCommand>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(imei.to_owned(), commands);
    }
}

#[async_trait]
impl PendingMt for MemoryPendingMt {
    async fn pending(&self, imei: &str) -> Vec<PendingCommand> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(imei)
            .cloned()
            .unwrap_or_default()
    }
}
