//! The state changes a transition makes besides moving the repair: its
//! effects (a replaced part, recorded part types, the measured battery
//! capacity) and, on entering an end state, the end of the repair. Each
//! row an effect writes is paired with the [`UndoCommand`] that reverses it.

use sea_query::{Expr, LockType, Query, UpdateStatement, Value};
use serde_json::Value as Json;

use super::reads::{
    current_part, outside_repair_system, product_type_of, replacement_rule_applies,
};
use super::undo::{UndoCommand, UndoTable};
use super::{insert, internal, modified, Call, Conn, Repair};
use crate::db::Tx;
use crate::error::ApiError;
use crate::repairs::definition::{resolve_input, Effect, End, ProductState, State, Workflow};
use crate::repairs::engine::{self, Context};
use crate::rows::{a, c};

/// Inserts a row the transition adds, and the command that deletes it again.
async fn insert_undoable(
    call: &Call<'_>,
    tx: &mut Tx,
    table: UndoTable,
    values: Vec<(&str, Value)>,
    commands: &mut Vec<UndoCommand>,
) -> Result<i64, ApiError> {
    let id = insert(call, tx, table.name(), values, table.key()).await?;
    commands.push(UndoCommand::Delete { table, id });
    Ok(id)
}

/// A `repair_part_type_linker` row: the repair replaced a part of
/// `old_type` by one of `new_type` (`new_part` when a part row was made).
struct ReplacedPartType {
    old_type: Option<i64>,
    new_part: Option<i64>,
    new_type: i64,
    non_transferable: bool,
}

async fn record_part_type(
    call: &Call<'_>,
    tx: &mut Tx,
    repair: &Repair,
    replaced: ReplacedPartType,
    commands: &mut Vec<UndoCommand>,
) -> Result<(), ApiError> {
    insert_undoable(
        call,
        tx,
        UndoTable::RepairPartTypeLinker,
        vec![
            ("repair_id", repair.repair_id.into()),
            ("old_part_type_id", replaced.old_type.into()),
            ("new_part_id", replaced.new_part.into()),
            ("new_part_type_id", replaced.new_type.into()),
            ("requested_date", call.now.into()),
            ("replaced_date", call.now.into()),
            ("non_transferable", replaced.non_transferable.into()),
        ],
        commands,
    )
    .await?;
    Ok(())
}

/// Applies one effect of a transition from `state`, whose inputs are
/// `values`: repair columns go into `update`, other rows are written now.
#[allow(clippy::too_many_arguments)]
pub(super) async fn apply_effect(
    call: &Call<'_>,
    tx: &mut Tx,
    repair: &Repair,
    wf: &Workflow,
    state: &State,
    values: &Context,
    effect: &Effect,
    update: &mut UpdateStatement,
    commands: &mut Vec<UndoCommand>,
) -> Result<(), ApiError> {
    match effect {
        Effect::SetBatteryCapacity { input } => {
            let v = engine::lookup(values, state, input).and_then(Json::as_f64);
            update.value(a("measured_battery_capacity"), v);
        }
        Effect::RecordPartTypes { input } => {
            let selected = engine::lookup(values, state, input)
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            for part_type in selected.iter().filter_map(Json::as_i64) {
                let replaced = ReplacedPartType {
                    old_type: Some(part_type),
                    new_part: None,
                    new_type: part_type,
                    non_transferable: false,
                };
                record_part_type(call, tx, repair, replaced, commands).await?;
            }
        }
        Effect::ReplacePart { part_type_input } => {
            let spec = resolve_input(wf, state, part_type_input)
                .ok_or_else(|| internal(format!("unknown input {part_type_input}")))?;
            let category = spec
                .replacement_options
                .as_ref()
                .map(|r| r.part_type_category_id)
                .unwrap_or_default();
            let new_type = engine::lookup(values, state, part_type_input)
                .and_then(Json::as_i64)
                .ok_or_else(|| internal(format!("input {part_type_input} has no part type")))?;
            replace_part(call, tx, repair, category, new_type, commands).await?;
        }
    }
    Ok(())
}

/// Replaces the unit's current part of `category` (if any) by a new part of
/// `new_type`: the new `part`, the old link closed, the new link, and the
/// `repair_part_type_linker` row.
async fn replace_part(
    call: &Call<'_>,
    tx: &mut Tx,
    repair: &Repair,
    category: i64,
    new_type: i64,
    commands: &mut Vec<UndoCommand>,
) -> Result<(), ApiError> {
    let imei = repair.product_imei.as_str();
    let old = current_part(&mut Conn::Tx(tx), imei, category).await?;
    let part_id = insert_undoable(
        call,
        tx,
        UndoTable::Part,
        vec![("part_type_id", new_type.into())],
        commands,
    )
    .await?;
    if let Some(old) = old {
        let link = old.part_product_linker_id;
        let mut close = Query::update();
        close
            .table(a("part_product_linker"))
            .value(a("date_removed"), call.now)
            .value(a("removed_repair_id"), repair.repair_id)
            .and_where(Expr::col(a("part_product_linker_id")).eq(link));
        modified(&mut close, call);
        tx.execute(&close).await?;
        commands.push(UndoCommand::ReopenPartLink {
            part_product_linker_id: link,
        });
    }
    insert_undoable(
        call,
        tx,
        UndoTable::PartProductLinker,
        vec![
            ("part_id", part_id.into()),
            ("product_imei", imei.into()),
            ("date_added", call.now.into()),
            ("added_repair_id", repair.repair_id.into()),
            ("replaced_part_id", old.map(|p| p.part_id).into()),
        ],
        commands,
    )
    .await?;
    let old_type = old.map(|p| p.part_type_id);
    let replaced = ReplacedPartType {
        old_type,
        new_part: Some(part_id),
        new_type,
        non_transferable: non_transferable(tx, imei, old_type, new_type).await?,
    };
    record_part_type(call, tx, repair, replaced, commands).await
}

/// A replacement rule's `non_transferable` flag.
#[derive(Debug, sqlx::FromRow)]
struct NonTransferable {
    non_transferable: bool,
}

/// `non_transferable` of the replacement rule used, false when none is recorded.
async fn non_transferable(
    tx: &mut Tx,
    imei: &str,
    old_type: Option<i64>,
    new_type: i64,
) -> Result<bool, ApiError> {
    let Some(old_type) = old_type else {
        return Ok(false);
    };
    let product_type = product_type_of(&mut Conn::Tx(tx), imei)
        .await?
        .unwrap_or(-1);
    let stmt = Query::select()
        .expr(c("part_type_replacement_linker", "non_transferable"))
        .from(a("part_type_replacement_linker"))
        .and_where(c("part_type_replacement_linker", "existing_part_type_id").eq(old_type))
        .and_where(c("part_type_replacement_linker", "replacement_part_type_id").eq(new_type))
        .and_where(replacement_rule_applies(product_type))
        .limit(1)
        .to_owned();
    let rule: Option<NonTransferable> = tx.fetch_typed_optional(&stmt).await?;
    Ok(rule.is_some_and(|r| r.non_transferable))
}

/// Ends the repair: outcome, process, refurbishment date, and the unit
/// leaves IN_REPAIR_SYSTEM.
pub(super) async fn end_repair(
    call: &Call<'_>,
    tx: &mut Tx,
    repair: &Repair,
    end: &End,
    update: &mut UpdateStatement,
) -> Result<(), ApiError> {
    update
        .value(a("outcome"), end.product_state.as_str())
        .value(a("pending_status"), false)
        .value(a("process"), end.process.clone());
    if end.product_state == ProductState::Activated {
        update.value(a("refurbishment_date"), call.now.date());
    }
    change_product_state(
        call,
        tx,
        &repair.product_imei,
        end.product_state.state_type_id(),
    )
    .await
}

/// The unit's latest `state` row.
#[derive(Debug, sqlx::FromRow)]
struct LatestState {
    latest_state_id: Option<i64>,
}

/// Ends a repair by moving the unit out of IN_REPAIR_SYSTEM.
///
/// Moves the unit from IN_REPAIR_SYSTEM to `new_state_type` inside the
/// caller's transaction: a new `state` row and `product.latest_state_id`.
/// The state change itself is `actions::state::transition`, so the
/// transition table and the product-status notification live in one place.
async fn change_product_state(
    call: &Call<'_>,
    tx: &mut Tx,
    imei: &str,
    new_state_type: i64,
) -> Result<(), ApiError> {
    let mut lock = Query::select();
    lock.expr(c("product", "latest_state_id"))
        .from(a("product"))
        .and_where(c("product", "product_imei").eq(imei))
        .lock_with_tables(LockType::Update, [a("product")]);
    let latest: Option<LatestState> = tx.fetch_typed_optional(&lock).await?;
    let latest = latest.and_then(|r| r.latest_state_id);
    if let Some(now) = outside_repair_system(&mut Conn::Tx(tx), latest).await? {
        return Err(ApiError::BadRequest(format!(
            "Product {imei} is no longer IN_REPAIR_SYSTEM (it is in {now}); the repair cannot end"
        )));
    }
    // The shared state-change service: the transition table, the `state`
    // row and the product-status notification, in this transaction.
    let product = crate::actions::lock_product(tx, &crate::query::Visibility::Global, imei).await?;
    crate::actions::state::transition(
        tx,
        &product,
        new_state_type,
        &call.user.username,
        crate::values::now(),
    )
    .await
}
