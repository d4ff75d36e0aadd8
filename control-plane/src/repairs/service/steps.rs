//! A workflow step: a technician's inputs or event, checked by the engine,
//! recorded in the audit trail, and, when it fires a transition, the
//! transition's effects, its history row (with the commands that undo it)
//! and the visit of the new state.

use sea_query::{Expr, Query, UpdateStatement};
use serde_json::{json, Map, Value as Json};

use super::effects::{apply_effect, end_repair};
use super::reads::{choice_values, fetch_repair, locate, resolve_choices};
use super::undo::UndoCommand;
use super::{insert, internal, modified, Call, Conn};
use crate::db::Tx;
use crate::error::ApiError;
use crate::repairs::definition::Lang;
use crate::repairs::engine::{self, Action, EngineError};
use crate::rows::a;

/// Applies a technician's inputs or event to repair `id`.
pub async fn act(call: &Call<'_>, id: i64, action: Action<'_>) -> Result<(), ApiError> {
    let mut tx = call.app.db.begin().await?;
    let repair = fetch_repair(call, &mut Conn::Tx(&mut tx), id, true).await?;
    if let Some(outcome) = &repair.outcome {
        return Err(ApiError::BadRequest(format!(
            "Repair {id} is finished (outcome {outcome}); it takes no more inputs or events"
        )));
    }
    let (wf, state) = locate(call.workflows, &repair)?;
    let choices = resolve_choices(&mut Conn::Tx(&mut tx), &repair, state, Lang::En).await?;
    let step = engine::apply(wf, state, &repair.context, action, &choice_values(&choices))
        .map_err(engine_error)?;
    let (event_id, payload) = match action {
        Action::Inputs(inputs) => ("inputs", json!({ "inputs": inputs })),
        Action::Event(e) => (e, json!({ "event": e })),
    };
    let to = step.transition.map(|t| t.to.as_str());
    let event = record_event(call, &mut tx, id, &state.ident, event_id, &payload, to).await?;
    let mut update = point_at_event(id, event);
    modified(&mut update, call);
    if let Some(t) = step.transition {
        let target = wf
            .state(&t.to)
            .ok_or_else(|| internal(format!("unknown state {}", t.to)))?;
        let mut commands = vec![UndoCommand::RestoreRepair {
            workflow_state_id: repair.workflow_state_id.clone(),
            context: serde_json::to_string(&repair.context).unwrap_or_default(),
            latest_workflow_event_id: repair.latest_workflow_event_id,
            measured_battery_capacity: repair.measured_battery_capacity,
        }];
        for effect in &t.effects {
            apply_effect(
                call,
                &mut tx,
                &repair,
                wf,
                state,
                &step.values,
                effect,
                &mut update,
                &mut commands,
            )
            .await?;
        }
        update.value(a("workflow_state_id"), t.to.clone());
        if let Some(end) = &target.end {
            end_repair(call, &mut tx, &repair, end, &mut update).await?;
        }
        let can_undo = target.end.is_none();
        insert(
            call,
            &mut tx,
            "repair_workflow_history",
            vec![
                ("repair_id", id.into()),
                ("start_state_id", state.ident.clone().into()),
                ("end_state_id", t.to.clone().into()),
                (
                    "update_commands_bin",
                    serde_json::to_string(&commands).unwrap_or_default().into(),
                ),
                ("can_undo", can_undo.into()),
            ],
            "repair_workflow_history_id",
        )
        .await?;
        enter_state(call, &mut tx, id, &t.to).await?;
    }
    update.value(
        a("context"),
        serde_json::to_string(&step.context).unwrap_or_default(),
    );
    tx.execute(&update).await?;
    tx.commit().await?;
    Ok(())
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Invalid(violations) => {
            let mut m = Map::new();
            for v in violations {
                m.insert(v.input.clone(), Json::String(v.to_string()));
            }
            ApiError::Validation(m)
        }
        EngineError::UnknownEvent { .. } => ApiError::field("event", e.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Writes the audit row of an action on the repair; returns its id.
pub(super) async fn record_event(
    call: &Call<'_>,
    tx: &mut Tx,
    repair_id: i64,
    current: &str,
    event_id: &str,
    payload: &Json,
    next: Option<&str>,
) -> Result<i64, ApiError> {
    Ok(insert(
        call,
        tx,
        "repair_workflow_event",
        vec![
            ("repair_id", repair_id.into()),
            ("current_state_id", current.into()),
            ("event_id", event_id.into()),
            ("payload", payload.to_string().into()),
            ("next_state_id", next.map(str::to_string).into()),
        ],
        "repair_workflow_event_id",
    )
    .await?)
}

/// `UPDATE repair SET latest_workflow_event_id = event WHERE repair_id = ...`,
/// to which a step adds the columns it changes.
pub(super) fn point_at_event(repair_id: i64, event: i64) -> UpdateStatement {
    Query::update()
        .table(a("repair"))
        .value(a("latest_workflow_event_id"), event)
        .and_where(Expr::col(a("repair_id")).eq(repair_id))
        .to_owned()
}

/// Closes the open visit of the repair and opens one of `state`.
pub(super) async fn enter_state(
    call: &Call<'_>,
    tx: &mut Tx,
    repair_id: i64,
    state: &str,
) -> Result<(), ApiError> {
    let mut close = Query::update();
    close
        .table(a("repair_workflow_state"))
        .value(a("exit_time"), call.now)
        .and_where(Expr::col(a("repair_id")).eq(repair_id))
        .and_where(Expr::col(a("exit_time")).is_null());
    modified(&mut close, call);
    tx.execute(&close).await?;
    insert(
        call,
        tx,
        "repair_workflow_state",
        vec![
            ("repair_id", repair_id.into()),
            ("state_id", state.into()),
            ("entry_time", call.now.into()),
        ],
        "repair_workflow_state_id",
    )
    .await?;
    Ok(())
}
