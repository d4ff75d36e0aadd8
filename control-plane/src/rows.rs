//! The row helpers of every hand-written (non-generic) database path: the
//! built-in catalogue, short names for sea-query identifiers, the
//! `SELECT`/`INSERT`/`UPDATE` of a catalogue table with its meta data filled
//! in, and typed access to a decoded [`Row`].
//!
//! One module, so that a path outside the generic CRUD (actions, DCM,
//! alerts, webhooks, repairs, RTC) reads and writes rows the same way and a
//! change to how they are decoded is made once.

use std::sync::OnceLock;

use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, InsertStatement, Query, SelectStatement, SimpleExpr, Value};
use serde_json::Value as Json;

use crate::catalogue::{Catalogue, Column, ColumnType, Table};
use crate::db::{Row, Tx};
use crate::error::ApiError;

/// The built-in catalogue, parsed once. Service functions called from
/// outside the HTTP layer (the gateway's [`crate::actions::unit::apply_unit_report`]) have
/// no `AppState`; the catalogue is compiled into the binary and never
/// changes, so sharing one parsed copy is not configuration in disguise.
pub(crate) fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(Catalogue::builtin)
}

pub(crate) fn table(name: &str) -> &'static Table {
    catalogue()
        .table(name)
        .unwrap_or_else(|| panic!("table {name} is in the catalogue"))
}

/// A column description for decoding a computed or selected value.
pub(crate) fn col(name: &str, ty: ColumnType) -> Column {
    Column::computed(name, ty)
}

/// Column descriptions for decoding the rows of a hand-written select whose
/// columns are listed once as `(name, type)` pairs.
pub(crate) fn to_columns(spec: &[(&str, ColumnType)]) -> Vec<Column> {
    spec.iter().map(|(name, ty)| col(name, *ty)).collect()
}

/// The names of `(name, type)` pairs as identifiers, for `.columns(...)` and
/// `RETURNING`.
pub(crate) fn names<'a>(spec: &'a [(&'a str, ColumnType)]) -> impl Iterator<Item = Alias> + 'a {
    spec.iter().map(|(name, _)| a(name))
}

/// `table.column` as a selectable expression.
pub(crate) fn tc(table: &str, column: &str) -> SimpleExpr {
    c(table, column).into()
}

/// `SELECT <readable columns> FROM table` (add conditions, then [`rows`]).
pub(crate) fn select_all(table_name: &str) -> SelectStatement {
    let t = table(table_name);
    let mut sel = Query::select();
    for column in t.readable_columns() {
        sel.expr(tc(&t.name, &column.name));
    }
    sel.from(Alias::new(&t.name));
    sel
}

/// Runs a [`select_all`] statement of `table_name` in `tx`.
pub(crate) async fn rows(
    tx: &mut Tx,
    table_name: &str,
    stmt: &SelectStatement,
) -> Result<Vec<Row>, ApiError> {
    let columns: Vec<&Column> = table(table_name).readable_columns().collect();
    Ok(tx.fetch_all(stmt, &columns).await?)
}

/// Runs a [`select_all`] statement that yields at most one row.
pub(crate) async fn row(
    tx: &mut Tx,
    table_name: &str,
    stmt: &SelectStatement,
) -> Result<Option<Row>, ApiError> {
    Ok(rows(tx, table_name, stmt).await?.into_iter().next())
}

/// Runs a select of two columns, an id and a name, and collects the pairs in which
/// neither is NULL.
pub(crate) async fn id_names<C: FromIterator<(i64, String)>>(
    tx: &mut Tx,
    stmt: &SelectStatement,
) -> Result<C, ApiError> {
    let rows: Vec<(Option<i64>, Option<String>)> = tx.fetch_typed(stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, name)| Some((id?, name?)))
        .collect())
}

/// Inserts a row (meta data filled in) and returns it as stored.
pub(crate) async fn insert(
    tx: &mut Tx,
    table_name: &str,
    values: Vec<(&str, Value)>,
    by: &str,
    now: NaiveDateTime,
) -> Result<Row, ApiError> {
    let t = table(table_name);
    let columns: Vec<&Column> = t.readable_columns().collect();
    let stmt = insert_statement(t, values, by, now)?
        .returning(Query::returning().columns(columns.iter().map(|c| Alias::new(&c.name))))
        .to_owned();
    tx.fetch_optional(&stmt, &columns)
        .await?
        .ok_or_else(|| no_row_returned(table_name))
}

/// Inserts a row (meta data filled in) and returns its integer primary key,
/// for a caller that needs only the new row's id.
pub(crate) async fn insert_id(
    tx: &mut Tx,
    table_name: &str,
    values: Vec<(&str, Value)>,
    by: &str,
    now: NaiveDateTime,
) -> Result<i64, ApiError> {
    let t = table(table_name);
    let stmt = insert_statement(t, values, by, now)?
        .returning(Query::returning().column(Alias::new(&t.primary_key().name)))
        .to_owned();
    let (id,): (i64,) = tx
        .fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| no_row_returned(table_name))?;
    Ok(id)
}

/// `INSERT INTO t (columns..., created_at, created_by) VALUES (...)`.
fn insert_statement(
    t: &Table,
    values: Vec<(&str, Value)>,
    by: &str,
    now: NaiveDateTime,
) -> Result<InsertStatement, ApiError> {
    let mut names: Vec<Alias> = values.iter().map(|(n, _)| Alias::new(*n)).collect();
    let mut exprs: Vec<SimpleExpr> = values.into_iter().map(|(_, v)| v.into()).collect();
    names.push(Alias::new("created_at"));
    exprs.push(now.into());
    names.push(Alias::new("created_by"));
    exprs.push(by.into());
    let mut stmt = Query::insert();
    stmt.into_table(Alias::new(&t.name))
        .columns(names)
        .values(exprs)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(stmt)
}

fn no_row_returned(table_name: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("insert into {table_name} returned no row"))
}

/// Updates columns of the rows matching `condition` (meta data filled in);
/// returns how many rows changed.
pub(crate) async fn update(
    tx: &mut Tx,
    table_name: &str,
    values: Vec<(&str, Value)>,
    condition: SimpleExpr,
    by: &str,
    now: NaiveDateTime,
) -> Result<u64, ApiError> {
    let mut stmt = Query::update();
    stmt.table(Alias::new(table_name));
    for (name, value) in values {
        stmt.value(Alias::new(name), SimpleExpr::from(value));
    }
    stmt.value(Alias::new("modified_at"), now)
        .value(Alias::new("modified_by"), by)
        .and_where(condition);
    Ok(tx.execute(&stmt).await?)
}

/// An identifier (table, column or alias) for sea-query.
pub(crate) fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// `table.column` as an expression (for conditions and joins).
pub(crate) fn c(table: &str, column: &str) -> Expr {
    Expr::col((a(table), a(column)))
}

/// An equality condition on a column.
pub(crate) fn eq(name: &str, v: impl Into<Value>) -> SimpleExpr {
    Expr::col(Alias::new(name)).eq(SimpleExpr::Value(v.into()))
}

/// Typed access to a decoded row.
pub(crate) trait RowExt {
    fn text(&self, key: &str) -> Option<&str>;
    fn int(&self, key: &str) -> Option<i64>;
    fn flag(&self, key: &str) -> bool;
    fn time(&self, key: &str) -> Option<NaiveDateTime>;
    /// [`RowExt::text`] as an owned string, for typed structs built from a row.
    fn string(&self, key: &str) -> Option<String> {
        self.text(key).map(str::to_string)
    }
}

impl RowExt for Row {
    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Json::as_str)
    }
    fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Json::as_i64)
    }
    fn flag(&self, key: &str) -> bool {
        self.get(key).and_then(Json::as_bool).unwrap_or(false)
    }
    fn time(&self, key: &str) -> Option<NaiveDateTime> {
        self.text(key).and_then(crate::values::parse_datetime)
    }
}
