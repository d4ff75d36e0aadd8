//! Status reports: the unit's state (enable, tamper, software), a pending energy limit the
//! unit now runs, and its tamper trips as telemetry.

use chrono::NaiveDateTime;
use codec::mo::StatusReport;
use ingest::sink::{MoContext, SinkError};
use ingest::tsdb::Point;
use sea_query::{Alias, Expr};

use super::{telemetry_point, ControlPlaneSink, Step};
use crate::actions::unit::{apply_unit_report, UnitReport, UNIT_USER};
use crate::db::Tx;
use crate::rows::{eq, update};
use crate::rtc::{api_sink_error, db_sink_error};

impl ControlPlaneSink {
    pub(super) async fn apply_status_report(
        &self,
        mut step: Step<'_>,
        report: &StatusReport<'_>,
    ) -> Result<(), SinkError> {
        let (ctx, at) = (step.ctx, step.at);
        if !step.claim("status_report").await? {
            // Applied before (a redelivery, or a v2 unit's resend with a later receipt
            // time); the point may not have been written then. At the first receipt's time,
            // so a resend overwrites it instead of adding a second one.
            return match step.first_receipt_ms("status_report").await? {
                Some(first) => self.write_points(&tamper_point(ctx, report, first)).await,
                None => Ok(()),
            };
        }
        let tx = &mut step.tx;
        let outcome = apply_unit_report(tx, ctx.imei, &unit_report(report), at)
            .await
            .map_err(api_sink_error)?;
        if let Some(limit) = report.energy_limit.filter(|l| l.is_finite()) {
            confirm_energy_limit(tx, ctx.imei, limit, at).await?;
        }
        update(
            tx,
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
        step.commit().await?;
        if outcome != Default::default() {
            tracing::info!(imei = ctx.imei, ?outcome, "unit report applied");
        }
        // The tamper alert rule reads trips from the time series (the
        // product row keeps only whether the switch is enabled). After the
        // commit, and idempotent on redelivery like the balance point.
        self.write_points(&tamper_point(ctx, report, ctx.received_at_ms))
            .await
    }
}

/// The `tamper_triggered` telemetry point of a status report that says, at `time_ms` (the
/// first receipt of the report: see `first_applied_ms`).
fn tamper_point(ctx: &MoContext<'_>, r: &StatusReport<'_>, time_ms: i64) -> Vec<Point> {
    r.tamper_triggered
        .map(|tripped| {
            telemetry_point(
                ctx,
                crate::alerts::rules::TAMPER_TRIGGERED,
                i64::from(tripped),
                time_ms,
            )
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
        .value
        .and_then(|v| v.trim().parse::<f64>().ok())
        .is_some_and(|v| (v - reported).abs() < 0.01);
    if !matches {
        return Ok(false);
    }
    let (Some(id), Some(type_id)) = (p.product_parameter_id, p.parameter_type_id) else {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
