//! Rows decoded for the caller: by the catalogue's column types into JSON objects in
//! catalogue order ([`Row`], so both backends return identical bodies), or as typed structs
//! ([`TypedRow`]).

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Value as Json};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;

use super::DbError;
use crate::catalogue::{Column, ColumnType};
use crate::values::{format_datetime, DATETIME_FORMAT};

/// A decoded row: column name to JSON value, in select order.
pub type Row = Map<String, Json>;

/// A typed row of a hand-written select: a struct with
/// `#[derive(sqlx::FromRow)]` whose fields decode on both backends (see
/// [`Db::fetch_typed`]). Its fields are read by column name, so the select
/// must name (or alias) its columns as the fields are named.
pub trait TypedRow:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> TypedRow for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

pub(super) fn decode_sqlite(row: &SqliteRow, columns: &[&Column]) -> Result<Row, DbError> {
    let mut out = Map::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let v = match c.ty {
            ColumnType::Int => row.try_get::<Option<i64>, _>(i)?.map(Json::from),
            ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(Json::from),
            ColumnType::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Json::from),
            ColumnType::Array => row
                .try_get::<Option<String>, _>(i)?
                .map(|s| serde_json::from_str(&s).unwrap_or(Json::String(s))),
            ColumnType::Datetime => row.try_get::<Option<String>, _>(i)?.map(|s| {
                // Rows written by this server are already canonical; rows
                // written by hand may not be.
                match NaiveDateTime::parse_from_str(&s, DATETIME_FORMAT) {
                    Ok(_) => Json::String(s),
                    Err(_) => Json::String(
                        crate::values::parse_datetime(&s)
                            .map(|t| format_datetime(&t))
                            .unwrap_or(s),
                    ),
                }
            }),
            ColumnType::String | ColumnType::Text | ColumnType::Date => {
                row.try_get::<Option<String>, _>(i)?.map(Json::from)
            }
        };
        out.insert(c.name.clone(), v.unwrap_or(Json::Null));
    }
    Ok(out)
}

pub(super) fn decode_pg(row: &PgRow, columns: &[&Column]) -> Result<Row, DbError> {
    let mut out = Map::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let v = match c.ty {
            ColumnType::Int => row.try_get::<Option<i64>, _>(i)?.map(Json::from),
            ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(Json::from),
            ColumnType::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Json::from),
            ColumnType::Array => row.try_get::<Option<Json>, _>(i)?,
            ColumnType::Datetime => row
                .try_get::<Option<NaiveDateTime>, _>(i)?
                .map(|t| Json::from(format_datetime(&t))),
            ColumnType::Date => row
                .try_get::<Option<NaiveDate>, _>(i)?
                .map(|d| Json::from(d.format("%Y-%m-%d").to_string())),
            ColumnType::String | ColumnType::Text => {
                row.try_get::<Option<String>, _>(i)?.map(Json::from)
            }
        };
        out.insert(c.name.clone(), v.unwrap_or(Json::Null));
    }
    Ok(out)
}
