//! What happens when a unit stays unreachable: the control-plane sends a WAKEUP SMS and records
//! `rtc_fallback_message_history`; `force_connection` for non-RTC units uses the same path.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use codec::CorrelationId;

/// Called once per MT command whose retries ran out without the unit answering. The command
/// stays queued until it expires, so a unit that connects after the SMS still receives it.
#[async_trait]
pub trait Fallback: Send + Sync + 'static {
    /// `imei` has not answered `correlation_id` after `attempts` attempts.
    async fn unreachable(&self, imei: &str, correlation_id: CorrelationId, attempts: u32);
}

/// Does nothing (a gateway without an SMS path).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFallback;

#[async_trait]
impl Fallback for NoFallback {
    async fn unreachable(&self, _: &str, _: CorrelationId, _: u32) {}
}

/// Records calls, for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingFallback {
    calls: Arc<Mutex<Vec<(String, CorrelationId)>>>,
}

impl RecordingFallback {
    /// Calls so far.
    pub fn calls(&self) -> Vec<(String, CorrelationId)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Fallback for RecordingFallback {
    async fn unreachable(&self, imei: &str, correlation_id: CorrelationId, _: u32) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((imei.to_owned(), correlation_id));
    }
}
