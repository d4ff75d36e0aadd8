//! Where the ingest engine hands every MO message that is not telemetry.
//!
//! The control-plane implements [`MoSink`] (product state, `connection`,
//! `balance`, the DCM flow, `rtc_message_history`, `rtc_mo_message_history`).
//! Messages are passed decoded and borrowed (zero-copy from the bus payload).
//! Calls for one unit come in that unit's MO order; calls for different units
//! run concurrently (one engine shard each). Delivery is at least once: a
//! message may be handed over again after a crash or rebalance, so
//! implementations are idempotent (the correlation id identifies an MO).

use std::sync::Mutex;

use async_trait::async_trait;
use codec::ack::MoNumber;
use codec::envelope::Transport;
use codec::mo::{
    CellReport, CommandResponse, EventLog, FinalBalance, MtReply, OfflineNotice, StatusReport,
};
use codec::{CorrelationId, MoType};

/// What is known about an MO besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoContext<'a> {
    /// The unit.
    pub imei: &'a str,
    /// Assigned by the gateway on receipt; identifies this MO.
    pub correlation_id: CorrelationId,
    /// When the gateway received it, unix milliseconds.
    pub received_at_ms: i64,
    /// How it travelled.
    pub transport: Transport,
    /// `<network>/<ip>` for IP-identified units.
    pub ident: Option<&'a str>,
    /// The message type.
    pub message_type: MoType,
    /// The CBOR message as received (`rtc_mo_message_history.message_bin`;
    /// `codec::render_cbor` gives `message_json`).
    pub message: &'a [u8],
    /// A version-2 MO's `(boot, seq)` (protocol §8), from the bus envelope; `None` for
    /// version-1 and HTTP units and replayed dead letters.
    pub mo_number: Option<MoNumber>,
}

/// A unit's DCM balance, from a status report (keys 7, 8) or an MT reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// Seconds of credit left.
    pub balance: i64,
    /// Expected expiry, unix seconds.
    pub expected_expiry: Option<u64>,
}

/// `rtc_mo_message_history.processing_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingStatus {
    /// `"processed"`.
    Processed,
    /// `"failed"`.
    Failed,
}

impl ProcessingStatus {
    /// The spec's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Failed => "failed",
        }
    }
}

/// One `rtc_mo_message_history` row to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoHistory<'a> {
    /// The MO.
    pub ctx: MoContext<'a>,
    /// Whether it was applied.
    pub status: ProcessingStatus,
    /// Why it failed (`processing_status_info`).
    pub info: Option<String>,
}

/// Why a sink call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying (database busy or down): the engine retries with
    /// backoff and does not commit the message meanwhile.
    #[error("transient: {0}")]
    Transient(String),
    /// The message cannot be applied (unknown unit, invalid state): the
    /// engine dead-letters it with this reason.
    #[error("{0}")]
    Permanent(String),
}

/// Receiver of the MO messages that are not telemetry. Every method has a
/// default that accepts and ignores, so an implementation overrides what it
/// handles.
#[async_trait]
pub trait MoSink: Send + Sync + 'static {
    /// Type 1. (A balance in it also comes through [`MoSink::balance`].)
    async fn status_report(
        &self,
        _ctx: &MoContext<'_>,
        _report: &StatusReport<'_>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// Type 3: the `connection` row and the location.
    async fn cell_report(
        &self,
        _ctx: &MoContext<'_>,
        _report: &CellReport<'_>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// Type 4.
    async fn event_log(&self, _ctx: &MoContext<'_>, _log: &EventLog<'_>) -> Result<(), SinkError> {
        Ok(())
    }

    /// A DCM balance (from a status report or an MT reply): the `balance` table.
    async fn balance(&self, _ctx: &MoContext<'_>, _balance: &Balance) -> Result<(), SinkError> {
        Ok(())
    }

    /// Type 7: through the DCM flow (`final_balance`).
    async fn final_balance(
        &self,
        _ctx: &MoContext<'_>,
        _final_balance: &FinalBalance<'_>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// Type 5: `rtc_message_history.delivery_status` of the MT it answers.
    async fn mt_reply(&self, _ctx: &MoContext<'_>, _reply: &MtReply<'_>) -> Result<(), SinkError> {
        Ok(())
    }

    /// Type 6.
    async fn command_response(
        &self,
        _ctx: &MoContext<'_>,
        _response: &CommandResponse<'_>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// Type 8.
    async fn offline_notice(
        &self,
        _ctx: &MoContext<'_>,
        _notice: &OfflineNotice<'_>,
    ) -> Result<(), SinkError> {
        Ok(())
    }

    /// `rtc_mo_message_history` rows for a batch of MOs (every MO that
    /// could be decoded, telemetry included, processed or failed).
    async fn record_mo_history(&self, _entries: &[MoHistory<'_>]) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that accepts everything and records what it was given, for tests
/// (the engine's and the callers').
#[derive(Debug, Default)]
pub struct RecordingSink {
    calls: Mutex<Vec<SinkCall>>,
    failures: Mutex<Vec<(&'static str, SinkError)>>,
}

/// One recorded call: method, unit, correlation id and a rendering of the
/// argument (`Debug`), or the history row's status and info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkCall {
    /// `status_report`, `cell_report`, ..., `record_mo_history`.
    pub method: &'static str,
    /// The unit.
    pub imei: String,
    /// The MO's correlation id.
    pub correlation_id: CorrelationId,
    /// `Debug` of the argument; for history rows `processed`/`failed: <info>`.
    pub detail: String,
}

impl RecordingSink {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn calls(&self) -> Vec<SinkCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Recorded calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<SinkCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Makes the next call of `method` fail with `error` (queued, one per call).
    pub fn fail_next(&self, method: &'static str, error: SinkError) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((method, error));
    }

    fn record(
        &self,
        method: &'static str,
        ctx: &MoContext<'_>,
        detail: String,
    ) -> Result<(), SinkError> {
        {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = f.iter().position(|(m, _)| *m == method) {
                return Err(f.remove(i).1);
            }
        }
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SinkCall {
                method,
                imei: ctx.imei.to_owned(),
                correlation_id: ctx.correlation_id,
                detail,
            });
        Ok(())
    }
}

#[async_trait]
impl MoSink for RecordingSink {
    async fn status_report(
        &self,
        ctx: &MoContext<'_>,
        r: &StatusReport<'_>,
    ) -> Result<(), SinkError> {
        self.record("status_report", ctx, format!("{r:?}"))
    }
    async fn cell_report(&self, ctx: &MoContext<'_>, r: &CellReport<'_>) -> Result<(), SinkError> {
        self.record("cell_report", ctx, format!("{r:?}"))
    }
    async fn event_log(&self, ctx: &MoContext<'_>, l: &EventLog<'_>) -> Result<(), SinkError> {
        self.record("event_log", ctx, format!("{l:?}"))
    }
    async fn balance(&self, ctx: &MoContext<'_>, b: &Balance) -> Result<(), SinkError> {
        self.record("balance", ctx, format!("{b:?}"))
    }
    async fn final_balance(
        &self,
        ctx: &MoContext<'_>,
        f: &FinalBalance<'_>,
    ) -> Result<(), SinkError> {
        self.record("final_balance", ctx, format!("{f:?}"))
    }
    async fn mt_reply(&self, ctx: &MoContext<'_>, r: &MtReply<'_>) -> Result<(), SinkError> {
        self.record("mt_reply", ctx, format!("{r:?}"))
    }
    async fn command_response(
        &self,
        ctx: &MoContext<'_>,
        r: &CommandResponse<'_>,
    ) -> Result<(), SinkError> {
        self.record("command_response", ctx, format!("{r:?}"))
    }
    async fn offline_notice(
        &self,
        ctx: &MoContext<'_>,
        n: &OfflineNotice<'_>,
    ) -> Result<(), SinkError> {
        self.record("offline_notice", ctx, format!("{n:?}"))
    }
    async fn record_mo_history(&self, entries: &[MoHistory<'_>]) -> Result<(), SinkError> {
        {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = f.iter().position(|(m, _)| *m == "record_mo_history") {
                return Err(f.remove(i).1);
            }
        }
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries {
            calls.push(SinkCall {
                method: "record_mo_history",
                imei: e.ctx.imei.to_owned(),
                correlation_id: e.ctx.correlation_id,
                detail: match &e.info {
                    Some(i) => format!("{}: {i}", e.status.as_str()),
                    None => e.status.as_str().to_owned(),
                },
            });
        }
        Ok(())
    }
}
