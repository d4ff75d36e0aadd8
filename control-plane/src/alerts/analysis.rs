//! What one analysis decides, without I/O: which alert types a unit is eligible for, and
//! the outcome of one (unit, alert type) run ([`analyse`]: the rule's verdict turned into
//! an action).

use std::collections::HashSet;

use chrono::{Duration, NaiveDateTime};
use ingest::tsdb::FieldValue;

use super::engine::STATUS_AUTO_CLEAR;
use super::rules::{self, Action, AlertState, RuleKind, UnitSnapshot, Verdict};

/// Whether an `alert_type.status` says the system dismisses the type's
/// alerts once their condition clears; spelt as loosely as a rule name.
pub(super) fn clears_automatically(status: &str) -> bool {
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
pub(super) struct Eligibility {
    pub(super) product_types: HashSet<(i64, i64)>,
    pub(super) state_types: HashSet<(i64, i64)>,
    pub(super) anti_entities: HashSet<(i64, i64)>,
}

impl Eligibility {
    pub(super) fn allows(&self, t: &AlertType, p: &Product) -> bool {
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
pub(super) struct Product {
    pub(super) imei: String,
    pub(super) bucket: u32,
    pub(super) product_type: Option<i64>,
    pub(super) state_type: Option<i64>,
    pub(super) entities: Vec<i64>,
    pub(super) snapshot: UnitSnapshot,
}

/// One (unit, alert type) analysis, before it is committed.
pub(super) struct Outcome {
    pub(super) alert_type_id: i64,
    pub(super) kind: Option<RuleKind>,
    pub(super) success: bool,
    pub(super) action: Action,
}

/// A field value as a number (`true` = 1, for flags).
pub(super) fn number(v: &FieldValue) -> Option<f64> {
    match v {
        FieldValue::Bool(b) => Some(f64::from(u8::from(*b))),
        other => other.as_f64(),
    }
}

/// One run of alert type `t` on a unit: a failure when the type has no rule or the rule's
/// telemetry could not be read, else the rule's verdict as an action.
pub(super) fn analyse(
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
