//! What a unit's analyses write, in the unit's transaction: `analysis_history` rows and due
//! times, alerts raised, alerts the system dismisses, and their notifications.

use chrono::NaiveDateTime;
use sea_query::{Expr, OnConflict, Query};

use super::analysis::Outcome;
use super::engine::{ENGINE_USER, SYSTEM_USER};
use super::AlertError;
use crate::actions::alert::publish;
use crate::db::Tx;
use crate::rows::{self, a};

/// One unit's analyses: its `analysis_history` rows and its due times, two
/// statements whatever the number of types (a unit's types are distinct, so
/// the upsert never touches a row twice).
pub(super) async fn record_analyses(
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

/// Opens an alert of type `alert_type_id` on the unit and publishes it.
pub(super) async fn raise(
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

/// Dismisses an open alert whose condition cleared, and publishes the dismissal.
pub(super) async fn clear(
    tx: &mut Tx,
    alert_id: i64,
    now: NaiveDateTime,
) -> Result<(), AlertError> {
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
