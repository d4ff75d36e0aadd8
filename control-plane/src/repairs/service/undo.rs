//! Undo: a transition stores the commands that reverse its writes
//! (`repair_workflow_history.update_commands_bin`); undo applies them in
//! reverse order, drops the history row and records the undo as an event.

use sea_query::{Expr, Order, Query, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::reads::{fetch_repair, locate, select_history};
use super::steps::{enter_state, point_at_event, record_event};
use super::{internal, modified, Call, Conn};
use crate::db::Tx;
use crate::error::ApiError;
use crate::repairs::definition::State;
use crate::rows::a;

/// The inverse of one write of a transition (`update_commands_bin`),
/// applied in reverse order by undo.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum UndoCommand {
    /// Puts the repair's workflow columns back.
    RestoreRepair {
        workflow_state_id: String,
        context: String,
        latest_workflow_event_id: Option<i64>,
        measured_battery_capacity: Option<f64>,
    },
    /// Deletes a row the transition inserted.
    Delete { table: UndoTable, id: i64 },
    /// Re-links a part the transition unlinked from the unit.
    ReopenPartLink { part_product_linker_id: i64 },
}

/// The only tables undo may delete from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum UndoTable {
    Part,
    PartProductLinker,
    RepairPartTypeLinker,
}

impl UndoTable {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Part => "part",
            Self::PartProductLinker => "part_product_linker",
            Self::RepairPartTypeLinker => "repair_part_type_linker",
        }
    }

    /// The primary key column.
    pub(super) fn key(self) -> &'static str {
        match self {
            Self::Part => "part_id",
            Self::PartProductLinker => "part_product_linker_id",
            Self::RepairPartTypeLinker => "repair_part_type_linker_id",
        }
    }
}

/// The latest transition of a repair.
#[derive(Debug, sqlx::FromRow)]
struct LastTransition {
    repair_workflow_history_id: i64,
    start_state_id: Option<String>,
    end_state_id: Option<String>,
    update_commands_bin: Option<String>,
    can_undo: Option<bool>,
}

/// Reverses the repair's latest transition; returns the restored state.
pub async fn undo<'w>(call: &Call<'w>, id: i64) -> Result<&'w State, ApiError> {
    let mut tx = call.app.db.begin().await?;
    let repair = fetch_repair(call, &mut Conn::Tx(&mut tx), id, true).await?;
    if repair.outcome.is_some() {
        return Err(ApiError::BadRequest(format!(
            "Repair {id} is finished; a finished repair cannot be undone"
        )));
    }
    let (wf, _) = locate(call.workflows, &repair)?;
    let columns = [
        "repair_workflow_history_id",
        "start_state_id",
        "end_state_id",
        "update_commands_bin",
        "can_undo",
    ];
    let mut stmt = select_history(id, &columns, Order::Desc);
    stmt.limit(1);
    let last: LastTransition = tx.fetch_typed_optional(&stmt).await?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Repair {id} has nothing to undo: it is in its first state"
        ))
    })?;
    let history_id = last.repair_workflow_history_id;
    if last.can_undo != Some(true) {
        return Err(ApiError::BadRequest(format!(
            "The last step of repair {id} cannot be undone"
        )));
    }
    let commands: Vec<UndoCommand> =
        serde_json::from_str(last.update_commands_bin.as_deref().unwrap_or("[]"))
            .map_err(|e| internal(format!("repair_workflow_history {history_id}: {e}")))?;
    let restored = reverse(call, &mut tx, id, &commands)
        .await?
        .ok_or_else(|| {
            internal(format!(
                "repair_workflow_history {history_id} restores no state"
            ))
        })?;
    let state = wf
        .state(&restored)
        .ok_or_else(|| internal(format!("undo to unknown state {restored}")))?;
    let delete = Query::delete()
        .from_table(a("repair_workflow_history"))
        .and_where(Expr::col(a("repair_workflow_history_id")).eq(history_id))
        .to_owned();
    tx.execute(&delete).await?;
    let event = record_event(
        call,
        &mut tx,
        id,
        &repair.workflow_state_id,
        "undo",
        &json!({"undone": {
            "repair_workflow_history_id": history_id,
            "start_state_id": last.start_state_id,
            "end_state_id": last.end_state_id,
        }}),
        Some(&restored),
    )
    .await?;
    let mut update = point_at_event(id, event);
    modified(&mut update, call);
    tx.execute(&update).await?;
    enter_state(call, &mut tx, id, &restored).await?;
    tx.commit().await?;
    Ok(state)
}

/// Applies `commands` of repair `id` in reverse order; returns the state
/// the last `RestoreRepair` put back.
async fn reverse(
    call: &Call<'_>,
    tx: &mut Tx,
    id: i64,
    commands: &[UndoCommand],
) -> Result<Option<String>, ApiError> {
    let mut restored = None;
    for command in commands.iter().rev() {
        match command {
            UndoCommand::RestoreRepair {
                workflow_state_id,
                context,
                latest_workflow_event_id,
                measured_battery_capacity,
            } => {
                let mut update = Query::update();
                update
                    .table(a("repair"))
                    .value(a("workflow_state_id"), workflow_state_id.clone())
                    .value(a("context"), context.clone())
                    .value(a("latest_workflow_event_id"), *latest_workflow_event_id)
                    .value(a("measured_battery_capacity"), *measured_battery_capacity)
                    .and_where(Expr::col(a("repair_id")).eq(id));
                tx.execute(&update).await?;
                restored = Some(workflow_state_id.clone());
            }
            UndoCommand::Delete { table, id: row } => {
                let delete = Query::delete()
                    .from_table(a(table.name()))
                    .and_where(Expr::col(a(table.key())).eq(*row))
                    .to_owned();
                tx.execute(&delete).await?;
            }
            UndoCommand::ReopenPartLink {
                part_product_linker_id,
            } => {
                let mut update = Query::update();
                update
                    .table(a("part_product_linker"))
                    .value(a("date_removed"), Value::ChronoDateTime(None))
                    .value(a("removed_repair_id"), Value::BigInt(None))
                    .and_where(Expr::col(a("part_product_linker_id")).eq(*part_product_linker_id));
                modified(&mut update, call);
                tx.execute(&update).await?;
            }
        }
    }
    Ok(restored)
}
