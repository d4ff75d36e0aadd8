//! [`ControlPlaneSink`]: the ingest engine's MO messages applied to the database.
//!
//! # Layout
//! - this module: the sink, what every MO step shares (its transaction, its claim, telemetry
//!   points) and the dispatch of `MoSink` to one module per MO type family;
//! - [`status`]: status reports (the unit's state, a pending energy limit confirmed);
//! - [`cell`]: cell reports (a `connection` row, the position, [`CellLocator`]);
//! - [`balance`]: DCM balances and final balances;
//! - [`reply`]: MT replies and command responses (`rtc_message_history` of the MT answered);
//! - [`history`]: the `rtc_mo_message_history` row every MO gets.

mod balance;
mod cell;
mod history;
mod reply;
mod status;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use codec::mo::{CellReport, CommandResponse, EventLog, FinalBalance, MtReply, StatusReport};
use ingest::sink::{Balance, MoContext, MoHistory, MoSink, SinkError};
use ingest::tsdb::{FieldValue, Point, TELEMETRY};

use super::{claim_step, datetime_ms, db_sink_error, first_applied_ms};
use crate::app::AppState;
use crate::db::{Priority, Tx};

pub(super) use cell::valid_position;
pub use cell::{CellLocator, Location, NoCellLocator};
pub use history::METRIC_MO_DUPLICATES;

/// The ingest engine's sink over the control-plane database (see the module
/// documentation of [`crate::rtc`] and `docs/decisions.md`, "RTC glue").
///
/// | MO | effect |
/// |---|---|
/// | status report | `actions::unit::apply_unit_report` (enable, tamper, software), a pending `energy_limit` the unit now runs becomes active, `latest_rtc_mo_status_report_time` |
/// | balance (status report, MT reply) | DCM units: `dcm::record_balance` and a `balance` field in `telemetry` |
/// | cell report | a `connection` row, the product's `latest_connection_id` (and `latest_connection_location_id` when located) |
/// | MT reply | `rtc_message_history.delivery_status`; a payment-commands MT the unit applied acknowledges its commands (`dcm::acknowledge`) |
/// | command response | the output in `rtc_message_history.delivery_status_info` |
/// | final balance | `dcm::record_final_balance` |
/// | every MO | an `rtc_mo_message_history` row (`record_mo_history`) |
///
/// Unknown units, unknown commands and refused values are permanent failures (the
/// engine dead-letters the MO); an unreachable database is transient (retried).
pub struct ControlPlaneSink {
    state: AppState,
    locator: Arc<dyn CellLocator>,
}

impl ControlPlaneSink {
    /// A sink over `state` (database, time-series store) with [`NoCellLocator`].
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            locator: Arc::new(NoCellLocator),
        }
    }

    /// Uses `locator` for cell reports without coordinates.
    pub fn with_locator(mut self, locator: Arc<dyn CellLocator>) -> Self {
        self.locator = locator;
        self
    }

    /// Writes points derived from a message to the time-series store.
    async fn write_points(&self, points: &[Point]) -> Result<(), SinkError> {
        if points.is_empty() {
            return Ok(());
        }
        self.state.timeseries.write(points).await.map_err(|e| {
            if e.is_transient() {
                SinkError::Transient(e.to_string())
            } else {
                SinkError::Permanent(e.to_string())
            }
        })
    }

    /// Opens the transaction of a step of MO `ctx`, at `priority` on the SQLite writer: the
    /// answers to operators' commands (MT replies, command responses) are
    /// [`Priority::Interactive`], since someone waits for them; the rest of ingest is
    /// [`Priority::Background`], so an MO burst does not hold up the API's writes.
    async fn open<'a>(
        &self,
        ctx: &'a MoContext<'a>,
        priority: Priority,
    ) -> Result<Step<'a>, SinkError> {
        Ok(Step {
            tx: self
                .state
                .db
                .begin_with(priority)
                .await
                .map_err(db_sink_error)?,
            ctx,
            at: datetime_ms(ctx.received_at_ms),
        })
    }

    /// Opens the transaction of step `name` of MO `ctx` (as [`Self::open`]) and claims it:
    /// `None` when the step was applied before.
    async fn open_claimed<'a>(
        &self,
        ctx: &'a MoContext<'a>,
        name: &str,
        priority: Priority,
    ) -> Result<Option<Step<'a>>, SinkError> {
        let mut step = self.open(ctx, priority).await?;
        Ok(step.claim(name).await?.then_some(step))
    }
}

/// A step of an MO being applied: its transaction, the MO, and the MO's receipt time (the
/// time of everything the step writes).
struct Step<'a> {
    tx: Tx,
    ctx: &'a MoContext<'a>,
    at: NaiveDateTime,
}

impl Step<'_> {
    /// Claims step `name` of the MO in the transaction (see [`claim_step`]): `false` when it
    /// was applied before (a bus redelivery, or a version-2 unit's resend), so nothing is
    /// applied twice.
    async fn claim(&mut self, name: &str) -> Result<bool, SinkError> {
        claim_step(
            &mut self.tx,
            self.ctx.correlation_id,
            name,
            self.ctx.imei,
            self.ctx.mo_number,
            self.at,
        )
        .await
        .map_err(db_sink_error)
    }

    /// When step `name`, applied before, was first received: a point written again for a
    /// resend goes at that time, so it overwrites the first one instead of adding a second.
    /// `None` when its dedupe row was pruned (a resend recognised by the unit's pruned mark,
    /// or a prune that ran since the claim): the first application, days ago, wrote the
    /// point, and a point at this receipt's time would be a second one.
    async fn first_receipt_ms(mut self, name: &str) -> Result<Option<i64>, SinkError> {
        first_applied_ms(&mut self.tx, self.ctx.correlation_id, name)
            .await
            .map_err(db_sink_error)
    }

    async fn commit(self) -> Result<(), SinkError> {
        commit(self.tx).await
    }
}

async fn commit(tx: Tx) -> Result<(), SinkError> {
    tx.commit().await.map_err(db_sink_error)
}

/// A `telemetry` point of the unit with one integer field, at `time_ms`.
fn telemetry_point(ctx: &MoContext<'_>, field: &str, value: i64, time_ms: i64) -> Point {
    Point {
        measurement: TELEMETRY.into(),
        imei: ctx.imei.to_owned(),
        tags: Default::default(),
        fields: vec![(field.into(), FieldValue::Int(value))],
        time_ns: time_ms.saturating_mul(1_000_000),
    }
}

/// Each MO type goes to the module of its family.
#[async_trait]
impl MoSink for ControlPlaneSink {
    async fn status_report(
        &self,
        ctx: &MoContext<'_>,
        r: &StatusReport<'_>,
    ) -> Result<(), SinkError> {
        self.apply_status_report(self.open(ctx, Priority::Background).await?, r)
            .await
    }

    async fn cell_report(&self, ctx: &MoContext<'_>, r: &CellReport<'_>) -> Result<(), SinkError> {
        // Resolved before the transaction: a locator may be slow.
        let location = self.locate(ctx, r).await;
        match self
            .open_claimed(ctx, "cell_report", Priority::Background)
            .await?
        {
            Some(step) => self.apply_cell_report(step, r, location).await,
            None => Ok(()),
        }
    }

    async fn event_log(&self, _ctx: &MoContext<'_>, _log: &EventLog<'_>) -> Result<(), SinkError> {
        // Recorded by `record_mo_history` like every MO.
        Ok(())
    }

    async fn balance(&self, ctx: &MoContext<'_>, balance: &Balance) -> Result<(), SinkError> {
        self.apply_balance(self.open(ctx, Priority::Background).await?, balance)
            .await
    }

    async fn final_balance(
        &self,
        ctx: &MoContext<'_>,
        fb: &FinalBalance<'_>,
    ) -> Result<(), SinkError> {
        match self
            .open_claimed(ctx, "final_balance", Priority::Background)
            .await?
        {
            Some(step) => self.apply_final_balance(step, fb).await,
            None => Ok(()),
        }
    }

    async fn mt_reply(&self, ctx: &MoContext<'_>, reply: &MtReply<'_>) -> Result<(), SinkError> {
        match self
            .open_claimed(ctx, "mt_reply", Priority::Interactive)
            .await?
        {
            Some(step) => self.apply_mt_reply(step, reply).await,
            None => Ok(()),
        }
    }

    async fn command_response(
        &self,
        ctx: &MoContext<'_>,
        r: &CommandResponse<'_>,
    ) -> Result<(), SinkError> {
        match self
            .open_claimed(ctx, "command_response", Priority::Interactive)
            .await?
        {
            Some(step) => self.apply_command_response(step, r).await,
            None => Ok(()),
        }
    }

    // `offline_notice`: the trait's no-op. The gateway writes the offline record
    // (`PresenceDb`) with the unit's reason.

    async fn record_mo_history(&self, entries: &[MoHistory<'_>]) -> Result<(), SinkError> {
        self.insert_mo_history(entries).await
    }
}
