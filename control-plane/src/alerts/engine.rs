//! One analysis pass, with its I/O: claim buckets, read what the rules need
//! for the units of those buckets, run the due (unit, alert type) pairs,
//! and commit each unit's results (history rows, alerts, notifications) in
//! one transaction that re-checks the bucket lease. What it reads is in
//! [`super::inputs`], what one analysis decides in [`super::analysis`], what it
//! writes in [`super::results`].

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{Duration, NaiveDateTime};
use futures_util::StreamExt;
use ingest::tsdb::{Fields, Query as TsQuery, TELEMETRY};

use super::analysis::{analyse, number, Outcome, Product};
use super::inputs::{
    alert_states, alert_types, credits, dead_letters, eligibility, failed_mts, last_analysed,
    products, PerUnit,
};
use super::lease;
use super::results::{clear, raise, record_analyses};
use super::rules::{self, Action, AlertState, RuleKind, TelemetryStats};
use super::AlertError;
use crate::app::AppState;
use crate::config::AlertsConfig;

pub use super::analysis::{interval, AlertType};

/// `created_by` of the rows the engine writes.
pub const ENGINE_USER: &str = "alert-engine";
/// `dismissed_by` of alerts the engine clears.
pub const SYSTEM_USER: &str = "system";
/// `alert_type.status` of alert types the system dismisses once their
/// condition clears (any other status: only users dismiss).
pub const STATUS_AUTO_CLEAR: &str = "auto_clear";

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
        let mut tx = self.state.db.begin_background().await?;
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
