//! The default alert types: one active type per shipped rule, seeded at start so a fresh
//! install raises alerts without an operator guessing rule names and linking types by hand.
//!
//! Seeding is idempotent and never overwrites an operator: each default is seeded at most
//! once per database, recorded by its `label` in `alert_type_default` (migration 0012). A
//! default an operator edited, deactivated or deleted stays as the operator left it; a rule
//! added by a later release is seeded on the first start after the upgrade. A label already
//! taken by an operator's own alert type is recorded as seeded and left alone.

use chrono::{Duration, NaiveDateTime};
use sea_query::{Alias, Expr, OnConflict, Query};

use super::rules::RuleKind;
use crate::actions::state::{
    ACTIVATED, ACTIVATING, IN_REPAIR_SYSTEM, MONITORED, SHIPPED, UNMONITORED,
};
use crate::db::Db;
use crate::error::ApiError;
use crate::rows::{insert, insert_id};

/// `created_by` of the seeded rows.
pub const SEED_USER: &str = "smartsolar-defaults";

/// `alert_type.status` of types only a person dismisses (the engine reads any status other
/// than `auto_clear` that way).
const STATUS_MANUAL: &str = "manual";

/// One default alert type.
#[derive(Debug, Clone, Copy)]
pub struct DefaultAlertType {
    pub rule: RuleKind,
    pub severity: &'static str,
    pub category: &'static str,
    pub message: &'static str,
    /// How often each unit is analysed (seconds).
    pub frequency_secs: i64,
    /// After a dismissal, how long before the same alert may be raised again (seconds).
    pub cooling_off_secs: i64,
    /// `auto_clear` (the engine dismisses it when the condition clears) or `manual`.
    pub status: &'static str,
    /// The state types it is linked to: units in the field, never those still in the
    /// factory or the warehouse (STORED) or out of service (TERMINATED).
    pub state_types: &'static [i64],
}

/// The field states every unit-condition rule watches.
const IN_FIELD: &[i64] = &[ACTIVATED, MONITORED];

/// One default per [`RuleKind::ALL`], in that order (a unit test keeps them in step).
pub const DEFAULTS: [DefaultAlertType; 8] = [
    DefaultAlertType {
        rule: RuleKind::Tamper,
        severity: "high",
        category: "security",
        message: "The unit's tamper switch was tripped while enabled",
        frequency_secs: 5 * 60,
        cooling_off_secs: 3600,
        // Someone must look at a tamper, even once the switch is closed again.
        status: STATUS_MANUAL,
        state_types: IN_FIELD,
    },
    DefaultAlertType {
        rule: RuleKind::NoConnection,
        severity: "medium",
        category: "connectivity",
        message: "Nothing heard from the unit for longer than expected",
        frequency_secs: 15 * 60,
        cooling_off_secs: 6 * 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        state_types: IN_FIELD,
    },
    DefaultAlertType {
        rule: RuleKind::LowBattery,
        severity: "medium",
        category: "battery",
        message: "Low state of charge or battery voltage",
        frequency_secs: 15 * 60,
        cooling_off_secs: 6 * 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        state_types: IN_FIELD,
    },
    DefaultAlertType {
        rule: RuleKind::OverTemperature,
        severity: "high",
        category: "battery",
        message: "The unit runs hotter than its threshold",
        frequency_secs: 15 * 60,
        cooling_off_secs: 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        // A hot battery is a hazard wherever the unit is, the repair bench included.
        state_types: &[ACTIVATED, MONITORED, UNMONITORED, IN_REPAIR_SYSTEM],
    },
    DefaultAlertType {
        rule: RuleKind::CreditExpiring,
        severity: "low",
        category: "credit",
        message: "The unit's credit runs out soon",
        frequency_secs: 3600,
        cooling_off_secs: 12 * 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        state_types: IN_FIELD,
    },
    DefaultAlertType {
        rule: RuleKind::CreditExhausted,
        severity: "medium",
        category: "credit",
        message: "The unit's credit has run out",
        frequency_secs: 3600,
        cooling_off_secs: 12 * 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        state_types: IN_FIELD,
    },
    DefaultAlertType {
        rule: RuleKind::DeadLetters,
        severity: "low",
        category: "platform",
        message: "Messages from the unit keep landing in the dead-letter queue",
        frequency_secs: 3600,
        cooling_off_secs: 6 * 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        // Firmware trouble shows from the first connection on, shipping included.
        state_types: &[
            SHIPPED,
            ACTIVATING,
            ACTIVATED,
            MONITORED,
            UNMONITORED,
            IN_REPAIR_SYSTEM,
        ],
    },
    DefaultAlertType {
        rule: RuleKind::FailedMt,
        severity: "medium",
        category: "platform",
        message: "Commands to the unit keep failing",
        frequency_secs: 30 * 60,
        cooling_off_secs: 6 * 3600,
        status: super::engine::STATUS_AUTO_CLEAR,
        state_types: &[ACTIVATING, ACTIVATED, MONITORED, UNMONITORED],
    },
];

impl DefaultAlertType {
    /// The unique `alert_type.label`, also the key in `alert_type_default`.
    pub fn label(&self) -> String {
        format!("default:{}", self.rule.as_str())
    }
}

/// The spec stores intervals as `datetime`: the offset from the Unix epoch
/// (the inverse of [`super::engine::interval`]).
fn as_datetime(secs: i64) -> NaiveDateTime {
    chrono::DateTime::UNIX_EPOCH.naive_utc() + Duration::seconds(secs)
}

/// Seeds every default not seeded before, each with its product-type and state-type
/// links, in one transaction. Returns the labels of the alert types created.
pub async fn ensure_defaults(db: &Db) -> Result<Vec<String>, ApiError> {
    let now = crate::values::now();
    let mut tx = db.begin().await?;
    // Every product type known when the default is seeded (the reference data's four on a
    // fresh install); an operator links later ones, as for any alert type.
    let product_types: Vec<(i64,)> = tx
        .fetch_typed(
            &Query::select()
                .column(Alias::new("product_type_id"))
                .from(Alias::new("product_type"))
                .to_owned(),
        )
        .await?;
    let product_types: Vec<i64> = product_types.into_iter().map(|(id,)| id).collect();
    let mut created = Vec::new();
    for d in &DEFAULTS {
        let label = d.label();
        // Claim the label first: on PostgreSQL a second process starting at the same time
        // waits on the key here, then finds it taken and skips, instead of failing on the
        // unique label.
        let claimed = tx
            .execute(
                &Query::insert()
                    .into_table(Alias::new("alert_type_default"))
                    .columns([Alias::new("label"), Alias::new("seeded_at")])
                    .values_panic([label.as_str().into(), now.into()])
                    .on_conflict(
                        OnConflict::column(Alias::new("label"))
                            .do_nothing()
                            .to_owned(),
                    )
                    .to_owned(),
            )
            .await?
            == 1;
        if !claimed {
            continue;
        }
        let taken = tx
            .fetch_i64(
                &Query::select()
                    .expr(Expr::col(Alias::new("alert_type_id")).count())
                    .from(Alias::new("alert_type"))
                    .and_where(Expr::col(Alias::new("label")).eq(label.as_str()))
                    .to_owned(),
            )
            .await?
            > 0;
        if !taken {
            let id = insert_id(
                &mut tx,
                "alert_type",
                vec![
                    ("name", d.rule.as_str().into()),
                    ("version", 1i64.into()),
                    ("category", d.category.into()),
                    ("purpose", d.message.into()),
                    ("message", d.message.into()),
                    ("status", d.status.into()),
                    ("severity", d.severity.into()),
                    ("analysis_frequency", as_datetime(d.frequency_secs).into()),
                    ("cooling_off_period", as_datetime(d.cooling_off_secs).into()),
                    ("active", true.into()),
                    ("label", label.as_str().into()),
                ],
                SEED_USER,
                now,
            )
            .await?;
            for pt in &product_types {
                insert(
                    &mut tx,
                    "alert_type_product_type_linker",
                    vec![
                        ("alert_type_id", id.into()),
                        ("product_type_id", (*pt).into()),
                    ],
                    SEED_USER,
                    now,
                )
                .await?;
            }
            for st in d.state_types {
                insert(
                    &mut tx,
                    "alert_type_state_type_linker",
                    vec![
                        ("alert_type_id", id.into()),
                        ("state_type_id", (*st).into()),
                    ],
                    SEED_USER,
                    now,
                )
                .await?;
            }
            created.push(label);
        }
    }
    tx.commit().await?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_is_one_default_per_rule_in_rule_order() {
        let rules: Vec<RuleKind> = DEFAULTS.iter().map(|d| d.rule).collect();
        assert_eq!(rules, RuleKind::ALL.to_vec());
    }

    #[test]
    fn defaults_never_watch_units_in_the_factory_or_terminated() {
        use crate::actions::state::{NON_EXISTANT, STORED, TERMINATED};
        for d in &DEFAULTS {
            for st in [NON_EXISTANT, STORED, TERMINATED] {
                assert!(!d.state_types.contains(&st), "{:?} watches {st}", d.rule);
            }
        }
        let tamper = &DEFAULTS[0];
        assert!(!tamper.state_types.contains(&SHIPPED));
    }

    #[test]
    fn intervals_are_read_back_as_they_were_written() {
        for d in &DEFAULTS {
            assert_eq!(
                super::super::engine::interval(as_datetime(d.frequency_secs)),
                Duration::seconds(d.frequency_secs)
            );
        }
    }
}
