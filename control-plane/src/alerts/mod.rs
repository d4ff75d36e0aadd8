//! Alert analysis: units watched continuously, alerts raised and cleared by rules.
//!
//! # Layout
//! - [`rules`]: the rules, without I/O: a unit snapshot and the thresholds
//!   in, a [`rules::Verdict`] out; [`rules::decide`] turns a verdict into an
//!   action (one open alert per unit and type, cooling-off, system clear).
//! - [`lease`]: IMEI hash buckets leased in the database, so several
//!   engines (one per ingest process) share the units and never analyse
//!   the same unit at once.
//! - [`defaults`]: the default alert types (one per rule) seeded at start.
//! - [`engine`]: one pass with its I/O, and [`run`], the loop ingest
//!   processes and `serve` start; `inputs` reads what a pass needs (typed
//!   rows), `analysis` decides one (unit, alert type) run without I/O,
//!   `results` writes a unit's outcomes.
//!
//! An alert type runs the rule its `name` names ([`rules::RuleKind::from_name`]),
//! on the units it is eligible for (product type linked, current state type
//! linked, no entity anti-linked), at its `analysis_frequency`. Each run
//! writes an `analysis_history` row; raised alerts and system dismissals
//! publish to `product-alert` through the outbox in the same transaction.

use std::future::Future;
use std::time::Duration;

mod analysis;
pub mod defaults;
pub mod engine;
mod inputs;
pub mod lease;
mod results;
pub mod rules;

pub use engine::{AlertEngine, PassReport};

use crate::app::AppState;
use crate::config::AlertsConfig;
use crate::db::DbError;
use crate::error::ApiError;

/// Passes, by `outcome` (ok, failed).
pub const PASSES: &str = "smartsolar_alerts_passes_total";
/// Duration of one pass.
pub const PASS_DURATION: &str = "smartsolar_alerts_pass_duration_seconds";
/// Units with analyses committed.
pub const UNITS_ANALYSED: &str = "smartsolar_alerts_units_analysed_total";
/// Analyses (analysis_history rows), by `rule` and `outcome` (success, failure).
pub const ANALYSES: &str = "smartsolar_alerts_analyses_total";
/// Alerts raised, by `rule`.
pub const RAISED: &str = "smartsolar_alerts_raised_total";
/// Alerts dismissed by the system (condition cleared), by `rule`.
pub const CLEARED: &str = "smartsolar_alerts_cleared_total";
/// Buckets this engine holds after its last pass.
pub const BUCKETS_HELD: &str = "smartsolar_alerts_buckets_held";

/// Alert analysis failures.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Reading or writing the database failed; the pass (or the unit) is retried later.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Writing an alert or its notification failed.
    #[error("writing alert results: {0}")]
    Write(#[from] ApiError),
    /// The time-series store could not answer the telemetry read.
    #[error("reading telemetry: {0}")]
    Telemetry(String),
}

/// Runs passes every `pass_interval_secs` until `shutdown` resolves, then
/// gives the engine's leases up so other engines take its buckets at once.
pub async fn run(
    state: AppState,
    config: AlertsConfig,
    worker: String,
    shutdown: impl Future<Output = ()>,
) {
    let interval = Duration::from_secs(config.pass_interval_secs.max(1));
    let engine = AlertEngine::new(state.clone(), config, worker);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        match engine.run_pass(state.clock.now()).await {
            Ok(r) if r.analyses > 0 => tracing::info!(
                worker = engine.worker(),
                buckets = r.buckets.len(),
                units = r.units_analysed,
                analyses = r.analyses,
                raised = r.raised,
                cleared = r.cleared,
                failures = r.failures,
                "alert pass"
            ),
            Ok(_) => {}
            // A database hiccup is retried on the next pass.
            Err(e) => tracing::warn!(error = %e, "alert pass failed"),
        }
    }
    if let Err(e) = engine.release().await {
        tracing::warn!(error = %e, "releasing alert leases failed");
    }
}
