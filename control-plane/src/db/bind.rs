//! sea-query values bound as statement parameters, for each backend.

use chrono::{NaiveDate, NaiveDateTime};
use sea_query::{Value, Values};
use serde_json::Value as Json;

use crate::values::format_datetime;

pub(super) type SqliteQuery<'q> =
    sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
pub(super) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A sea-query value narrowed to what both backends bind: every integer as
/// `i64`, every float as `f64`, a char as text. The widening is written once;
/// the two binders below differ only where the backends store differently
/// (JSON, dates, timestamps).
enum Bind {
    Bool(Option<bool>),
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Json(Option<Json>),
    Date(Option<NaiveDate>),
    DateTime(Option<NaiveDateTime>),
}

impl From<Value> for Bind {
    fn from(value: Value) -> Self {
        match value {
            Value::Bool(v) => Self::Bool(v),
            Value::TinyInt(v) => Self::Int(v.map(i64::from)),
            Value::SmallInt(v) => Self::Int(v.map(i64::from)),
            Value::Int(v) => Self::Int(v.map(i64::from)),
            Value::BigInt(v) => Self::Int(v),
            Value::TinyUnsigned(v) => Self::Int(v.map(i64::from)),
            Value::SmallUnsigned(v) => Self::Int(v.map(i64::from)),
            Value::Unsigned(v) => Self::Int(v.map(i64::from)),
            // LIMIT and OFFSET: never above i64::MAX (see `query::Page::offset`).
            Value::BigUnsigned(v) => Self::Int(v.map(|v| v as i64)),
            Value::Float(v) => Self::Float(v.map(f64::from)),
            Value::Double(v) => Self::Float(v),
            Value::String(v) => Self::Text(v.map(|s| *s)),
            Value::Char(v) => Self::Text(v.map(|c| c.to_string())),
            Value::Bytes(v) => Self::Bytes(v.map(|b| *b)),
            Value::Json(v) => Self::Json(v.map(|j| *j)),
            Value::ChronoDate(v) => Self::Date(v.map(|d| *d)),
            Value::ChronoDateTime(v) => Self::DateTime(v.map(|t| *t)),
            other => Self::Text(Some(format!("{other:?}"))),
        }
    }
}

/// Binds sea-query values for SQLite. Timestamps are bound as fixed-width
/// ISO text (`DATETIME_FORMAT`) so that stored values sort and compare
/// correctly and come back exactly as the API returns them.
pub(super) fn bind_sqlite(mut query: SqliteQuery<'_>, values: Values) -> SqliteQuery<'_> {
    for value in values.0 {
        query = match Bind::from(value) {
            Bind::Bool(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
            Bind::Float(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
            Bind::Bytes(v) => query.bind(v),
            Bind::Json(v) => query.bind(v.map(|j| j.to_string())),
            Bind::Date(v) => query.bind(v.map(|d| d.format("%Y-%m-%d").to_string())),
            Bind::DateTime(v) => query.bind(v.map(|t| format_datetime(&t))),
        };
    }
    query
}

/// Binds sea-query values for PostgreSQL with their native types.
pub(super) fn bind_pg(mut query: PgQuery<'_>, values: Values) -> PgQuery<'_> {
    for value in values.0 {
        query = match Bind::from(value) {
            Bind::Bool(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
            Bind::Float(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
            Bind::Bytes(v) => query.bind(v),
            Bind::Json(v) => query.bind(v.map(sqlx::types::Json)),
            Bind::Date(v) => query.bind(v),
            Bind::DateTime(v) => query.bind(v),
        };
    }
    query
}
