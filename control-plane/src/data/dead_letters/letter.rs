//! One stored letter: reading it for an action, and recording what the
//! action did to it.

use sea_query::{Alias, Expr, Query, SimpleExpr, Value};

use super::{ID, TABLE};
use crate::app::AppState;
use crate::error::ApiError;
use crate::query::{self, Visibility};
use crate::values::now;

/// The row's fields the actions need.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct Stored {
    #[sqlx(rename = "rtc_dead_letter_id")]
    pub(super) id: i64,
    pub(super) queue_name: String,
    pub(super) payload: String,
    pub(super) status: Option<String>,
    pub(super) replay_status: Option<String>,
    pub(super) reason: Option<String>,
}

/// The letter `id`, if the user may see it (404 otherwise, as the generic GET).
pub(super) async fn load(
    state: &AppState,
    visibility: &Visibility,
    id: &str,
) -> Result<Stored, ApiError> {
    let missing = || ApiError::NotFound(format!("No {TABLE} with {ID} '{id}'"));
    let key: i64 = id.parse().map_err(|_| missing())?;
    let table = state
        .catalogue
        .table(TABLE)
        .expect("the catalogue has rtc_dead_letter");
    let mut stmt = Query::select();
    for n in [
        ID,
        "queue_name",
        "payload",
        "status",
        "replay_status",
        "reason",
    ] {
        stmt.column((Alias::new(TABLE), Alias::new(n)));
    }
    stmt.from(Alias::new(TABLE))
        .and_where(Expr::col((Alias::new(TABLE), Alias::new(ID))).eq(key));
    if let Some(scope) = query::scope_condition(&state.catalogue, table, visibility) {
        stmt.and_where(scope);
    }
    state
        .db
        .fetch_typed::<Stored>(&stmt)
        .await?
        .into_iter()
        .next()
        .ok_or_else(missing)
}

/// Columns to set on a letter.
pub(super) type Changes = Vec<(&'static str, Value)>;

/// Now, as a column value.
pub(super) fn stamp() -> Value {
    Value::ChronoDateTime(Some(Box::new(now())))
}

fn text(s: impl Into<String>) -> Value {
    Value::String(Some(Box::new(s.into())))
}

/// The letter's new `status`, as of `at`.
pub(super) fn status(status: &str, at: &Value) -> Changes {
    vec![("status", text(status)), ("status_time", at.clone())]
}

/// How a replay went (`success` or `failure`, and the detail), as of `at`.
pub(super) fn replay_status(outcome: &str, detail: String, at: &Value) -> Changes {
    vec![
        ("replay_status", text(outcome)),
        ("replay_status_text", text(detail)),
        ("replay_status_time", at.clone()),
    ]
}

/// Sets columns of one letter, with the modification meta data, in a
/// transaction of its own.
pub(super) async fn update(
    state: &AppState,
    by: &str,
    id: i64,
    changes: Changes,
) -> Result<(), ApiError> {
    let mut stmt = Query::update();
    stmt.table(Alias::new(TABLE));
    for (k, v) in changes {
        stmt.value(Alias::new(k), SimpleExpr::Value(v));
    }
    stmt.value(Alias::new("modified_at"), now())
        .value(Alias::new("modified_by"), by)
        .and_where(Expr::col(Alias::new(ID)).eq(id));
    let mut tx = state.db.begin().await?;
    tx.execute(&stmt).await?;
    tx.commit().await?;
    Ok(())
}
