//! Repairs in the database: create and find repairs, apply workflow steps
//! with their effects, undo them, and the read models of the endpoints.
//!
//! Every step runs in one transaction that locks the repair row
//! (`FOR UPDATE` on PostgreSQL; SQLite has a single writer), so two
//! technicians pressing buttons on one repair cannot interleave. Each step
//! writes:
//! - `repair_workflow_event`: the audit trail, one row per action (inputs,
//!   events, creation, undo), with its payload;
//! - `repair_workflow_history`: one row per transition, carrying the
//!   commands that undo it (`update_commands_bin`, JSON);
//! - `repair_workflow_state`: entry and exit time of every visit to a state;
//! - the effects' rows (`part`, `part_product_linker`,
//!   `repair_part_type_linker`) and the `repair` row itself.
//!
//! Every read and lock applies the user's ENTITY scope, so another
//! entity's repair is indistinguishable from a missing one (404).

use std::collections::HashMap;

use chrono::NaiveDateTime;
use sea_query::{
    Expr, LockType, Order, Query, SelectStatement, SimpleExpr, UpdateStatement, Value,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use super::definition::{resolve_input, Effect, End, Lang, State, Workflow, Workflows};
use super::engine::{self, Action, Context, EngineError};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType};
use crate::db::{Db, DbError, Row, Tx};
use crate::error::ApiError;
use crate::query::scope_condition;
use crate::rows::{a, c, col, to_columns};

/// `state_type_id` of IN_REPAIR_SYSTEM (spec: change_state).
pub const IN_REPAIR_SYSTEM: i64 = 8;

/// Everything a service call needs about its request.
pub struct Call<'a> {
    pub app: &'a AppState,
    pub workflows: &'a Workflows,
    pub user: &'a AuthUser,
    pub now: NaiveDateTime,
}

/// A repair row, as the workflow needs it.
#[derive(Debug, Clone)]
pub struct Repair {
    pub repair_id: i64,
    pub product_imei: String,
    pub workflow_name: String,
    pub workflow_state_id: String,
    pub context: Context,
    pub latest_workflow_event_id: Option<i64>,
    pub measured_battery_capacity: Option<f64>,
    pub outcome: Option<String>,
    pub created_by: Option<String>,
}

/// One option of a selection, resolved for display.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: Json,
    pub label: String,
}

/// What get_repair answers.
#[derive(Debug)]
pub struct Found {
    pub repair_id: i64,
    pub config: Option<Map<String, Json>>,
    pub created: bool,
}

/// The inverse of one write of a transition (`update_commands_bin`),
/// applied in reverse order by undo.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum UndoCommand {
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
enum UndoTable {
    Part,
    PartProductLinker,
    RepairPartTypeLinker,
}

impl UndoTable {
    fn name(self) -> &'static str {
        match self {
            Self::Part => "part",
            Self::PartProductLinker => "part_product_linker",
            Self::RepairPartTypeLinker => "repair_part_type_linker",
        }
    }
}

// ----------------------------------------------------------------------------
// Small SQL helpers.

/// Reads through the pool, or through the caller's transaction.
enum Conn<'a> {
    Db(&'a Db),
    Tx(&'a mut Tx),
}

impl Conn<'_> {
    async fn fetch_all(
        &mut self,
        stmt: &SelectStatement,
        columns: &[&Column],
    ) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Db(db) => db.fetch_all(stmt, columns).await,
            Self::Tx(tx) => tx.fetch_all(stmt, columns).await,
        }
    }
}

async fn insert(
    tx: &mut Tx,
    table: &str,
    values: Vec<(&str, Value)>,
    pk: &str,
) -> Result<i64, DbError> {
    let stmt = Query::insert()
        .into_table(a(table))
        .columns(values.iter().map(|(n, _)| a(n)))
        .values_panic(values.into_iter().map(|(_, v)| SimpleExpr::Value(v)))
        .returning(Query::returning().column(a(pk)))
        .to_owned();
    let row = tx
        .fetch_optional(&stmt, &[&col(pk, ColumnType::Int)])
        .await?;
    Ok(row
        .and_then(|r| r.get(pk).and_then(Json::as_i64))
        .unwrap_or_default())
}

fn with_meta(
    mut values: Vec<(&'static str, Value)>,
    call: &Call<'_>,
) -> Vec<(&'static str, Value)> {
    values.push(("created_at", call.now.into()));
    values.push(("created_by", call.user.username.clone().into()));
    values
}

fn modified(stmt: &mut UpdateStatement, call: &Call<'_>) {
    stmt.value(a("modified_at"), call.now)
        .value(a("modified_by"), call.user.username.clone());
}

fn internal(message: String) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(message))
}

// ----------------------------------------------------------------------------
// Reading repairs.

const REPAIR_COLUMNS: [(&str, ColumnType); 9] = [
    ("repair_id", ColumnType::Int),
    ("product_imei", ColumnType::String),
    ("workflow_name", ColumnType::String),
    ("workflow_state_id", ColumnType::String),
    ("context", ColumnType::String),
    ("latest_workflow_event_id", ColumnType::Int),
    ("measured_battery_capacity", ColumnType::Float),
    ("outcome", ColumnType::String),
    ("created_by", ColumnType::Text),
];

/// The repair `id` if the user may see it; `lock` takes the row lock.
async fn fetch_repair(
    call: &Call<'_>,
    conn: &mut Conn<'_>,
    id: i64,
    lock: bool,
) -> Result<Repair, ApiError> {
    let cat = &call.app.catalogue;
    let table = cat.table("repair").expect("repair is in the catalogue");
    let columns: Vec<Column> = to_columns(&REPAIR_COLUMNS);
    let mut stmt = Query::select();
    for (n, _) in REPAIR_COLUMNS {
        stmt.expr(c("repair", n));
    }
    stmt.from(a("repair"))
        .and_where(c("repair", "repair_id").eq(id));
    if let Some(scope) = scope_condition(cat, table, &call.user.visibility) {
        stmt.and_where(scope);
    }
    if lock {
        stmt.lock_with_tables(LockType::Update, [a("repair")]);
    }
    let refs: Vec<&Column> = columns.iter().collect();
    let row = conn
        .fetch_all(&stmt, &refs)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("Repair {id} not found")))?;
    repair_from_row(&row)
}

fn repair_from_row(row: &Row) -> Result<Repair, ApiError> {
    let text = |k: &str| row.get(k).and_then(Json::as_str).map(str::to_string);
    let id = row
        .get("repair_id")
        .and_then(Json::as_i64)
        .unwrap_or_default();
    let (Some(workflow_name), Some(workflow_state_id)) =
        (text("workflow_name"), text("workflow_state_id"))
    else {
        return Err(ApiError::BadRequest(format!(
            "Repair {id} has no repair workflow (it was not created through get_repair)"
        )));
    };
    let context = match text("context") {
        Some(t) if !t.is_empty() => serde_json::from_str::<Context>(&t)
            .map_err(|e| internal(format!("repair {id}: bad context: {e}")))?,
        _ => Context::new(),
    };
    Ok(Repair {
        repair_id: id,
        product_imei: text("product_imei").unwrap_or_default(),
        workflow_name,
        workflow_state_id,
        context,
        latest_workflow_event_id: row.get("latest_workflow_event_id").and_then(Json::as_i64),
        measured_battery_capacity: row.get("measured_battery_capacity").and_then(Json::as_f64),
        outcome: text("outcome"),
        created_by: text("created_by"),
    })
}

/// The workflow and current state of `repair`.
pub fn locate<'w>(
    workflows: &'w Workflows,
    repair: &Repair,
) -> Result<(&'w Workflow, &'w State), ApiError> {
    let wf = workflows.get(&repair.workflow_name).ok_or_else(|| {
        internal(format!(
            "repair {} uses workflow '{}', which is not installed",
            repair.repair_id, repair.workflow_name
        ))
    })?;
    let state = wf.state(&repair.workflow_state_id).ok_or_else(|| {
        internal(format!(
            "repair {} is in state '{}', which workflow '{}' does not have",
            repair.repair_id, repair.workflow_state_id, wf.name
        ))
    })?;
    Ok((wf, state))
}

async fn product_type_of(conn: &mut Conn<'_>, imei: &str) -> Result<Option<i64>, ApiError> {
    let stmt = Query::select()
        .expr(c("product", "product_type_id"))
        .from(a("product"))
        .and_where(c("product", "product_imei").eq(imei))
        .to_owned();
    let rows = conn
        .fetch_all(&stmt, &[&col("product_type_id", ColumnType::Int)])
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.get("product_type_id").and_then(Json::as_i64)))
}

/// The unit's current part of a category: (linker id, part id, part type id).
async fn current_part(
    conn: &mut Conn<'_>,
    imei: &str,
    category: i64,
) -> Result<Option<(i64, i64, i64)>, ApiError> {
    let stmt = Query::select()
        .expr(c("part_product_linker", "part_product_linker_id"))
        .expr(c("part", "part_id"))
        .expr(c("part", "part_type_id"))
        .from(a("part_product_linker"))
        .inner_join(
            a("part"),
            c("part", "part_id").equals((a("part_product_linker"), a("part_id"))),
        )
        .inner_join(
            a("part_type"),
            c("part_type", "part_type_id").equals((a("part"), a("part_type_id"))),
        )
        .and_where(c("part_product_linker", "product_imei").eq(imei))
        .and_where(c("part_product_linker", "date_removed").is_null())
        .and_where(c("part_type", "part_type_category_id").eq(category))
        .order_by(
            (a("part_product_linker"), a("part_product_linker_id")),
            Order::Desc,
        )
        .limit(1)
        .to_owned();
    let cols = [
        col("part_product_linker_id", ColumnType::Int),
        col("part_id", ColumnType::Int),
        col("part_type_id", ColumnType::Int),
    ];
    let rows = conn
        .fetch_all(&stmt, &cols.iter().collect::<Vec<_>>())
        .await?;
    Ok(rows.first().map(|r| {
        let i = |k: &str| r.get(k).and_then(Json::as_i64).unwrap_or_default();
        (i("part_product_linker_id"), i("part_id"), i("part_type_id"))
    }))
}

/// The options of the selection inputs of `state`, labels in `lang`.
/// Replacement options are the part types `part_type_replacement_linker`
/// allows for the unit's product type in place of its current part of the
/// category (any part of the category when the unit has none recorded),
/// in linker order, each once.
async fn resolve_choices(
    conn: &mut Conn<'_>,
    repair: &Repair,
    state: &State,
    lang: Lang,
) -> Result<HashMap<String, Vec<Choice>>, ApiError> {
    let mut out = HashMap::new();
    for input in &state.inputs {
        if let Some(rep) = &input.replacement_options {
            let product_type = product_type_of(conn, &repair.product_imei).await?;
            let current = current_part(conn, &repair.product_imei, rep.part_type_category_id)
                .await?
                .map(|(_, _, t)| t);
            let stmt = Query::select()
                .expr(c("part_type_replacement_linker", "existing_part_type_id"))
                .expr(c(
                    "part_type_replacement_linker",
                    "replacement_part_type_id",
                ))
                .expr_as(c("replacement", "name"), a("name"))
                .from(a("part_type_replacement_linker"))
                .join_as(
                    sea_query::JoinType::InnerJoin,
                    a("part_type"),
                    a("existing"),
                    c("existing", "part_type_id").equals((
                        a("part_type_replacement_linker"),
                        a("existing_part_type_id"),
                    )),
                )
                .join_as(
                    sea_query::JoinType::InnerJoin,
                    a("part_type"),
                    a("replacement"),
                    c("replacement", "part_type_id").equals((
                        a("part_type_replacement_linker"),
                        a("replacement_part_type_id"),
                    )),
                )
                .and_where(c("existing", "part_type_category_id").eq(rep.part_type_category_id))
                .and_where(
                    c("part_type_replacement_linker", "product_type_id")
                        .eq(product_type.unwrap_or(-1))
                        .or(c("part_type_replacement_linker", "product_type_id").is_null()),
                )
                .order_by(
                    (
                        a("part_type_replacement_linker"),
                        a("part_type_replacement_linker_id"),
                    ),
                    Order::Asc,
                )
                .to_owned();
            let cols = [
                col("existing_part_type_id", ColumnType::Int),
                col("replacement_part_type_id", ColumnType::Int),
                col("name", ColumnType::String),
            ];
            let rows = conn
                .fetch_all(&stmt, &cols.iter().collect::<Vec<_>>())
                .await?;
            let fits_current = |r: &Row| {
                current.is_none_or(|t| {
                    r.get("existing_part_type_id").and_then(Json::as_i64) == Some(t)
                })
            };
            let use_current = rows.iter().any(fits_current);
            let mut choices: Vec<Choice> = Vec::new();
            for r in rows.iter().filter(|r| !use_current || fits_current(r)) {
                let value = r
                    .get("replacement_part_type_id")
                    .cloned()
                    .unwrap_or(Json::Null);
                if !choices.iter().any(|ch| ch.value == value) {
                    choices.push(Choice {
                        value,
                        label: r
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
            }
            out.insert(input.ident.clone(), choices);
        } else if !input.options.is_empty() {
            out.insert(
                input.ident.clone(),
                input
                    .options
                    .iter()
                    .map(|o| Choice {
                        value: o.value.clone(),
                        label: o.label.get(lang).to_string(),
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

fn choice_values(choices: &HashMap<String, Vec<Choice>>) -> HashMap<String, Vec<Json>> {
    choices
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|ch| ch.value.clone()).collect()))
        .collect()
}

/// The repair, its state and the state's selection options (for current_state).
pub async fn current_state<'w>(
    call: &Call<'w>,
    id: i64,
    lang: Lang,
) -> Result<(&'w State, HashMap<String, Vec<Choice>>), ApiError> {
    let mut conn = Conn::Db(&call.app.db);
    let repair = fetch_repair(call, &mut conn, id, false).await?;
    let (_, state) = locate(call.workflows, &repair)?;
    let choices = resolve_choices(&mut conn, &repair, state, lang).await?;
    Ok((state, choices))
}

/// The states the repair went through, oldest first, ending with the
/// current one (undone transitions are not part of it).
pub async fn history<'w>(call: &Call<'w>, id: i64) -> Result<Vec<&'w State>, ApiError> {
    let mut conn = Conn::Db(&call.app.db);
    let repair = fetch_repair(call, &mut conn, id, false).await?;
    let (wf, current) = locate(call.workflows, &repair)?;
    let stmt = Query::select()
        .expr(c("repair_workflow_history", "start_state_id"))
        .from(a("repair_workflow_history"))
        .and_where(c("repair_workflow_history", "repair_id").eq(id))
        .order_by(
            (
                a("repair_workflow_history"),
                a("repair_workflow_history_id"),
            ),
            Order::Asc,
        )
        .to_owned();
    let rows = conn
        .fetch_all(&stmt, &[&col("start_state_id", ColumnType::String)])
        .await?;
    let mut states: Vec<&State> = rows
        .iter()
        .filter_map(|r| r.get("start_state_id").and_then(Json::as_str))
        .filter_map(|s| wf.state(s))
        .collect();
    states.push(current);
    Ok(states)
}

/// Filters of list_current_states.
#[derive(Debug, Default)]
pub struct ListFilters {
    pub entity_id: Option<i64>,
    pub username: Option<String>,
    pub repair_state: Option<String>,
}

/// Open repairs the user may see, newest first.
pub async fn list_current(call: &Call<'_>, filters: &ListFilters) -> Result<Vec<Repair>, ApiError> {
    let cat = &call.app.catalogue;
    let table = cat.table("repair").expect("repair is in the catalogue");
    let mut stmt = Query::select();
    for (n, _) in REPAIR_COLUMNS {
        stmt.expr(c("repair", n));
    }
    stmt.from(a("repair"))
        .and_where(c("repair", "outcome").is_null())
        .and_where(c("repair", "workflow_name").is_not_null())
        .and_where(c("repair", "workflow_state_id").is_not_null())
        .order_by((a("repair"), a("repair_id")), Order::Desc);
    if let Some(scope) = scope_condition(cat, table, &call.user.visibility) {
        stmt.and_where(scope);
    }
    if let Some(entity) = filters.entity_id {
        let linked = Query::select()
            .expr(c("product_entity_linker", "product_imei"))
            .from(a("product_entity_linker"))
            .and_where(c("product_entity_linker", "entity_id").eq(entity))
            .and_where(c("product_entity_linker", "date_removed").is_null())
            .to_owned();
        stmt.and_where(c("repair", "product_imei").in_subquery(linked));
    }
    if let Some(user) = &filters.username {
        stmt.and_where(c("repair", "created_by").eq(user.as_str()));
    }
    if let Some(state) = &filters.repair_state {
        stmt.and_where(c("repair", "workflow_state_id").eq(state.as_str()));
    }
    let columns: Vec<Column> = to_columns(&REPAIR_COLUMNS);
    let rows = call
        .app
        .db
        .fetch_all(&stmt, &columns.iter().collect::<Vec<_>>())
        .await?;
    rows.iter().map(repair_from_row).collect()
}

// ----------------------------------------------------------------------------
// get_repair: find or create.

/// The unit's open repair, created on the first call (spec: get_repair).
pub async fn get_repair(call: &Call<'_>, imei: &str) -> Result<Found, ApiError> {
    let cat = &call.app.catalogue;
    let db = &call.app.db;
    let product = cat.table("product").expect("product is in the catalogue");
    let mut stmt = Query::select();
    stmt.expr(c("product", "product_type_id"))
        .expr(c("product", "latest_state_id"))
        .from(a("product"))
        .and_where(c("product", "product_imei").eq(imei));
    if let Some(scope) = scope_condition(cat, product, &call.user.visibility) {
        stmt.and_where(scope);
    }
    let row = db
        .fetch_optional(
            &stmt,
            &[
                &col("product_type_id", ColumnType::Int),
                &col("latest_state_id", ColumnType::Int),
            ],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Product {imei} not found")))?;
    let product_type_id = row
        .get("product_type_id")
        .and_then(Json::as_i64)
        .unwrap_or_default();
    let state_type = current_state_type(
        &mut Conn::Db(db),
        row.get("latest_state_id").and_then(Json::as_i64),
    )
    .await?;
    if state_type.as_ref().map(|(id, _)| *id) != Some(IN_REPAIR_SYSTEM) {
        let now = state_type.map_or_else(|| "no state".to_string(), |(_, name)| name);
        return Err(ApiError::BadRequest(format!(
            "Product {imei} is not in state IN_REPAIR_SYSTEM (it is in {now}); a repair can only be started for a unit in IN_REPAIR_SYSTEM"
        )));
    }
    if let Some(found) = open_repair(call, imei, product_type_id).await? {
        return Ok(found);
    }
    let wf = select_workflow(call, imei, product_type_id).await?;
    let mut tx = db.begin().await?;
    let created = insert_repair(call, &mut tx, imei, wf).await;
    match created {
        Ok(id) => {
            tx.commit().await?;
            Ok(Found {
                repair_id: id,
                config: wf.config_for(product_type_id).cloned(),
                created: true,
            })
        }
        // A concurrent first call created it: answer with that one.
        Err(ApiError::Validation(_)) => {
            drop(tx);
            open_repair(call, imei, product_type_id)
                .await?
                .ok_or_else(|| internal(format!("repair for {imei} vanished")))
        }
        Err(e) => Err(e),
    }
}

async fn current_state_type(
    conn: &mut Conn<'_>,
    latest_state_id: Option<i64>,
) -> Result<Option<(i64, String)>, ApiError> {
    let Some(state_id) = latest_state_id else {
        return Ok(None);
    };
    let stmt = Query::select()
        .expr(c("state", "current_state_type"))
        .expr(c("state_type", "name"))
        .from(a("state"))
        .inner_join(
            a("state_type"),
            c("state_type", "state_type_id").equals((a("state"), a("current_state_type"))),
        )
        .and_where(c("state", "state_id").eq(state_id))
        .to_owned();
    let rows = conn
        .fetch_all(
            &stmt,
            &[
                &col("current_state_type", ColumnType::Int),
                &col("name", ColumnType::String),
            ],
        )
        .await?;
    Ok(rows.first().map(|r| {
        (
            r.get("current_state_type")
                .and_then(Json::as_i64)
                .unwrap_or_default(),
            r.get("name")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    }))
}

async fn open_repair(
    call: &Call<'_>,
    imei: &str,
    product_type_id: i64,
) -> Result<Option<Found>, ApiError> {
    let stmt = Query::select()
        .expr(c("repair", "repair_id"))
        .expr(c("repair", "workflow_name"))
        .from(a("repair"))
        .and_where(c("repair", "product_imei").eq(imei))
        .and_where(c("repair", "outcome").is_null())
        .order_by((a("repair"), a("repair_id")), Order::Desc)
        .limit(1)
        .to_owned();
    let row = call
        .app
        .db
        .fetch_optional(
            &stmt,
            &[
                &col("repair_id", ColumnType::Int),
                &col("workflow_name", ColumnType::String),
            ],
        )
        .await?;
    Ok(row.map(|r| Found {
        repair_id: r
            .get("repair_id")
            .and_then(Json::as_i64)
            .unwrap_or_default(),
        config: r
            .get("workflow_name")
            .and_then(Json::as_str)
            .and_then(|n| call.workflows.get(n))
            .and_then(|wf| wf.config_for(product_type_id))
            .cloned(),
        created: false,
    }))
}

/// A `repair_workflow_selector` rule (both text columns are `NOT NULL`; a
/// rule without `workflow_name` forbids).
#[derive(Debug, sqlx::FromRow)]
struct SelectorRule {
    repair_workflow_selector_id: i64,
    workflow_name: Option<String>,
    selector_type: String,
    selector_value: String,
}

/// The workflow for a new repair: a `repair_workflow_selector` rule of the
/// product type matching the user (USER, by username), else one matching
/// the GEIC of the user's entity, else of the unit's entity (ENTITY); else
/// the product type's default workflow. A matching rule without a
/// workflow name forbids the repair (403).
async fn select_workflow<'w>(
    call: &Call<'w>,
    imei: &str,
    product_type_id: i64,
) -> Result<&'w Workflow, ApiError> {
    let db = &call.app.db;
    let stmt = Query::select()
        .columns(
            [
                "repair_workflow_selector_id",
                "workflow_name",
                "selector_type",
                "selector_value",
            ]
            .map(a),
        )
        .from(a("repair_workflow_selector"))
        .and_where(Expr::col(a("product_type_id")).eq(product_type_id))
        .order_by(a("repair_workflow_selector_id"), Order::Asc)
        .to_owned();
    let rules: Vec<SelectorRule> = db.fetch_typed(&stmt).await?;
    let mut candidates: Vec<(&str, String)> = vec![("USER", call.user.username.to_lowercase())];
    if let Some(geic) = user_entity_geic(db, call.user.entity_id).await? {
        candidates.push(("ENTITY", geic));
    }
    if let Some(geic) = product_entity_geic(db, imei).await? {
        candidates.push(("ENTITY", geic));
    }
    for (kind, value) in &candidates {
        let rule = rules.iter().find(|r| {
            r.selector_type == *kind
                && if *kind == "USER" {
                    r.selector_value.to_lowercase() == *value
                } else {
                    r.selector_value == *value
                }
        });
        if let Some(rule) = rule {
            let id = rule.repair_workflow_selector_id;
            return match &rule.workflow_name {
                None => Err(ApiError::Forbidden(format!(
                    "repair_workflow_selector {id} forbids repairs of product type {product_type_id} for this {}",
                    if *kind == "USER" { "user" } else { "entity" }
                ))),
                Some(name) => call.workflows.get(name).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "repair_workflow_selector {id} names workflow '{name}', which does not exist"
                    ))
                }),
            };
        }
    }
    call.workflows.default_for(product_type_id).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "No repair workflow is available for product type {product_type_id}"
        ))
    })
}

async fn user_entity_geic(db: &Db, entity_id: Option<i64>) -> Result<Option<String>, ApiError> {
    let Some(entity_id) = entity_id else {
        return Ok(None);
    };
    let stmt = Query::select()
        .expr(c("entity", "geic"))
        .from(a("entity"))
        .and_where(c("entity", "entity_id").eq(entity_id))
        .to_owned();
    let row = db
        .fetch_optional(&stmt, &[&col("geic", ColumnType::String)])
        .await?;
    Ok(row.and_then(|r| r.get("geic").and_then(Json::as_str).map(str::to_string)))
}

async fn product_entity_geic(db: &Db, imei: &str) -> Result<Option<String>, ApiError> {
    let stmt = Query::select()
        .expr(c("entity", "geic"))
        .from(a("product_entity_linker"))
        .inner_join(
            a("entity"),
            c("entity", "entity_id").equals((a("product_entity_linker"), a("entity_id"))),
        )
        .and_where(c("product_entity_linker", "product_imei").eq(imei))
        .and_where(c("product_entity_linker", "date_removed").is_null())
        .limit(1)
        .to_owned();
    let row = db
        .fetch_optional(&stmt, &[&col("geic", ColumnType::String)])
        .await?;
    Ok(row.and_then(|r| r.get("geic").and_then(Json::as_str).map(str::to_string)))
}

async fn insert_repair(
    call: &Call<'_>,
    tx: &mut Tx,
    imei: &str,
    wf: &Workflow,
) -> Result<i64, ApiError> {
    let id = insert(
        tx,
        "repair",
        with_meta(
            vec![
                ("product_imei", imei.into()),
                ("arrival_date", call.now.date().into()),
                ("pending_status", true.into()),
                ("workflow_name", wf.name.clone().into()),
                ("workflow_state_id", wf.initial_state.clone().into()),
                ("context", "{}".into()),
            ],
            call,
        ),
        "repair_id",
    )
    .await?;
    let event = record_event(
        call,
        tx,
        id,
        &wf.initial_state,
        "repair.created",
        &json!({"workflow_name": wf.name}),
        Some(&wf.initial_state),
    )
    .await?;
    let mut update = Query::update();
    update
        .table(a("repair"))
        .value(a("latest_workflow_event_id"), event)
        .and_where(Expr::col(a("repair_id")).eq(id));
    tx.execute(&update).await?;
    enter_state(call, tx, id, &wf.initial_state).await?;
    Ok(id)
}

// ----------------------------------------------------------------------------
// Steps: inputs and events.

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
    let mut update = Query::update();
    update
        .table(a("repair"))
        .value(a("latest_workflow_event_id"), event);
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
            &mut tx,
            "repair_workflow_history",
            with_meta(
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
                call,
            ),
            "repair_workflow_history_id",
        )
        .await?;
        enter_state(call, &mut tx, id, &t.to).await?;
    }
    update
        .value(
            a("context"),
            serde_json::to_string(&step.context).unwrap_or_default(),
        )
        .and_where(Expr::col(a("repair_id")).eq(id));
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

async fn record_event(
    call: &Call<'_>,
    tx: &mut Tx,
    repair_id: i64,
    current: &str,
    event_id: &str,
    payload: &Json,
    next: Option<&str>,
) -> Result<i64, ApiError> {
    Ok(insert(
        tx,
        "repair_workflow_event",
        with_meta(
            vec![
                ("repair_id", repair_id.into()),
                ("current_state_id", current.into()),
                ("event_id", event_id.into()),
                ("payload", payload.to_string().into()),
                ("next_state_id", next.map(str::to_string).into()),
            ],
            call,
        ),
        "repair_workflow_event_id",
    )
    .await?)
}

/// Closes the open visit of the repair and opens one of `state`.
async fn enter_state(
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
        tx,
        "repair_workflow_state",
        with_meta(
            vec![
                ("repair_id", repair_id.into()),
                ("state_id", state.into()),
                ("entry_time", call.now.into()),
            ],
            call,
        ),
        "repair_workflow_state_id",
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply_effect(
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
                let id = insert(
                    tx,
                    "repair_part_type_linker",
                    with_meta(
                        vec![
                            ("repair_id", repair.repair_id.into()),
                            ("old_part_type_id", part_type.into()),
                            ("new_part_type_id", part_type.into()),
                            ("requested_date", call.now.into()),
                            ("replaced_date", call.now.into()),
                            ("non_transferable", false.into()),
                        ],
                        call,
                    ),
                    "repair_part_type_linker_id",
                )
                .await?;
                commands.push(UndoCommand::Delete {
                    table: UndoTable::RepairPartTypeLinker,
                    id,
                });
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
            let imei = repair.product_imei.as_str();
            let old = current_part(&mut Conn::Tx(tx), imei, category).await?;
            let part_id = insert(
                tx,
                "part",
                with_meta(vec![("part_type_id", new_type.into())], call),
                "part_id",
            )
            .await?;
            commands.push(UndoCommand::Delete {
                table: UndoTable::Part,
                id: part_id,
            });
            if let Some((link, _, _)) = old {
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
            let link = insert(
                tx,
                "part_product_linker",
                with_meta(
                    vec![
                        ("part_id", part_id.into()),
                        ("product_imei", imei.into()),
                        ("date_added", call.now.into()),
                        ("added_repair_id", repair.repair_id.into()),
                        ("replaced_part_id", old.map(|(_, p, _)| p).into()),
                    ],
                    call,
                ),
                "part_product_linker_id",
            )
            .await?;
            commands.push(UndoCommand::Delete {
                table: UndoTable::PartProductLinker,
                id: link,
            });
            let non_transferable =
                non_transferable(tx, imei, old.map(|(_, _, t)| t), new_type).await?;
            let id = insert(
                tx,
                "repair_part_type_linker",
                with_meta(
                    vec![
                        ("repair_id", repair.repair_id.into()),
                        ("old_part_type_id", old.map(|(_, _, t)| t).into()),
                        ("new_part_id", part_id.into()),
                        ("new_part_type_id", new_type.into()),
                        ("requested_date", call.now.into()),
                        ("replaced_date", call.now.into()),
                        ("non_transferable", non_transferable.into()),
                    ],
                    call,
                ),
                "repair_part_type_linker_id",
            )
            .await?;
            commands.push(UndoCommand::Delete {
                table: UndoTable::RepairPartTypeLinker,
                id,
            });
        }
    }
    Ok(())
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
        .and_where(
            c("part_type_replacement_linker", "product_type_id")
                .eq(product_type)
                .or(c("part_type_replacement_linker", "product_type_id").is_null()),
        )
        .limit(1)
        .to_owned();
    let row = tx
        .fetch_optional(&stmt, &[&col("non_transferable", ColumnType::Boolean)])
        .await?;
    Ok(row
        .and_then(|r| r.get("non_transferable").and_then(Json::as_bool))
        .unwrap_or(false))
}

/// Ends the repair: outcome, process, refurbishment date, and the unit
/// leaves IN_REPAIR_SYSTEM.
async fn end_repair(
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
    if end.product_state == super::definition::ProductState::Activated {
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
    let row = tx
        .fetch_optional(&lock, &[&col("latest_state_id", ColumnType::Int)])
        .await?;
    let latest = row.and_then(|r| r.get("latest_state_id").and_then(Json::as_i64));
    let current = current_state_type(&mut Conn::Tx(tx), latest).await?;
    if current.as_ref().map(|(id, _)| *id) != Some(IN_REPAIR_SYSTEM) {
        return Err(ApiError::BadRequest(format!(
            "Product {imei} is no longer IN_REPAIR_SYSTEM (it is in {}); the repair cannot end",
            current.map_or_else(|| "no state".to_string(), |(_, n)| n)
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

// ----------------------------------------------------------------------------
// Undo.

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
    let stmt = Query::select()
        .expr(c("repair_workflow_history", "repair_workflow_history_id"))
        .expr(c("repair_workflow_history", "start_state_id"))
        .expr(c("repair_workflow_history", "end_state_id"))
        .expr(c("repair_workflow_history", "update_commands_bin"))
        .expr(c("repair_workflow_history", "can_undo"))
        .from(a("repair_workflow_history"))
        .and_where(c("repair_workflow_history", "repair_id").eq(id))
        .order_by(
            (
                a("repair_workflow_history"),
                a("repair_workflow_history_id"),
            ),
            Order::Desc,
        )
        .limit(1)
        .to_owned();
    let cols = [
        col("repair_workflow_history_id", ColumnType::Int),
        col("start_state_id", ColumnType::String),
        col("end_state_id", ColumnType::String),
        col("update_commands_bin", ColumnType::String),
        col("can_undo", ColumnType::Boolean),
    ];
    let last = tx
        .fetch_optional(&stmt, &cols.iter().collect::<Vec<_>>())
        .await?
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Repair {id} has nothing to undo: it is in its first state"
            ))
        })?;
    let history_id = last
        .get("repair_workflow_history_id")
        .and_then(Json::as_i64)
        .unwrap_or_default();
    if last.get("can_undo").and_then(Json::as_bool) != Some(true) {
        return Err(ApiError::BadRequest(format!(
            "The last step of repair {id} cannot be undone"
        )));
    }
    let commands: Vec<UndoCommand> = serde_json::from_str(
        last.get("update_commands_bin")
            .and_then(Json::as_str)
            .unwrap_or("[]"),
    )
    .map_err(|e| internal(format!("repair_workflow_history {history_id}: {e}")))?;
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
                let pk = format!("{}_id", table.name());
                let delete = Query::delete()
                    .from_table(a(table.name()))
                    .and_where(Expr::col(a(&pk)).eq(*row))
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
    let restored = restored.ok_or_else(|| {
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
            "start_state_id": last.get("start_state_id"),
            "end_state_id": last.get("end_state_id"),
        }}),
        Some(&restored),
    )
    .await?;
    let mut update = Query::update();
    update
        .table(a("repair"))
        .value(a("latest_workflow_event_id"), event)
        .and_where(Expr::col(a("repair_id")).eq(id));
    modified(&mut update, call);
    tx.execute(&update).await?;
    enter_state(call, &mut tx, id, &restored).await?;
    tx.commit().await?;
    Ok(state)
}
