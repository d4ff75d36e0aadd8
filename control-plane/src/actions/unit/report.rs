//! Unit reports: what a unit says it actually does closes the pending
//! state machines and confirms software and parameters (see the module docs
//! of [`super`]).

use chrono::NaiveDateTime;
use sea_query::{Alias, Expr};
use serde_json::Value as Json;

use super::software::{
    active_software, link_software, pending_software, resolve_software, SoftwareLink,
};
use super::{enable_status, record_enable_change, record_switch_change, TAMPER_HISTORY, UNIT_USER};
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{eq, update};

/// What a unit reported about itself on a connection. `None` fields were
/// not part of the report and change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitReport {
    /// The unit's actual enable state (on = true).
    pub enable_flag: Option<bool>,
    /// The unit's actual tamper-switch state.
    pub tamper_flag: Option<bool>,
    /// The name of the software the unit runs (`software_version_type.name`).
    pub software: Option<String>,
}

/// What [`apply_unit_report`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The new enable status, when the report changed it.
    pub enable_status: Option<&'static str>,
    /// The new tamper status, when the report changed it.
    pub tamper_status: Option<&'static str>,
    /// `true` when the reported software became the active one.
    pub software_changed: bool,
}

/// Applies a unit's report of its actual state, inside the caller's
/// transaction: the current flags move to what the unit says (so
/// `pending_enabled` becomes `enabled` once the unit confirms), with
/// history rows written by [`UNIT_USER`] and a `product-status`
/// notification for an enable-status change. A reported software version
/// becomes the active one: a pending update to it is confirmed, other
/// pending updates count a failed attempt. Software names that are not in
/// `software_version_type` are ignored (logged): the catalogue of releases
/// is SYSTEM-managed. A product that does not exist is a 404 `ApiError`.
pub async fn apply_unit_report(
    tx: &mut Tx,
    imei: &str,
    report: &UnitReport,
    now: NaiveDateTime,
) -> Result<ReportOutcome, ApiError> {
    let product = crate::actions::lock_product(tx, &crate::query::Visibility::Global, imei).await?;
    let mut outcome = ReportOutcome::default();
    if let Some(actual) = report.enable_flag {
        let current = product.current_enable_flag;
        if actual != current {
            let desired = product.desired_enable_flag;
            let before = enable_status(current, desired);
            let after = enable_status(actual, desired);
            let history = record_enable_change(tx, imei, before, after, UNIT_USER, now).await?;
            let mut values = vec![
                ("current_enable_flag", actual.into()),
                ("latest_enable_history_id", history.into()),
            ];
            if !actual {
                values.push(("disable_date", now.into()));
            }
            update(
                tx,
                "product",
                values,
                eq("product_imei", imei),
                UNIT_USER,
                now,
            )
            .await?;
            crate::actions::notify_product_status(tx, imei, UNIT_USER, now).await?;
            outcome.enable_status = Some(after);
        }
    }
    if let Some(actual) = report.tamper_flag {
        let current = product.current_tamper_flag;
        if actual != current {
            let desired = product.desired_tamper_flag;
            let before = enable_status(current, desired);
            let after = enable_status(actual, desired);
            record_switch_change(tx, &TAMPER_HISTORY, imei, before, after, UNIT_USER, now).await?;
            update(
                tx,
                "product",
                vec![("current_tamper_flag", actual.into())],
                eq("product_imei", imei),
                UNIT_USER,
                now,
            )
            .await?;
            outcome.tamper_status = Some(after);
        }
    }
    if let Some(name) = report.software.as_deref().filter(|s| !s.is_empty()) {
        outcome.software_changed = apply_reported_software(tx, imei, name, now).await?;
    }
    Ok(outcome)
}

async fn apply_reported_software(
    tx: &mut Tx,
    imei: &str,
    name: &str,
    now: NaiveDateTime,
) -> Result<bool, ApiError> {
    let active = active_software(tx, imei).await?;
    let pending = pending_software(tx, imei).await?;
    if active.as_ref().is_some_and(|(_, n)| n == name) {
        // Still on the old version: every pending update missed a chance.
        for p in &pending {
            count_missed_update(tx, p, now).await?;
        }
        return Ok(false);
    }
    let software_id = match pending.iter().find(|p| p.name == name) {
        Some(p) => Some(p.software_id),
        None => resolve_software(tx, &Json::String(name.to_string()))
            .await
            .ok()
            .filter(|(_, n)| n == name)
            .map(|(id, _)| id),
    };
    let Some(software_id) = software_id else {
        tracing::warn!(
            imei,
            software = name,
            "unit reports unknown software; ignored"
        );
        return Ok(false);
    };
    // The previous software is removed...
    update(
        tx,
        "product_software_linker",
        vec![("date_removed", now.into())],
        eq("product_imei", imei)
            .and(Expr::col(Alias::new("date_added")).is_not_null())
            .and(Expr::col(Alias::new("date_removed")).is_null()),
        UNIT_USER,
        now,
    )
    .await?;
    // ...the pending update to it (if any) is confirmed, other pending
    // updates count the attempt.
    let mut confirmed = false;
    for p in &pending {
        if p.software_id == software_id && !confirmed {
            update(
                tx,
                "product_software_linker",
                vec![("date_added", now.into())],
                eq("product_software_linker_id", p.linker_id),
                UNIT_USER,
                now,
            )
            .await?;
            confirmed = true;
        } else {
            count_missed_update(tx, p, now).await?;
        }
    }
    if !confirmed {
        link_software(tx, imei, software_id, Some(now), UNIT_USER, now).await?;
    }
    Ok(true)
}

/// A pending update the unit reported without installing: one more missed chance.
async fn count_missed_update(
    tx: &mut Tx,
    pending: &SoftwareLink,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    update(
        tx,
        "product_software_linker",
        vec![("update_attempts", (pending.update_attempts + 1).into())],
        eq("product_software_linker_id", pending.linker_id),
        UNIT_USER,
        now,
    )
    .await?;
    Ok(())
}

/// What the unit should be told on its next connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInstructions {
    pub desired_enable_flag: bool,
    pub desired_tamper_flag: bool,
    /// The software to update to, if an update is pending:
    /// `(software_version_type_id, name)`.
    pub pending_software: Option<(i64, String)>,
}

/// The desired state of a unit (for the gateway's MT side).
pub async fn unit_instructions(tx: &mut Tx, imei: &str) -> Result<UnitInstructions, ApiError> {
    let product =
        crate::actions::visible_product(tx, &crate::query::Visibility::Global, imei).await?;
    let pending = pending_software(tx, imei).await?;
    Ok(UnitInstructions {
        desired_enable_flag: product.desired_enable_flag,
        desired_tamper_flag: product.desired_tamper_flag,
        pending_software: pending.last().map(|p| (p.software_id, p.name.clone())),
    })
}
