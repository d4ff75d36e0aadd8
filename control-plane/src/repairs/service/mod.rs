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
//!
//! # Layout
//! - `reads`: the repair row, the unit's product type, state and parts,
//!   the selection options of a state; `current_state`, `history`,
//!   `list_current`.
//! - `create`: `get_repair`: find the unit's open repair or choose a
//!   workflow and create one.
//! - `steps`: `act`: a technician's inputs or event, the audit rows and
//!   the transition.
//! - `effects`: the rows a transition's effects write, and ending a
//!   repair (the unit leaves IN_REPAIR_SYSTEM).
//! - `undo`: the commands that reverse a transition, and `undo`.

mod create;
mod effects;
mod reads;
mod steps;
mod undo;

use chrono::NaiveDateTime;
use sea_query::{Query, SelectStatement, SimpleExpr, UpdateStatement, Value};
use serde_json::{Map, Value as Json};

use super::definition::Workflows;
use super::engine::Context;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::{Db, DbError, Tx, TypedRow};
use crate::error::ApiError;
use crate::rows::a;

pub use create::get_repair;
pub use reads::{current_state, history, list_current, locate, ListFilters};
pub use steps::act;
pub use undo::undo;

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

// ----------------------------------------------------------------------------
// Small SQL helpers shared by the submodules.

/// Reads through the pool, or through the caller's transaction, so that a
/// read model and a step share one query.
enum Conn<'a> {
    Db(&'a Db),
    Tx(&'a mut Tx),
}

impl Conn<'_> {
    async fn fetch_typed<T: TypedRow>(
        &mut self,
        stmt: &SelectStatement,
    ) -> Result<Vec<T>, DbError> {
        match self {
            Self::Db(db) => db.fetch_typed(stmt).await,
            Self::Tx(tx) => tx.fetch_typed(stmt).await,
        }
    }

    async fn fetch_typed_optional<T: TypedRow>(
        &mut self,
        stmt: &SelectStatement,
    ) -> Result<Option<T>, DbError> {
        Ok(self.fetch_typed(stmt).await?.into_iter().next())
    }
}

/// Inserts a row with its `created_at`/`created_by` and returns its key `pk`.
async fn insert(
    call: &Call<'_>,
    tx: &mut Tx,
    table: &str,
    mut values: Vec<(&str, Value)>,
    pk: &str,
) -> Result<i64, DbError> {
    values.push(("created_at", call.now.into()));
    values.push(("created_by", call.user.username.clone().into()));
    let stmt = Query::insert()
        .into_table(a(table))
        .columns(values.iter().map(|(n, _)| a(n)))
        .values_panic(values.into_iter().map(|(_, v)| SimpleExpr::Value(v)))
        .returning(Query::returning().column(a(pk)))
        .to_owned();
    let id: Option<(i64,)> = tx.fetch_typed_optional(&stmt).await?;
    Ok(id.map(|(id,)| id).unwrap_or_default())
}

/// Sets `modified_at`/`modified_by` of an update.
fn modified(stmt: &mut UpdateStatement, call: &Call<'_>) {
    stmt.value(a("modified_at"), call.now)
        .value(a("modified_by"), call.user.username.clone());
}

fn internal(message: String) -> ApiError {
    ApiError::Internal(anyhow::anyhow!(message))
}
