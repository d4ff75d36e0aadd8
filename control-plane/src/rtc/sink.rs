//! [`ControlPlaneSink`]: the ingest engine's MO messages applied to the database.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::NaiveDateTime;
use codec::mo::{
    CellReport, CommandResponse, EventLog, FinalBalance, MtReply, ReplyResult, StatusReport,
};
use codec::{CorrelationId, MtMessage};
use ingest::sink::{Balance, MoContext, MoHistory, MoSink, SinkError};
use ingest::tsdb::{FieldValue, Point, TELEMETRY};
use sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr, Value};

use super::{
    api_sink_error, claim_step, datetime_ms, db_sink_error, dcm_sink_error, first_applied_ms,
    RTC_USER,
};
use crate::actions::unit::{apply_unit_report, UnitReport, UNIT_USER};
use crate::app::AppState;
use crate::catalogue::{Column, ColumnType};
use crate::db::Tx;
use crate::dcm::{self, Category};
use crate::rows::{col, eq, insert, update, RowExt};

/// Longest command output kept in `delivery_status_info`.
const MAX_OUTPUT: usize = 4000;
/// Counter: MO messages whose `rtc_mo_message_history` row already existed (their correlation
/// id was seen before: a bus redelivery or a version-2 unit's resend), so nothing was applied
/// twice.
pub const METRIC_MO_DUPLICATES: &str = "smartsolar_rtc_mo_duplicates_total";

/// Rows per `rtc_mo_message_history` insert statement (9 values each; SQLite binds
/// at most 32 766 parameters).
const HISTORY_CHUNK: usize = 500;

/// A resolved position of a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// Metres.
    pub error_radius: Option<u32>,
    /// A postal address, when the resolver knows one.
    pub address: Option<String>,
}

/// Resolves a unit's position from the cells it sees (a cell-location service).
/// Called before the database transaction, so it may be slow.
#[async_trait]
pub trait CellLocator: Send + Sync + 'static {
    /// The position for `report`, or `None` when the cells are unknown.
    async fn locate(&self, imei: &str, report: &CellReport<'_>) -> Option<Location>;
}

/// Resolves nothing: reports without coordinates of their own get
/// `location_failed_flag` set.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCellLocator;

#[async_trait]
impl CellLocator for NoCellLocator {
    async fn locate(&self, _: &str, _: &CellReport<'_>) -> Option<Location> {
        None
    }
}

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

    async fn begin(&self) -> Result<Tx, SinkError> {
        self.state.db.begin().await.map_err(db_sink_error)
    }
}

async fn commit(tx: Tx) -> Result<(), SinkError> {
    tx.commit().await.map_err(db_sink_error)
}

/// A time a unit sent, when plausible (after 2001 and at most a day ahead of its
/// receipt); else the time the gateway received it.
pub(crate) fn unit_time(sent: Option<u64>, received: NaiveDateTime) -> NaiveDateTime {
    sent.and_then(|s| i64::try_from(s).ok())
        .filter(|s| *s > 978_307_200)
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.naive_utc())
        .filter(|t| *t <= received + chrono::Duration::days(1))
        .unwrap_or(received)
}

/// The `tamper_triggered` telemetry point of a status report that says, at `time_ms` (the
/// first receipt of the report: see `first_applied_ms`).
fn tamper_point(ctx: &MoContext<'_>, r: &StatusReport<'_>, time_ms: i64) -> Vec<Point> {
    r.tamper_triggered
        .map(|tripped| Point {
            measurement: TELEMETRY.into(),
            imei: ctx.imei.to_owned(),
            tags: Default::default(),
            fields: vec![(
                crate::alerts::rules::TAMPER_TRIGGERED.into(),
                FieldValue::Int(i64::from(tripped)),
            )],
            time_ns: time_ms.saturating_mul(1_000_000),
        })
        .into_iter()
        .collect()
}

/// What a status report says about the unit, for `apply_unit_report`.
pub(crate) fn unit_report(r: &StatusReport<'_>) -> UnitReport {
    UnitReport {
        enable_flag: r.enabled,
        tamper_flag: r.tamper_enabled,
        software: r
            .software_version
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned),
    }
}

pub(super) fn valid_position(lat: f64, lon: f64) -> bool {
    lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
}

/// The position a report carries itself (unless the unit says locating failed).
pub(crate) fn reported_location(r: &CellReport<'_>) -> Option<Location> {
    if r.location_failed == Some(true) {
        return None;
    }
    match (r.latitude, r.longitude) {
        (Some(lat), Some(lon)) if valid_position(lat, lon) => Some(Location {
            latitude: lat,
            longitude: lon,
            error_radius: r.error_radius,
            address: None,
        }),
        _ => None,
    }
}

/// `connection.latitude`/`longitude` are strings of at most 12 characters.
fn degrees(v: f64) -> String {
    format!("{v:.6}")
}

/// The `connection` row of a cell report.
pub(crate) fn connection_values(
    imei: &str,
    r: &CellReport<'_>,
    location: Option<&Location>,
    date: NaiveDateTime,
) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = vec![
        ("product_imei".into(), imei.into()),
        ("location_failed_flag".into(), location.is_none().into()),
        ("date".into(), date.into()),
        ("mcc".into(), r.mcc.map(i64::from).into()),
        ("mnc".into(), r.mnc.map(i64::from).into()),
        ("frequency".into(), r.frequency.map(i64::from).into()),
        (
            "timing_advance".into(),
            r.timing_advance.map(i64::from).into(),
        ),
        ("country_code".into(), r.country_code.map(i64::from).into()),
    ];
    for (i, cell) in r.cells.iter().take(codec::mo::MAX_CELLS).enumerate() {
        let n = i + 1;
        v.push((format!("cell_{n}_lac"), i64::from(cell.lac).into()));
        v.push((format!("cell_{n}_cid"), i64::from(cell.cid).into()));
        v.push((format!("cell_{n}_signal"), i64::from(cell.signal).into()));
        v.push((format!("cell_{n}_mcc"), cell.mcc.map(i64::from).into()));
        v.push((format!("cell_{n}_mnc"), cell.mnc.map(i64::from).into()));
    }
    if let Some(l) = location {
        v.push(("latitude".into(), degrees(l.latitude).into()));
        v.push(("longitude".into(), degrees(l.longitude).into()));
        v.push(("error_radius".into(), l.error_radius.map(i64::from).into()));
        v.push(("address".into(), l.address.clone().into()));
    }
    v
}

/// `delivery_status_info` of a reply: its own text, else the result's name.
pub(crate) fn reply_info(reply: &MtReply<'_>) -> String {
    match reply.info {
        Some(i) if !i.is_empty() => i.to_owned(),
        _ => match reply.result {
            ReplyResult::Ok => "ok".into(),
            ReplyResult::Rejected => "rejected by the unit".into(),
            ReplyResult::Unsupported => "unsupported by the unit".into(),
            ReplyResult::Invalid => "invalid for the unit".into(),
            ReplyResult::Busy => "unit busy".into(),
            ReplyResult::Other(c) => format!("result {c}"),
        },
    }
}

/// A reply the gateway wrote itself (expiry, queue full, handed to an HTTP unit), not
/// the unit's confirmation.
pub(crate) fn gateway_written(reply: &MtReply<'_>) -> bool {
    reply.info.is_some_and(|i| i.starts_with("gateway:"))
}

/// The delivery status to store: `delivered` is final (a later gateway expiry or a
/// duplicate failure does not undo what the unit confirmed); a late confirmation
/// turns `failed` into `delivered`.
pub(crate) fn next_delivery_status(
    current: Option<&str>,
    reported: &'static str,
) -> Option<&'static str> {
    match (current, reported) {
        (Some("delivered"), _) => None,
        (_, s) => Some(s),
    }
}

/// An MT's `rtc_message_history` row, found by its correlation id.
struct MtRow {
    id: i64,
    message: Option<Vec<u8>>,
    delivery_status: Option<String>,
}

async fn mt_row(tx: &mut Tx, imei: &str, id: CorrelationId) -> Result<Option<MtRow>, SinkError> {
    let stmt = Query::select()
        .columns(["rtc_message_history_id", "message_bin", "delivery_status"].map(Alias::new))
        .from(Alias::new("rtc_message_history"))
        .and_where(Expr::col(Alias::new("message_reference")).eq(id.to_string()))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .order_by(Alias::new("rtc_message_history_id"), sea_query::Order::Desc)
        .limit(1)
        .to_owned();
    let cols = [
        col("rtc_message_history_id", ColumnType::Int),
        col("message_bin", ColumnType::String),
        col("delivery_status", ColumnType::String),
    ];
    let refs: Vec<&Column> = cols.iter().collect();
    let row = tx
        .fetch_optional(&stmt, &refs)
        .await
        .map_err(db_sink_error)?;
    Ok(row.map(|r| MtRow {
        id: r.int("rtc_message_history_id").unwrap_or_default(),
        message: r
            .text("message_bin")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()),
        delivery_status: r.text("delivery_status").map(str::to_owned),
    }))
}

/// A reply or command response whose MT is not in `rtc_message_history`: permanent at
/// once. `mt::send` commits the row before it enqueues the MT, so the row cannot be
/// "not there yet"; retrying would only hold every other unit of the engine shard
/// behind this one (issue 16). The dead letter can be replayed.
fn unmatched(ctx: &MoContext<'_>, id: CorrelationId) -> SinkError {
    SinkError::Permanent(format!(
        "no MT with correlation id {id} for unit {}",
        ctx.imei
    ))
}

/// A payment command of this unit by its transaction id: `(id, category)`.
async fn command_by_transaction(
    tx: &mut Tx,
    imei: &str,
    transaction_id: &str,
) -> Result<Option<(i64, Option<Category>)>, SinkError> {
    let stmt = Query::select()
        .columns(["payment_command_id", "category"].map(Alias::new))
        .from(Alias::new("payment_command"))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .and_where(Expr::col(Alias::new("transaction_id")).eq(transaction_id))
        .to_owned();
    let cols = [
        col("payment_command_id", ColumnType::Int),
        col("category", ColumnType::String),
    ];
    let refs: Vec<&Column> = cols.iter().collect();
    let row = tx
        .fetch_optional(&stmt, &refs)
        .await
        .map_err(db_sink_error)?;
    Ok(row.and_then(|r| {
        Some((
            r.int("payment_command_id")?,
            r.text("category").and_then(Category::parse),
        ))
    }))
}

/// Confirms a pending `energy_limit` parameter the unit reports it now runs (within
/// 0.01): it becomes active, the previously active one is removed.
async fn confirm_energy_limit(
    tx: &mut Tx,
    imei: &str,
    reported: f64,
    at: NaiveDateTime,
) -> Result<bool, SinkError> {
    let Some(p) = crate::actions::latest_product_parameter(tx, imei, "energy_limit", "pending")
        .await
        .map_err(db_sink_error)?
    else {
        return Ok(false);
    };
    let matches = p
        .text("value")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .is_some_and(|v| (v - reported).abs() < 0.01);
    if !matches {
        return Ok(false);
    }
    let (Some(id), Some(type_id)) = (p.int("product_parameter_id"), p.int("parameter_type_id"))
    else {
        return Ok(false);
    };
    update(
        tx,
        "product_parameter",
        vec![("status", "removed".into()), ("date_removed", at.into())],
        eq("product_imei", imei)
            .and(eq("parameter_type_id", type_id))
            .and(eq("status", "active")),
        UNIT_USER,
        at,
    )
    .await
    .map_err(api_sink_error)?;
    update(
        tx,
        "product_parameter",
        vec![("status", "active".into()), ("date_added", at.into())],
        eq("product_parameter_id", id),
        UNIT_USER,
        at,
    )
    .await
    .map_err(api_sink_error)?;
    Ok(true)
}

#[async_trait]
impl MoSink for ControlPlaneSink {
    async fn status_report(
        &self,
        ctx: &MoContext<'_>,
        report: &StatusReport<'_>,
    ) -> Result<(), SinkError> {
        let at = datetime_ms(ctx.received_at_ms);
        let mut tx = self.begin().await?;
        if !claim_step(&mut tx, ctx.correlation_id, "status_report", ctx.imei, at)
            .await
            .map_err(db_sink_error)?
        {
            // Applied before (a redelivery, or a v2 unit's resend with a later receipt
            // time); the point may not have been written then. At the first receipt's time,
            // so a resend overwrites it instead of adding a second one.
            let first = first_applied_ms(&mut tx, ctx.correlation_id, "status_report")
                .await
                .map_err(db_sink_error)?
                .unwrap_or(ctx.received_at_ms);
            drop(tx);
            return self.write_points(&tamper_point(ctx, report, first)).await;
        }
        let outcome = apply_unit_report(&mut tx, ctx.imei, &unit_report(report), at)
            .await
            .map_err(api_sink_error)?;
        if let Some(limit) = report.energy_limit.filter(|l| l.is_finite()) {
            confirm_energy_limit(&mut tx, ctx.imei, limit, at).await?;
        }
        update(
            &mut tx,
            "product",
            vec![("latest_rtc_mo_status_report_time", at.into())],
            eq("product_imei", ctx.imei).and(
                Expr::col(Alias::new("latest_rtc_mo_status_report_time"))
                    .is_null()
                    .or(Expr::col(Alias::new("latest_rtc_mo_status_report_time")).lt(at)),
            ),
            UNIT_USER,
            at,
        )
        .await
        .map_err(api_sink_error)?;
        commit(tx).await?;
        if outcome != Default::default() {
            tracing::info!(imei = ctx.imei, ?outcome, "unit report applied");
        }
        // The tamper alert rule reads trips from the time series (the
        // product row keeps only whether the switch is enabled). After the
        // commit, and idempotent on redelivery like the balance point.
        self.write_points(&tamper_point(ctx, report, ctx.received_at_ms))
            .await
    }

    async fn cell_report(
        &self,
        ctx: &MoContext<'_>,
        report: &CellReport<'_>,
    ) -> Result<(), SinkError> {
        let at = datetime_ms(ctx.received_at_ms);
        let location = match reported_location(report) {
            Some(l) => Some(l),
            None => self
                .locator
                .locate(ctx.imei, report)
                .await
                .filter(|l| valid_position(l.latitude, l.longitude)),
        };
        let mut tx = self.begin().await?;
        if !claim_step(&mut tx, ctx.correlation_id, "cell_report", ctx.imei, at)
            .await
            .map_err(db_sink_error)?
        {
            return Ok(());
        }
        crate::actions::lock_product(&mut tx, &crate::query::Visibility::Global, ctx.imei)
            .await
            .map_err(api_sink_error)?;
        let values = connection_values(
            ctx.imei,
            report,
            location.as_ref(),
            unit_time(report.time, at),
        );
        let row = insert(
            &mut tx,
            "connection",
            values
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
            UNIT_USER,
            at,
        )
        .await
        .map_err(api_sink_error)?;
        let id = row.int("connection_id").unwrap_or_default();
        let mut product = vec![("latest_connection_id", id.into())];
        if location.is_some() {
            product.push(("latest_connection_location_id", id.into()));
        }
        update(
            &mut tx,
            "product",
            product,
            eq("product_imei", ctx.imei),
            UNIT_USER,
            at,
        )
        .await
        .map_err(api_sink_error)?;
        commit(tx).await
    }

    async fn event_log(&self, _ctx: &MoContext<'_>, _log: &EventLog<'_>) -> Result<(), SinkError> {
        // Recorded by `record_mo_history` like every MO.
        Ok(())
    }

    async fn balance(&self, ctx: &MoContext<'_>, balance: &Balance) -> Result<(), SinkError> {
        let at = datetime_ms(ctx.received_at_ms);
        let mut tx = self.begin().await?;
        let dcm_unit = dcm::lock_product(
            &mut tx,
            &self.state.catalogue,
            ctx.imei,
            &crate::query::Visibility::Global,
        )
        .await
        .map_err(dcm_sink_error)?;
        if !dcm_unit {
            tracing::debug!(
                imei = ctx.imei,
                "balance from a unit that is not DCM enabled; ignored"
            );
            return Ok(());
        }
        let mut point_ms = ctx.received_at_ms;
        if claim_step(&mut tx, ctx.correlation_id, "balance", ctx.imei, at)
            .await
            .map_err(db_sink_error)?
        {
            dcm::record_balance(
                &mut tx,
                &self.state.catalogue,
                ctx.imei,
                balance.balance,
                UNIT_USER,
                at,
            )
            .await
            .map_err(dcm_sink_error)?;
            commit(tx).await?;
        } else {
            // A redelivery or a v2 resend: the point goes at the first receipt's time.
            point_ms = first_applied_ms(&mut tx, ctx.correlation_id, "balance")
                .await
                .map_err(db_sink_error)?
                .unwrap_or(point_ms);
            drop(tx);
        }
        // After the commit, and again on a redelivery: the store overwrites the same
        // field at the same time, so this is idempotent too.
        let point = Point {
            measurement: TELEMETRY.into(),
            imei: ctx.imei.to_owned(),
            tags: Default::default(),
            fields: vec![("balance".into(), FieldValue::Int(balance.balance))],
            time_ns: point_ms.saturating_mul(1_000_000),
        };
        self.write_points(&[point]).await
    }

    async fn final_balance(
        &self,
        ctx: &MoContext<'_>,
        fb: &FinalBalance<'_>,
    ) -> Result<(), SinkError> {
        let at = datetime_ms(ctx.received_at_ms);
        let mut tx = self.begin().await?;
        if !claim_step(&mut tx, ctx.correlation_id, "final_balance", ctx.imei, at)
            .await
            .map_err(db_sink_error)?
        {
            return Ok(());
        }
        let Some((id, category)) =
            command_by_transaction(&mut tx, ctx.imei, fb.transaction_id).await?
        else {
            return Err(SinkError::Permanent(format!(
                "final balance for unknown transaction_id '{}' of unit {}",
                fb.transaction_id, ctx.imei
            )));
        };
        if category == Some(Category::ForceReset) {
            // A force-reset travels to the unit as a zero-command; its answer was
            // already given by the force-reset endpoint (no second refund).
            tracing::info!(
                imei = ctx.imei,
                payment_command_id = id,
                final_balance = fb.final_balance,
                "final balance of a force-reset recorded as processed only"
            );
            return commit(tx).await;
        }
        let outcome = dcm::record_final_balance(
            &mut tx,
            &self.state.catalogue,
            ctx.imei,
            id,
            fb.final_balance,
            UNIT_USER,
            at,
        )
        .await
        .map_err(dcm_sink_error)?;
        commit(tx).await?;
        // The final balance confirms the zero-command, unless its payment-commands reply
        // already did.
        dcm::count_events("acknowledged", u64::from(outcome.acknowledged));
        dcm::count_events("voided", outcome.voided);
        tracing::info!(
            imei = ctx.imei,
            zero_command_id = id,
            created = outcome.created,
            "final balance recorded"
        );
        Ok(())
    }

    async fn mt_reply(&self, ctx: &MoContext<'_>, reply: &MtReply<'_>) -> Result<(), SinkError> {
        let at = datetime_ms(ctx.received_at_ms);
        let mut tx = self.begin().await?;
        if !claim_step(&mut tx, ctx.correlation_id, "mt_reply", ctx.imei, at)
            .await
            .map_err(db_sink_error)?
        {
            return Ok(());
        }
        let Some(row) = mt_row(&mut tx, ctx.imei, reply.correlation_id).await? else {
            return Err(unmatched(ctx, reply.correlation_id));
        };
        let reported = reply.result.delivery_status();
        if let Some(status) = next_delivery_status(row.delivery_status.as_deref(), reported) {
            update(
                &mut tx,
                "rtc_message_history",
                vec![
                    ("delivery_status", status.into()),
                    ("delivery_status_time", at.into()),
                    ("delivery_status_info", reply_info(reply).into()),
                ],
                eq("rtc_message_history_id", row.id),
                RTC_USER,
                at,
            )
            .await
            .map_err(api_sink_error)?;
        }
        // Off the record of what the unit must still get: the unit answered (a busy unit
        // gets it again), or a status update was handed to a legacy HTTP unit, which cannot
        // answer. Payment commands handed over HTTP stay until a unit confirms them.
        let decoded = row
            .message
            .as_deref()
            .and_then(|m| codec::decode_mt(m).ok());
        let answered = if gateway_written(reply) {
            reply.result == ReplyResult::Ok
                && !matches!(decoded, Some(MtMessage::PaymentCommands(_)))
        } else {
            reply.result != ReplyResult::Busy
        };
        if answered {
            super::pending::settle(&mut tx, row.id)
                .await
                .map_err(db_sink_error)?;
        }
        // The unit confirmed a payment-commands MT: its commands are acknowledged.
        let mut acknowledged = 0;
        if reply.result == ReplyResult::Ok && !gateway_written(reply) {
            if let Some(MtMessage::PaymentCommands(p)) = &decoded {
                for c in p.commands.iter() {
                    match command_by_transaction(&mut tx, ctx.imei, c.transaction_id).await? {
                        Some((id, _)) => {
                            let done = dcm::acknowledge(
                                &mut tx,
                                &self.state.catalogue,
                                ctx.imei,
                                id,
                                None,
                                UNIT_USER,
                                at,
                            )
                            .await
                            .map_err(dcm_sink_error)?;
                            // A repeated reply confirms nothing new.
                            acknowledged += u64::from(done.newly);
                        }
                        None => tracing::error!(
                            imei = ctx.imei,
                            transaction_id = c.transaction_id,
                            "acknowledged payment command not in the ledger"
                        ),
                    }
                }
            }
        }
        commit(tx).await?;
        dcm::count_events("acknowledged", acknowledged);
        Ok(())
    }

    async fn command_response(
        &self,
        ctx: &MoContext<'_>,
        response: &CommandResponse<'_>,
    ) -> Result<(), SinkError> {
        let at = datetime_ms(ctx.received_at_ms);
        let mut tx = self.begin().await?;
        if !claim_step(
            &mut tx,
            ctx.correlation_id,
            "command_response",
            ctx.imei,
            at,
        )
        .await
        .map_err(db_sink_error)?
        {
            return Ok(());
        }
        let Some(row) = mt_row(&mut tx, ctx.imei, response.correlation_id).await? else {
            return Err(unmatched(ctx, response.correlation_id));
        };
        let mut info = match response.status {
            Some(s) if s != 0 => format!("output (status {s}): {}", response.output),
            _ => format!("output: {}", response.output),
        };
        if info.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !info.is_char_boundary(cut) {
                cut -= 1;
            }
            info.truncate(cut);
        }
        update(
            &mut tx,
            "rtc_message_history",
            vec![("delivery_status_info", info.into())],
            eq("rtc_message_history_id", row.id),
            RTC_USER,
            at,
        )
        .await
        .map_err(api_sink_error)?;
        commit(tx).await
    }

    // `offline_notice`: the trait's no-op. The gateway writes the offline record
    // (`PresenceDb`) with the unit's reason.

    async fn record_mo_history(&self, entries: &[MoHistory<'_>]) -> Result<(), SinkError> {
        if entries.is_empty() {
            return Ok(());
        }
        // Only rows of known units (the foreign key would refuse the whole batch).
        let imeis: BTreeSet<&str> = entries.iter().map(|e| e.ctx.imei).collect();
        let stmt = Query::select()
            .column(Alias::new("product_imei"))
            .from(Alias::new("product"))
            .and_where(Expr::col(Alias::new("product_imei")).is_in(imeis.iter().copied()))
            .to_owned();
        let pk = col("product_imei", ColumnType::String);
        let known: BTreeSet<String> = self
            .state
            .db
            .fetch_all(&stmt, &[&pk])
            .await
            .map_err(db_sink_error)?
            .iter()
            .filter_map(|r| r.text("product_imei").map(str::to_owned))
            .collect();
        let now = self.state.clock.now();
        let rows: Vec<Vec<SimpleExpr>> = entries
            .iter()
            .filter(|e| {
                let ok = known.contains(e.ctx.imei);
                if !ok {
                    tracing::warn!(imei = e.ctx.imei, correlation_id = %e.ctx.correlation_id, "MO history of an unknown unit not recorded");
                }
                ok
            })
            .map(|e| history_values(e, now))
            .collect();
        let offered = rows.len() as u64;
        let mut inserted = 0u64;
        let mut tx = self.begin().await?;
        for chunk in rows.chunks(HISTORY_CHUNK) {
            let mut stmt = Query::insert();
            stmt.into_table(Alias::new("rtc_mo_message_history"))
                .columns(
                    [
                        "product_imei",
                        "correlation_id",
                        "message_bin",
                        "message_json",
                        "message_received_time",
                        "processing_status",
                        "processing_status_info",
                        "created_at",
                        "created_by",
                    ]
                    .map(Alias::new),
                );
            for r in chunk {
                stmt.values_panic(r.clone());
            }
            stmt.on_conflict(
                OnConflict::column(Alias::new("correlation_id"))
                    .do_nothing()
                    .to_owned(),
            );
            inserted += tx.execute(&stmt).await.map_err(db_sink_error)?;
        }
        commit(tx).await?;
        // A row that was already there is an MO seen before: a bus redelivery, or a v2
        // unit's resend (same derived correlation id, protocol §8.5), dropped here.
        metrics::counter!(METRIC_MO_DUPLICATES).increment(offered.saturating_sub(inserted));
        Ok(())
    }
}

/// The values of one `rtc_mo_message_history` row: the CBOR in base64 (as in the MO
/// queue envelope) and in diagnostic notation.
pub(crate) fn history_values(e: &MoHistory<'_>, now: NaiveDateTime) -> Vec<SimpleExpr> {
    let json =
        codec::render_cbor(e.ctx.message).unwrap_or_else(|err| format!("undecodable: {err}"));
    vec![
        e.ctx.imei.into(),
        e.ctx.correlation_id.to_string().into(),
        base64::engine::general_purpose::STANDARD
            .encode(e.ctx.message)
            .into(),
        json.into(),
        datetime_ms(e.ctx.received_at_ms).into(),
        e.status.as_str().into(),
        e.info.clone().into(),
        now.into(),
        RTC_USER.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::mo::Cell;
    use codec::Seq;

    fn t(s: &str) -> NaiveDateTime {
        crate::values::parse_datetime(s).unwrap()
    }

    #[test]
    fn a_status_report_maps_to_a_unit_report() {
        let r = StatusReport {
            enabled: Some(true),
            tamper_enabled: Some(false),
            software_version: Some("3.6a"),
            ..Default::default()
        };
        assert_eq!(
            unit_report(&r),
            UnitReport {
                enable_flag: Some(true),
                tamper_flag: Some(false),
                software: Some("3.6a".into())
            }
        );
        let empty = StatusReport {
            software_version: Some(" "),
            ..Default::default()
        };
        assert_eq!(unit_report(&empty), UnitReport::default());
    }

    #[test]
    fn unit_times_must_be_plausible() {
        let received = t("2024-05-01T10:00:00");
        assert_eq!(unit_time(None, received), received);
        assert_eq!(unit_time(Some(5), received), received); // unit clock not set
        assert_eq!(
            unit_time(Some(1_714_550_000), received),
            t("2024-05-01T07:53:20")
        );
        // Two days in the future: the unit's clock is wrong.
        assert_eq!(unit_time(Some(1_714_730_000), received), received);
    }

    #[test]
    fn a_cell_report_maps_to_a_connection_row() {
        let cells = [
            Cell {
                lac: 1,
                cid: 2,
                signal: -71,
                mcc: None,
                mnc: None,
            },
            Cell {
                lac: 3,
                cid: 4,
                signal: -90,
                mcc: Some(639),
                mnc: Some(7),
            },
        ];
        let r = CellReport {
            mcc: Some(639),
            mnc: Some(2),
            cells: Seq::new(&cells),
            latitude: Some(-1.292_066_123),
            longitude: Some(36.821_945),
            error_radius: Some(150),
            ..Default::default()
        };
        let loc = reported_location(&r).unwrap();
        let v = connection_values("013777946874001", &r, Some(&loc), t("2024-05-01T10:00:00"));
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("location_failed_flag"), Some(false.into()));
        assert_eq!(get("cell_1_signal"), Some((-71i64).into()));
        assert_eq!(get("cell_1_mcc"), Some(Option::<i64>::None.into()));
        assert_eq!(get("cell_2_mnc"), Some(Some(7i64).into()));
        assert_eq!(get("cell_3_lac"), None);
        assert_eq!(get("latitude"), Some("-1.292066".into()));
        assert_eq!(get("longitude"), Some("36.821945".into()));
        assert_eq!(get("error_radius"), Some(Some(150i64).into()));

        // No coordinates (or the unit says locating failed): the flag is set.
        let failed = CellReport {
            location_failed: Some(true),
            ..r
        };
        assert!(reported_location(&failed).is_none());
        let v = connection_values("1", &failed, None, t("2024-05-01T10:00:00"));
        assert!(v
            .iter()
            .any(|(n, v)| n == "location_failed_flag" && *v == true.into()));
        assert!(!v.iter().any(|(n, _)| n == "latitude"));
        // Impossible coordinates are no location.
        let bad = CellReport {
            latitude: Some(123.0),
            ..r
        };
        assert!(reported_location(&bad).is_none());
        assert!(degrees(-179.123_456_789).len() <= 12);
    }

    #[test]
    fn replies_map_to_delivery_status() {
        let ok = MtReply {
            correlation_id: CorrelationId([1; 16]),
            result: ReplyResult::Ok,
            info: None,
            balance: None,
            expected_expiry: None,
        };
        assert_eq!(reply_info(&ok), "ok");
        assert!(!gateway_written(&ok));
        let expired = MtReply {
            result: ReplyResult::Other(64),
            info: Some("gateway: expired"),
            ..ok
        };
        assert!(gateway_written(&expired));
        assert_eq!(reply_info(&expired), "gateway: expired");
        assert_eq!(next_delivery_status(None, "delivered"), Some("delivered"));
        assert_eq!(
            next_delivery_status(Some("failed"), "delivered"),
            Some("delivered")
        );
        assert_eq!(next_delivery_status(Some("delivered"), "failed"), None);
        assert_eq!(next_delivery_status(None, "failed"), Some("failed"));
    }
}
