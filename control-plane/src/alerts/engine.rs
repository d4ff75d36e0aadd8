//! One analysis pass, with its I/O: claim buckets, read what the rules need
//! for the units of those buckets, run the due (unit, alert type) pairs,
//! and commit each unit's results (history rows, alerts, notifications) in
//! one transaction that re-checks the bucket lease.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use futures_util::StreamExt;

use chrono::{Duration, NaiveDateTime};
use sea_query::{Expr, Func, OnConflict, Query, SimpleExpr};

use super::lease;
use super::rules::{
    self, Action, AlertState, Credit, RuleKind, TelemetryStats, UnitSnapshot, Verdict,
};
use super::AlertError;
use crate::actions::alert::publish;
use crate::app::AppState;
use crate::catalogue::{Column, ColumnType};
use crate::config::AlertsConfig;
use crate::db::{Db, Row, Tx};
use crate::rows::{self, a, col, RowExt};
use ingest::tsdb::{FieldValue, Fields, Query as TsQuery, TELEMETRY};

/// `created_by` of the rows the engine writes.
pub const ENGINE_USER: &str = "alert-engine";
/// `dismissed_by` of alerts the engine clears.
pub const SYSTEM_USER: &str = "system";
/// `alert_type.status` of alert types the system dismisses once their
/// condition clears (any other status: only users dismiss).
pub const STATUS_AUTO_CLEAR: &str = "auto_clear";

async fn fetch(
    db: &Db,
    stmt: &sea_query::SelectStatement,
    cols: &[Column],
) -> Result<Vec<Row>, AlertError> {
    Ok(db.fetch_all(stmt, &cols.iter().collect::<Vec<_>>()).await?)
}

/// Whether an `alert_type.status` says the system dismisses the type's
/// alerts once their condition clears; spelt as loosely as a rule name.
fn clears_automatically(status: &str) -> bool {
    rules::canonical(status) == STATUS_AUTO_CLEAR
}

/// The spec stores `analysis_frequency` and `cooling_off_period` as
/// `datetime`; they are read as the offset from the Unix epoch
/// (`1970-01-01T01:00:00` = one hour). See docs/decisions.md.
pub fn interval(at: NaiveDateTime) -> Duration {
    at - chrono::DateTime::UNIX_EPOCH.naive_utc()
}

/// An active alert type as the engine uses it.
#[derive(Debug, Clone)]
pub struct AlertType {
    pub id: i64,
    pub name: String,
    /// `None`: no rule has this name (each run records a failure).
    pub kind: Option<RuleKind>,
    pub frequency: Duration,
    pub cooling_off: Option<Duration>,
    pub clears_automatically: bool,
}

/// The linker tables: which alert types may be raised where.
#[derive(Debug, Default)]
struct Eligibility {
    product_types: HashSet<(i64, i64)>,
    state_types: HashSet<(i64, i64)>,
    anti_entities: HashSet<(i64, i64)>,
}

impl Eligibility {
    fn allows(&self, t: &AlertType, p: &Product) -> bool {
        let (Some(pt), Some(st)) = (p.product_type, p.state_type) else {
            return false;
        };
        self.product_types.contains(&(t.id, pt))
            && self.state_types.contains(&(t.id, st))
            && !p
                .entities
                .iter()
                .any(|e| self.anti_entities.contains(&(t.id, *e)))
    }
}

/// One unit, as read at the start of a pass.
#[derive(Debug, Clone)]
struct Product {
    imei: String,
    bucket: u32,
    product_type: Option<i64>,
    state_type: Option<i64>,
    entities: Vec<i64>,
    snapshot: UnitSnapshot,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The buckets this engine held.
    pub buckets: Vec<u32>,
    /// Units with at least one analysis committed.
    pub units_analysed: u64,
    /// Analyses committed (one `analysis_history` row each).
    pub analyses: u64,
    /// Of those, runs that failed.
    pub failures: u64,
    pub raised: u64,
    pub cleared: u64,
    /// Units skipped because their bucket's lease was lost mid-pass.
    pub lost_units: u64,
}

impl PassReport {
    /// Counts one unit's result (and records its metrics).
    fn absorb(&mut self, unit: UnitResult) {
        let outcomes = match unit {
            UnitResult::Committed(outcomes) => outcomes,
            UnitResult::LeaseLost => {
                self.lost_units += 1;
                return;
            }
            UnitResult::Failed => return,
        };
        self.units_analysed += 1;
        for o in &outcomes {
            self.analyses += 1;
            self.failures += u64::from(!o.success);
            let rule = o.kind.map_or("unknown", RuleKind::as_str);
            let status = if o.success { "success" } else { "failure" };
            metrics::counter!(super::ANALYSES, "rule" => rule, "outcome" => status).increment(1);
            match o.action {
                Action::Raise(_) => {
                    self.raised += 1;
                    metrics::counter!(super::RAISED, "rule" => rule).increment(1);
                }
                Action::Clear(_) => {
                    self.cleared += 1;
                    metrics::counter!(super::CLEARED, "rule" => rule).increment(1);
                }
                Action::Keep => {}
            }
        }
    }
}

/// What became of one unit in a pass.
enum UnitResult {
    /// Its outcomes were committed.
    Committed(Vec<Outcome>),
    /// Its bucket's lease was lost: nothing written.
    LeaseLost,
    /// The commit failed (logged): retried at the next pass.
    Failed,
}

/// Units analysed per chunk: telemetry read for the chunk, then each unit committed.
const CHUNK: usize = 256;
/// Telemetry reads in flight at once.
const TELEMETRY_READS_IN_FLIGHT: usize = 16;

/// One (unit, alert type) analysis, before it is committed.
struct Outcome {
    alert_type_id: i64,
    kind: Option<RuleKind>,
    success: bool,
    action: Action,
}

/// The alert analysis engine of one process.
pub struct AlertEngine {
    state: AppState,
    config: AlertsConfig,
    worker: String,
}

impl AlertEngine {
    /// An engine identified as `worker` in the lease table (unique per process).
    pub fn new(state: AppState, config: AlertsConfig, worker: impl Into<String>) -> Self {
        Self {
            state,
            config,
            worker: worker.into(),
        }
    }

    /// This engine's lease holder id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    fn lease_ttl(&self) -> Duration {
        Duration::seconds(self.config.lease_secs.max(1) as i64)
    }

    /// Gives up this engine's leases (at shutdown).
    pub async fn release(&self) -> Result<(), AlertError> {
        Ok(lease::release_all(&self.state.db, &self.worker).await?)
    }

    /// Runs one pass at `now`; records the pass metrics.
    pub async fn run_pass(&self, now: NaiveDateTime) -> Result<PassReport, AlertError> {
        let started = Instant::now();
        let result = self.pass(now).await;
        metrics::histogram!(super::PASS_DURATION).record(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!(super::PASSES, "outcome" => outcome).increment(1);
        if let Ok(r) = &result {
            metrics::gauge!(super::BUCKETS_HELD).set(r.buckets.len() as f64);
            metrics::counter!(super::UNITS_ANALYSED).increment(r.units_analysed);
        }
        result
    }

    async fn pass(&self, now: NaiveDateTime) -> Result<PassReport, AlertError> {
        let started = Instant::now();
        let db = &self.state.db;
        let buckets = self.config.buckets.max(1);
        let held = lease::claim(db, &self.worker, buckets, self.lease_ttl(), now).await?;
        let mut report = PassReport {
            buckets: held.clone(),
            ..PassReport::default()
        };
        if held.is_empty() {
            return Ok(report);
        }
        let types = alert_types(db).await?;
        if types.is_empty() {
            return Ok(report);
        }
        let eligibility = eligibility(db).await?;
        let held: HashSet<u32> = held.into_iter().collect();
        let mut products = products(db, buckets, &held).await?;
        let due = last_analysed(db).await?;
        // The due alert types of each unit; units with none are done.
        let mut work: Vec<(usize, Vec<&AlertType>)> = Vec::new();
        for (i, p) in products.iter().enumerate() {
            let due_types: Vec<&AlertType> = types
                .iter()
                .filter(|t| eligibility.allows(t, p))
                .filter(|t| match due.get(&p.imei).and_then(|d| d.get(&t.id)) {
                    Some(last) => now - *last >= t.frequency,
                    None => true,
                })
                .collect();
            if !due_types.is_empty() {
                work.push((i, due_types));
            }
        }
        if work.is_empty() {
            return Ok(report);
        }
        // Only the rules of types due now need their fleet-wide inputs read.
        let kinds: HashSet<RuleKind> = work
            .iter()
            .flat_map(|(_, due)| due.iter().filter_map(|t| t.kind))
            .collect();
        let th = &self.config.thresholds;
        let max_cooling = types.iter().filter_map(|t| t.cooling_off).max();
        let alerts = alert_states(db, max_cooling.map(|c| now - c)).await?;
        if kinds.contains(&RuleKind::CreditExpiring) || kinds.contains(&RuleKind::CreditExhausted) {
            let credits = credits(db).await?;
            for p in &mut products {
                p.snapshot.credit = credits.get(&p.imei).copied();
            }
        }
        if kinds.contains(&RuleKind::DeadLetters) {
            let since = now - Duration::seconds(th.dead_letter_window_secs);
            let counts = dead_letters(db, &products, since).await?;
            for p in &mut products {
                p.snapshot.dead_letters = counts.get(&p.imei).copied().unwrap_or(0);
            }
        }
        if kinds.contains(&RuleKind::FailedMt) {
            let since = now - Duration::seconds(th.failed_mt_window_secs);
            let counts = failed_mts(db, since).await?;
            for p in &mut products {
                p.snapshot.failed_mts = counts.get(&p.imei).copied().unwrap_or(0);
            }
        }
        for chunk in work.chunks(CHUNK) {
            // The chunk's telemetry windows, read concurrently (a remote
            // store answers each in a round trip); `None`: the read failed.
            // Owned (index, IMEI) pairs: a future that borrows the chunk
            // through closures is not provably `Send` for `tokio::spawn`.
            let needs: Vec<(usize, String)> = chunk
                .iter()
                .filter(|(_, types)| {
                    types
                        .iter()
                        .any(|t| t.kind.is_some_and(RuleKind::needs_telemetry))
                })
                .map(|(i, _)| (*i, products[*i].imei.clone()))
                .collect();
            let reads = needs.into_iter().map(|(i, imei)| async move {
                let stats = self.telemetry(&imei, now).await;
                if let Err(e) = &stats {
                    tracing::warn!(%imei, error = %e, "alert analysis: telemetry read failed");
                }
                (i, stats.ok())
            });
            let windows: HashMap<usize, Option<TelemetryStats>> = futures_util::stream::iter(reads)
                .buffer_unordered(TELEMETRY_READS_IN_FLIGHT)
                .collect()
                .await;
            for (i, due_types) in chunk {
                report.absorb(
                    self.analyse_unit(
                        &mut products[*i],
                        due_types,
                        windows.get(i),
                        &alerts,
                        now,
                        started,
                    )
                    .await,
                );
            }
        }
        Ok(report)
    }

    /// Analyses one unit's due alert types and commits the outcomes.
    async fn analyse_unit(
        &self,
        p: &mut Product,
        due_types: &[&AlertType],
        window: Option<&Option<TelemetryStats>>,
        alerts: &PerUnit<AlertState>,
        now: NaiveDateTime,
        started: Instant,
    ) -> UnitResult {
        let th = &self.config.thresholds;
        // No entry: no rule of the unit needs telemetry.
        let telemetry_ok = match window {
            Some(Some(stats)) => {
                p.snapshot.telemetry = *stats;
                true
            }
            Some(None) => false,
            None => true,
        };
        let outcomes: Vec<Outcome> = due_types
            .iter()
            .map(|t| {
                let state = alerts
                    .get(&p.imei)
                    .and_then(|a| a.get(&t.id))
                    .copied()
                    .unwrap_or_default();
                analyse(t, th, &p.snapshot, state, telemetry_ok, now)
            })
            .collect();
        match self.commit_unit(p, &outcomes, now, started).await {
            Ok(true) => UnitResult::Committed(outcomes),
            Ok(false) => UnitResult::LeaseLost,
            // One unit's failure (e.g. a constraint) does not stop the pass.
            Err(e) => {
                tracing::warn!(imei = %p.imei, error = %e, "alert analysis: committing a unit failed");
                UnitResult::Failed
            }
        }
    }

    /// The unit's telemetry window, aggregated.
    async fn telemetry(
        &self,
        imei: &str,
        now: NaiveDateTime,
    ) -> Result<TelemetryStats, AlertError> {
        let th = &self.config.thresholds;
        let end = now.and_utc().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let start = end.saturating_sub(th.telemetry_window_secs.saturating_mul(1_000_000_000));
        let mut q = TsQuery::new(TELEMETRY, imei, start, end);
        q.fields = Fields::List(rules::TELEMETRY_FIELDS.map(String::from).to_vec());
        let res = self
            .state
            .timeseries
            .query(&q)
            .await
            .map_err(|e| AlertError::Telemetry(e.to_string()))?;
        let column = |field: &str| -> Vec<Option<f64>> {
            res.columns
                .iter()
                .find(|(f, _)| f == field)
                .map(|(_, vals)| vals.iter().map(|v| v.as_ref().and_then(number)).collect())
                .unwrap_or_default()
        };
        Ok(TelemetryStats::aggregate(
            column(rules::STATE_OF_CHARGE),
            column(rules::VOLTAGE),
            column(rules::TEMPERATURE),
            column(rules::TAMPER_TRIGGERED),
            th,
        ))
    }

    /// Commits one unit's outcomes; `false` if the bucket's lease was lost
    /// (nothing written). `now` is the pass's clock, `started` the instant
    /// the pass began.
    async fn commit_unit(
        &self,
        p: &Product,
        outcomes: &[Outcome],
        now: NaiveDateTime,
        started: Instant,
    ) -> Result<bool, AlertError> {
        // The lease is renewed from the current time, not the pass start:
        // renewing to `now + ttl` would only repeat what `claim` set, so a
        // live pass that overran the lease would lose its buckets.
        let elapsed = Duration::from_std(started.elapsed()).unwrap_or_else(|_| Duration::zero());
        let current = now + elapsed;
        let mut tx = self.state.db.begin().await?;
        if !lease::hold(&mut tx, &self.worker, p.bucket, self.lease_ttl(), current).await? {
            return Ok(false);
        }
        record_analyses(&mut tx, &p.imei, outcomes, now).await?;
        for o in outcomes {
            match &o.action {
                Action::Raise(info) => raise(&mut tx, &p.imei, o.alert_type_id, info, now).await?,
                Action::Clear(id) => clear(&mut tx, *id, now).await?,
                Action::Keep => {}
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// A field value as a number (`true` = 1, for flags).
fn number(v: &FieldValue) -> Option<f64> {
    match v {
        FieldValue::Bool(b) => Some(f64::from(u8::from(*b))),
        other => other.as_f64(),
    }
}

fn analyse(
    t: &AlertType,
    th: &crate::config::AlertThresholds,
    u: &UnitSnapshot,
    state: AlertState,
    telemetry_ok: bool,
    now: NaiveDateTime,
) -> Outcome {
    let failed = || Outcome {
        alert_type_id: t.id,
        kind: t.kind,
        success: false,
        action: Action::Keep,
    };
    let Some(kind) = t.kind else {
        return failed();
    };
    if kind.needs_telemetry() && !telemetry_ok {
        return failed();
    }
    let verdict: Verdict = rules::evaluate(kind, th, u, now);
    Outcome {
        alert_type_id: t.id,
        kind: t.kind,
        success: true,
        action: rules::decide(verdict, state, t.cooling_off, t.clears_automatically, now),
    }
}

/// One unit's analyses: its `analysis_history` rows and its due times, two
/// statements whatever the number of types (a unit's types are distinct, so
/// the upsert never touches a row twice).
async fn record_analyses(
    tx: &mut Tx,
    imei: &str,
    outcomes: &[Outcome],
    now: NaiveDateTime,
) -> Result<(), AlertError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut history = Query::insert();
    history.into_table(a("analysis_history")).columns(
        [
            "product_imei",
            "alert_type_id",
            "timestamp",
            "status",
            "created_at",
            "created_by",
        ]
        .map(a),
    );
    let mut due = Query::insert();
    due.into_table(a("alert_analysis_due"))
        .columns(["product_imei", "alert_type_id", "last_analysed_at"].map(a))
        .on_conflict(
            OnConflict::columns([a("product_imei"), a("alert_type_id")])
                .update_column(a("last_analysed_at"))
                .to_owned(),
        );
    for o in outcomes {
        let status = if o.success { "success" } else { "failure" };
        history.values_panic([
            imei.into(),
            o.alert_type_id.into(),
            now.into(),
            status.into(),
            now.into(),
            ENGINE_USER.into(),
        ]);
        due.values_panic([imei.into(), o.alert_type_id.into(), now.into()]);
    }
    tx.execute(&history).await?;
    tx.execute(&due).await?;
    Ok(())
}

async fn raise(
    tx: &mut Tx,
    imei: &str,
    alert_type_id: i64,
    info: &str,
    now: NaiveDateTime,
) -> Result<(), AlertError> {
    let alert = rows::insert(
        tx,
        "alert",
        vec![
            ("product_imei", imei.into()),
            ("alert_type_id", alert_type_id.into()),
            ("start_time", now.into()),
            ("extra_info", info.into()),
        ],
        ENGINE_USER,
        now,
    )
    .await?;
    publish(tx, &alert, now).await?;
    Ok(())
}

async fn clear(tx: &mut Tx, alert_id: i64, now: NaiveDateTime) -> Result<(), AlertError> {
    let open = rows::eq("alert_id", alert_id).and(Expr::col(a("dismissed_at")).is_null());
    let changed = rows::update(
        tx,
        "alert",
        vec![
            ("dismissed_at", now.into()),
            ("dismissed_by", SYSTEM_USER.into()),
            ("dismissal_reason", "condition cleared".into()),
        ],
        open,
        ENGINE_USER,
        now,
    )
    .await?;
    if changed == 0 {
        // A user dismissed it since the pass read it; they published it.
        return Ok(());
    }
    let mut stmt = rows::select_all("alert");
    stmt.and_where(rows::eq("alert_id", alert_id));
    if let Some(alert) = rows::rows(tx, "alert", &stmt).await?.into_iter().next() {
        publish(tx, &alert, now).await?;
    }
    Ok(())
}

async fn alert_types(db: &Db) -> Result<Vec<AlertType>, AlertError> {
    let stmt = Query::select()
        .columns(
            [
                "alert_type_id",
                "name",
                "status",
                "analysis_frequency",
                "cooling_off_period",
            ]
            .map(a),
        )
        .from(a("alert_type"))
        .and_where(Expr::col(a("active")).eq(true))
        .to_owned();
    let cols = [
        col("alert_type_id", ColumnType::Int),
        col("name", ColumnType::String),
        col("status", ColumnType::String),
        col("analysis_frequency", ColumnType::Datetime),
        col("cooling_off_period", ColumnType::Datetime),
    ];
    Ok(fetch(db, &stmt, &cols)
        .await?
        .iter()
        .filter_map(|r| {
            let name = r.text("name").map(str::to_owned)?;
            Some(AlertType {
                id: r.int("alert_type_id")?,
                kind: RuleKind::from_name(&name),
                name,
                frequency: r
                    .time("analysis_frequency")
                    .map_or(Duration::zero(), interval),
                cooling_off: r
                    .time("cooling_off_period")
                    .map(interval)
                    .filter(|d| *d > Duration::zero()),
                clears_automatically: clears_automatically(r.text("status").unwrap_or_default()),
            })
        })
        .collect())
}

async fn pairs(db: &Db, table: &str, other: &str) -> Result<HashSet<(i64, i64)>, AlertError> {
    let stmt = Query::select()
        .columns(["alert_type_id", other].map(a))
        .from(a(table))
        .to_owned();
    let cols = [
        col("alert_type_id", ColumnType::Int),
        col(other, ColumnType::Int),
    ];
    Ok(fetch(db, &stmt, &cols)
        .await?
        .iter()
        .filter_map(|r| Some((r.int("alert_type_id")?, r.int(other)?)))
        .collect())
}

async fn eligibility(db: &Db) -> Result<Eligibility, AlertError> {
    Ok(Eligibility {
        product_types: pairs(db, "alert_type_product_type_linker", "product_type_id").await?,
        state_types: pairs(db, "alert_type_state_type_linker", "state_type_id").await?,
        anti_entities: pairs(db, "alert_type_entity_anti_linker", "entity_id").await?,
    })
}

/// The units of the held buckets, with what the product row and its latest
/// state, connection and RTC connection record say.
async fn products(db: &Db, buckets: u32, held: &HashSet<u32>) -> Result<Vec<Product>, AlertError> {
    // (table, column, name in the row, type): the select and its decoding.
    const SELECTED: [(&str, &str, &str, ColumnType); 10] = [
        (
            "product",
            "product_imei",
            "product_imei",
            ColumnType::String,
        ),
        (
            "product",
            "product_type_id",
            "product_type_id",
            ColumnType::Int,
        ),
        (
            "product",
            "current_tamper_flag",
            "current_tamper_flag",
            ColumnType::Boolean,
        ),
        (
            "product",
            "dcm_enabled_flag",
            "dcm_enabled_flag",
            ColumnType::Boolean,
        ),
        (
            "product",
            "latest_rtc_mo_status_report_time",
            "status_report_time",
            ColumnType::Datetime,
        ),
        (
            "state",
            "current_state_type",
            "state_type_id",
            ColumnType::Int,
        ),
        (
            "connection",
            "date",
            "connection_date",
            ColumnType::Datetime,
        ),
        (
            "rtc_connection_history",
            "connection_status",
            "connection_status",
            ColumnType::String,
        ),
        (
            "rtc_connection_history",
            "connection_status_time",
            "connection_status_time",
            ColumnType::Datetime,
        ),
        (
            "rtc_connection_history",
            "latest_message_time",
            "latest_message_time",
            ColumnType::Datetime,
        ),
    ];
    // The product's latest row of each joined table.
    const JOINS: [(&str, &str, &str); 3] = [
        ("state", "state_id", "latest_state_id"),
        ("connection", "connection_id", "latest_connection_id"),
        (
            "rtc_connection_history",
            "rtc_connection_history_id",
            "latest_rtc_connection_history_id",
        ),
    ];
    let mut stmt = Query::select();
    for (table, column, name, _) in SELECTED {
        stmt.expr_as(Expr::col((a(table), a(column))), a(name));
    }
    stmt.from(a("product"));
    for (table, id, latest) in JOINS {
        stmt.left_join(
            a(table),
            Expr::col((a(table), a(id))).equals((a("product"), a(latest))),
        );
    }
    let cols: Vec<Column> = SELECTED
        .iter()
        .map(|(_, _, name, ty)| col(name, *ty))
        .collect();
    let mut products: Vec<Product> = fetch(db, &stmt, &cols)
        .await?
        .iter()
        .filter_map(|r| {
            let imei = r.text("product_imei").map(str::to_owned)?;
            let bucket = lease::bucket_of(&imei, buckets);
            if !held.contains(&bucket) {
                return None;
            }
            let last_seen = [
                "status_report_time",
                "connection_date",
                "connection_status_time",
                "latest_message_time",
            ]
            .iter()
            .filter_map(|k| r.time(k))
            .max();
            Some(Product {
                imei,
                bucket,
                product_type: r.int("product_type_id"),
                state_type: r.int("state_type_id"),
                entities: Vec::new(),
                snapshot: UnitSnapshot {
                    tamper_switch_enabled: r.flag("current_tamper_flag"),
                    last_seen,
                    online: r.text("connection_status") == Some("online"),
                    dcm_enabled: r.flag("dcm_enabled_flag"),
                    ..UnitSnapshot::default()
                },
            })
        })
        .collect();
    let links = Query::select()
        .columns(["product_imei", "entity_id"].map(a))
        .from(a("product_entity_linker"))
        .and_where(Expr::col(a("date_removed")).is_null())
        .to_owned();
    let cols = [
        col("product_imei", ColumnType::String),
        col("entity_id", ColumnType::Int),
    ];
    let mut entities: HashMap<String, Vec<i64>> = HashMap::new();
    for r in fetch(db, &links, &cols).await? {
        if let (Some(imei), Some(e)) = (
            r.text("product_imei").map(str::to_owned),
            r.int("entity_id"),
        ) {
            entities.entry(imei).or_default().push(e);
        }
    }
    for p in &mut products {
        p.entities = entities.remove(&p.imei).unwrap_or_default();
    }
    Ok(products)
}

/// Per unit (IMEI), per alert type id: looked up without building a key.
type PerUnit<T> = HashMap<String, HashMap<i64, T>>;

/// The entry of unit `imei` and type `t`, created empty when missing.
fn slot<T: Default>(map: &mut PerUnit<T>, imei: String, t: i64) -> &mut T {
    map.entry(imei).or_default().entry(t).or_default()
}

async fn last_analysed(db: &Db) -> Result<PerUnit<NaiveDateTime>, AlertError> {
    let stmt = Query::select()
        .columns(["product_imei", "alert_type_id", "last_analysed_at"].map(a))
        .from(a("alert_analysis_due"))
        .to_owned();
    let cols = [
        col("product_imei", ColumnType::String),
        col("alert_type_id", ColumnType::Int),
        col("last_analysed_at", ColumnType::Datetime),
    ];
    let mut out = PerUnit::new();
    for r in fetch(db, &stmt, &cols).await? {
        if let (Some(imei), Some(t), Some(at)) = (
            r.text("product_imei"),
            r.int("alert_type_id"),
            r.time("last_analysed_at"),
        ) {
            out.entry(imei.to_owned()).or_default().insert(t, at);
        }
    }
    Ok(out)
}

/// Open alerts, and the latest dismissal since `dismissed_since` (the
/// longest cooling-off period back), per (unit, alert type).
async fn alert_states(
    db: &Db,
    dismissed_since: Option<NaiveDateTime>,
) -> Result<PerUnit<AlertState>, AlertError> {
    let mut out: PerUnit<AlertState> = HashMap::new();
    let open = Query::select()
        .columns(["alert_id", "product_imei", "alert_type_id"].map(a))
        .from(a("alert"))
        .and_where(Expr::col(a("dismissed_at")).is_null())
        .to_owned();
    let cols = [
        col("alert_id", ColumnType::Int),
        col("product_imei", ColumnType::String),
        col("alert_type_id", ColumnType::Int),
    ];
    for r in fetch(db, &open, &cols).await? {
        if let (Some(id), Some(imei), Some(t)) = (
            r.int("alert_id"),
            r.text("product_imei").map(str::to_owned),
            r.int("alert_type_id"),
        ) {
            slot(&mut out, imei, t).open_alert = Some(id);
        }
    }
    let Some(since) = dismissed_since else {
        return Ok(out);
    };
    let dismissed = Query::select()
        .columns(["product_imei", "alert_type_id"].map(a))
        .expr_as(Func::max(Expr::col(a("dismissed_at"))), a("last_dismissed"))
        .from(a("alert"))
        .and_where(Expr::col(a("dismissed_at")).gte(since))
        .group_by_columns(["product_imei", "alert_type_id"].map(a))
        .to_owned();
    let cols = [
        col("product_imei", ColumnType::String),
        col("alert_type_id", ColumnType::Int),
        col("last_dismissed", ColumnType::Datetime),
    ];
    for r in fetch(db, &dismissed, &cols).await? {
        if let (Some(imei), Some(t)) = (
            r.text("product_imei").map(str::to_owned),
            r.int("alert_type_id"),
        ) {
            slot(&mut out, imei, t).last_dismissed = r.time("last_dismissed");
        }
    }
    Ok(out)
}

async fn credits(db: &Db) -> Result<HashMap<String, Credit>, AlertError> {
    let stmt = Query::select()
        .columns(["product_imei", "balance", "expected_expiry"].map(a))
        .from(a("balance"))
        .order_by(a("balance_id"), sea_query::Order::Asc)
        .to_owned();
    let cols = [
        col("product_imei", ColumnType::String),
        col("balance", ColumnType::Int),
        col("expected_expiry", ColumnType::Datetime),
    ];
    // Ascending ids: a later row of the same unit (there is normally one) wins.
    Ok(fetch(db, &stmt, &cols)
        .await?
        .iter()
        .filter_map(|r| {
            Some((
                r.text("product_imei").map(str::to_owned)?,
                Credit {
                    balance: r.int("balance")?,
                    expected_expiry: r.time("expected_expiry")?,
                },
            ))
        })
        .collect())
}

/// Dead letters per unit since `since`. The table has no IMEI column: it is
/// the envelope's `ident` (an IMEI, or `<network>/<ip>` resolved through the
/// products' RTC identity).
async fn dead_letters(
    db: &Db,
    products: &[Product],
    since: NaiveDateTime,
) -> Result<HashMap<String, u32>, AlertError> {
    let stmt = Query::select()
        .column(a("payload"))
        .from(a("rtc_dead_letter"))
        .and_where(Expr::col(a("created_at")).gte(since))
        .to_owned();
    let rows = fetch(db, &stmt, &[col("payload", ColumnType::Text)]).await?;
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = Query::select()
        .columns(["product_imei", "rtc_network_name", "ip_address"].map(a))
        .from(a("product"))
        .and_where(Expr::col(a("ip_address")).is_not_null())
        .to_owned();
    let cols = [
        col("product_imei", ColumnType::String),
        col("rtc_network_name", ColumnType::String),
        col("ip_address", ColumnType::String),
    ];
    // Network identities as the dead-letter API resolves them: the address
    // parsed (so any spelling of it matches), and an identity two products
    // share belongs to neither.
    let mut by_ip: HashMap<(String, std::net::IpAddr), Option<String>> = HashMap::new();
    for r in fetch(db, &ids, &cols).await? {
        let (Some(network), Some(ip), Some(imei)) = (
            r.text("rtc_network_name"),
            r.text("ip_address").and_then(|ip| ip.trim().parse().ok()),
            r.text("product_imei"),
        ) else {
            continue;
        };
        by_ip
            .entry((network.to_owned(), ip))
            .and_modify(|owner| *owner = None)
            .or_insert_with(|| Some(imei.to_owned()));
    }
    let wanted: HashSet<&str> = products.iter().map(|p| p.imei.as_str()).collect();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for r in rows {
        let Some(payload) = r.text("payload") else {
            continue;
        };
        let Ok(env) = codec::envelope::decode_mo_queue_envelope(payload.as_bytes()) else {
            continue;
        };
        let imei = match env.ident_type {
            codec::envelope::IdentType::Imei => Some(env.ident.to_string()),
            codec::envelope::IdentType::Ip => codec::envelope::Ident::parse(&env.ident)
                .ok()
                .and_then(|id| {
                    by_ip
                        .get(&(id.network.to_owned(), id.ip))
                        .cloned()
                        .flatten()
                }),
        };
        if let Some(imei) = imei.filter(|i| wanted.contains(i.as_str())) {
            *counts.entry(imei).or_default() += 1;
        }
    }
    Ok(counts)
}

async fn failed_mts(db: &Db, since: NaiveDateTime) -> Result<HashMap<String, u32>, AlertError> {
    let stmt = Query::select()
        .column(a("product_imei"))
        .expr_as(
            SimpleExpr::from(Func::count(Expr::col(a("rtc_message_history_id")))),
            a("n"),
        )
        .from(a("rtc_message_history"))
        .and_where(Expr::col(a("delivery_status")).eq("failed"))
        .and_where(Expr::col(a("delivery_status_time")).gte(since))
        .group_by_col(a("product_imei"))
        .to_owned();
    let cols = [
        col("product_imei", ColumnType::String),
        col("n", ColumnType::Int),
    ];
    Ok(fetch(db, &stmt, &cols)
        .await?
        .iter()
        .filter_map(|r| {
            Some((
                r.text("product_imei").map(str::to_owned)?,
                u32::try_from(r.int("n")?).ok()?,
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_clear_status_is_read_like_a_rule_name() {
        for status in ["auto_clear", " Auto Clear", "AUTO-CLEAR", "auto clear "] {
            assert!(clears_automatically(status), "{status:?}");
        }
        for status in ["manual", "", "autoclear"] {
            assert!(!clears_automatically(status), "{status:?}");
        }
    }
}
