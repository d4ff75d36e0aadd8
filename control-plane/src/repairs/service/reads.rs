//! Reading repairs and what their workflow needs to know about the unit:
//! the repair row (scoped, optionally locked), the unit's product type,
//! lifecycle state and current parts, and the options of a state's
//! selections; plus the read models of current_state, history and
//! list_current_states.

use std::collections::HashMap;

use sea_query::{JoinType, LockType, Order, Query, SelectStatement, SimpleExpr};
use serde_json::Value as Json;

use super::{internal, Call, Choice, Conn, Repair, IN_REPAIR_SYSTEM};
use crate::error::ApiError;
use crate::query::scope_condition;
use crate::repairs::definition::{Lang, State, Workflow, Workflows};
use crate::repairs::engine::Context;
use crate::rows::{a, c};

/// The columns of `repair` the workflow reads, as [`RepairRow`] names them.
const REPAIR_COLUMNS: [&str; 9] = [
    "repair_id",
    "product_imei",
    "workflow_name",
    "workflow_state_id",
    "context",
    "latest_workflow_event_id",
    "measured_battery_capacity",
    "outcome",
    "created_by",
];

/// A `repair` row as stored; [`Repair`] once it is known to have a workflow.
#[derive(Debug, sqlx::FromRow)]
struct RepairRow {
    repair_id: i64,
    product_imei: String,
    workflow_name: Option<String>,
    workflow_state_id: Option<String>,
    context: Option<String>,
    latest_workflow_event_id: Option<i64>,
    measured_battery_capacity: Option<f64>,
    outcome: Option<String>,
    created_by: Option<String>,
}

impl TryFrom<RepairRow> for Repair {
    type Error = ApiError;

    fn try_from(row: RepairRow) -> Result<Self, ApiError> {
        let id = row.repair_id;
        let (Some(workflow_name), Some(workflow_state_id)) =
            (row.workflow_name, row.workflow_state_id)
        else {
            return Err(ApiError::BadRequest(format!(
                "Repair {id} has no repair workflow (it was not created through get_repair)"
            )));
        };
        let context = match row.context {
            Some(t) if !t.is_empty() => serde_json::from_str::<Context>(&t)
                .map_err(|e| internal(format!("repair {id}: bad context: {e}")))?,
            _ => Context::new(),
        };
        Ok(Self {
            repair_id: id,
            product_imei: row.product_imei,
            workflow_name,
            workflow_state_id,
            context,
            latest_workflow_event_id: row.latest_workflow_event_id,
            measured_battery_capacity: row.measured_battery_capacity,
            outcome: row.outcome,
            created_by: row.created_by,
        })
    }
}

/// `SELECT` [`REPAIR_COLUMNS`] `FROM repair`, in the user's scope.
fn select_repairs(call: &Call<'_>) -> SelectStatement {
    let cat = &call.app.catalogue;
    let table = cat.table("repair").expect("repair is in the catalogue");
    let mut stmt = Query::select();
    for n in REPAIR_COLUMNS {
        stmt.expr(c("repair", n));
    }
    stmt.from(a("repair"));
    if let Some(scope) = scope_condition(cat, table, &call.user.visibility) {
        stmt.and_where(scope);
    }
    stmt
}

/// The repair `id` if the user may see it; `lock` takes the row lock.
pub(super) async fn fetch_repair(
    call: &Call<'_>,
    conn: &mut Conn<'_>,
    id: i64,
    lock: bool,
) -> Result<Repair, ApiError> {
    let mut stmt = select_repairs(call);
    stmt.and_where(c("repair", "repair_id").eq(id));
    if lock {
        stmt.lock_with_tables(LockType::Update, [a("repair")]);
    }
    conn.fetch_typed_optional::<RepairRow>(&stmt)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Repair {id} not found")))?
        .try_into()
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

/// The unit's product type and latest `state` row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ProductRow {
    pub(super) product_type_id: i64,
    pub(super) latest_state_id: Option<i64>,
}

/// `SELECT product_type_id, latest_state_id FROM product WHERE product_imei = imei`.
pub(super) fn select_product(imei: &str) -> SelectStatement {
    Query::select()
        .expr(c("product", "product_type_id"))
        .expr(c("product", "latest_state_id"))
        .from(a("product"))
        .and_where(c("product", "product_imei").eq(imei))
        .to_owned()
}

pub(super) async fn product_type_of(
    conn: &mut Conn<'_>,
    imei: &str,
) -> Result<Option<i64>, ApiError> {
    let product: Option<ProductRow> = conn.fetch_typed_optional(&select_product(imei)).await?;
    Ok(product.map(|p| p.product_type_id))
}

/// `part_type_replacement_linker` rules that apply to a product type: its
/// own and those of no product type (`-1` when the unit's type is unknown
/// matches only the latter).
pub(super) fn replacement_rule_applies(product_type: i64) -> SimpleExpr {
    c("part_type_replacement_linker", "product_type_id")
        .eq(product_type)
        .or(c("part_type_replacement_linker", "product_type_id").is_null())
}

/// The state type a `state` row puts the unit in.
#[derive(Debug, sqlx::FromRow)]
struct StateTypeRow {
    current_state_type: i64,
    name: String,
}

/// `None` while the unit (whose latest `state` row is `latest_state_id`)
/// is IN_REPAIR_SYSTEM; else the name of the state it is in ("no state"
/// when it has none), for the caller's message.
pub(super) async fn outside_repair_system(
    conn: &mut Conn<'_>,
    latest_state_id: Option<i64>,
) -> Result<Option<String>, ApiError> {
    let Some(state_id) = latest_state_id else {
        return Ok(Some("no state".to_string()));
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
    let state_type: Option<StateTypeRow> = conn.fetch_typed_optional(&stmt).await?;
    Ok(match state_type {
        Some(t) if t.current_state_type == IN_REPAIR_SYSTEM => None,
        Some(t) => Some(t.name),
        None => Some("no state".to_string()),
    })
}

/// The unit's current part of a category.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(super) struct CurrentPart {
    pub(super) part_product_linker_id: i64,
    pub(super) part_id: i64,
    pub(super) part_type_id: i64,
}

pub(super) async fn current_part(
    conn: &mut Conn<'_>,
    imei: &str,
    category: i64,
) -> Result<Option<CurrentPart>, ApiError> {
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
    Ok(conn.fetch_typed_optional(&stmt).await?)
}

/// A replacement rule of a category, with the replacement's name.
#[derive(Debug, sqlx::FromRow)]
struct ReplacementRow {
    existing_part_type_id: i64,
    replacement_part_type_id: i64,
    name: String,
}

/// The part types that may replace the unit's current part of `category`.
async fn replacement_choices(
    conn: &mut Conn<'_>,
    imei: &str,
    category: i64,
) -> Result<Vec<Choice>, ApiError> {
    let product_type = product_type_of(conn, imei).await?;
    let current = current_part(conn, imei, category)
        .await?
        .map(|p| p.part_type_id);
    let stmt = Query::select()
        .expr(c("part_type_replacement_linker", "existing_part_type_id"))
        .expr(c(
            "part_type_replacement_linker",
            "replacement_part_type_id",
        ))
        .expr_as(c("replacement", "name"), a("name"))
        .from(a("part_type_replacement_linker"))
        .join_as(
            JoinType::InnerJoin,
            a("part_type"),
            a("existing"),
            c("existing", "part_type_id").equals((
                a("part_type_replacement_linker"),
                a("existing_part_type_id"),
            )),
        )
        .join_as(
            JoinType::InnerJoin,
            a("part_type"),
            a("replacement"),
            c("replacement", "part_type_id").equals((
                a("part_type_replacement_linker"),
                a("replacement_part_type_id"),
            )),
        )
        .and_where(c("existing", "part_type_category_id").eq(category))
        .and_where(replacement_rule_applies(product_type.unwrap_or(-1)))
        .order_by(
            (
                a("part_type_replacement_linker"),
                a("part_type_replacement_linker_id"),
            ),
            Order::Asc,
        )
        .to_owned();
    let rows: Vec<ReplacementRow> = conn.fetch_typed(&stmt).await?;
    let fits_current = |r: &ReplacementRow| current.is_none_or(|t| r.existing_part_type_id == t);
    let use_current = rows.iter().any(fits_current);
    let mut choices: Vec<Choice> = Vec::new();
    for r in rows.iter().filter(|r| !use_current || fits_current(r)) {
        let value = Json::from(r.replacement_part_type_id);
        if !choices.iter().any(|ch| ch.value == value) {
            choices.push(Choice {
                value,
                label: r.name.clone(),
            });
        }
    }
    Ok(choices)
}

/// The options of the selection inputs of `state`, labels in `lang`.
/// Replacement options are the part types `part_type_replacement_linker`
/// allows for the unit's product type in place of its current part of the
/// category (any part of the category when the unit has none recorded),
/// in linker order, each once.
pub(super) async fn resolve_choices(
    conn: &mut Conn<'_>,
    repair: &Repair,
    state: &State,
    lang: Lang,
) -> Result<HashMap<String, Vec<Choice>>, ApiError> {
    let mut out = HashMap::new();
    for input in &state.inputs {
        if let Some(rep) = &input.replacement_options {
            let choices =
                replacement_choices(conn, &repair.product_imei, rep.part_type_category_id).await?;
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

/// The values of each selection's options (what the engine validates against).
pub(super) fn choice_values(choices: &HashMap<String, Vec<Choice>>) -> HashMap<String, Vec<Json>> {
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

/// `columns` of the repair's transitions (`repair_workflow_history`), in
/// the order they were made (`Asc`) or latest first (`Desc`).
pub(super) fn select_history(repair_id: i64, columns: &[&str], order: Order) -> SelectStatement {
    let mut stmt = Query::select();
    for column in columns {
        stmt.expr(c("repair_workflow_history", column));
    }
    stmt.from(a("repair_workflow_history"))
        .and_where(c("repair_workflow_history", "repair_id").eq(repair_id))
        .order_by(
            (
                a("repair_workflow_history"),
                a("repair_workflow_history_id"),
            ),
            order,
        );
    stmt
}

/// The state a transition of the repair left.
#[derive(Debug, sqlx::FromRow)]
struct LeftState {
    start_state_id: Option<String>,
}

/// The states the repair went through, oldest first, ending with the
/// current one (undone transitions are not part of it).
pub async fn history<'w>(call: &Call<'w>, id: i64) -> Result<Vec<&'w State>, ApiError> {
    let mut conn = Conn::Db(&call.app.db);
    let repair = fetch_repair(call, &mut conn, id, false).await?;
    let (wf, current) = locate(call.workflows, &repair)?;
    let stmt = select_history(id, &["start_state_id"], Order::Asc);
    let rows: Vec<LeftState> = conn.fetch_typed(&stmt).await?;
    let mut states: Vec<&State> = rows
        .iter()
        .filter_map(|r| r.start_state_id.as_deref())
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
    let mut stmt = select_repairs(call);
    stmt.and_where(c("repair", "outcome").is_null())
        .and_where(c("repair", "workflow_name").is_not_null())
        .and_where(c("repair", "workflow_state_id").is_not_null())
        .order_by((a("repair"), a("repair_id")), Order::Desc);
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
    let rows: Vec<RepairRow> = call.app.db.fetch_typed(&stmt).await?;
    rows.into_iter().map(Repair::try_from).collect()
}
