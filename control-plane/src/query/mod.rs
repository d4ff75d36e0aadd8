//! The query language of the spec's "Query Format and Filtering" section,
//! with Flask-Restless 0.17 semantics where the spec is silent, compiled to
//! sea-query statements that run unchanged on SQLite and PostgreSQL.
//!
//! # Layout
//! - [`parse()`]: the `q` URL parameter to a [`QuerySpec`]; shape checks only.
//! - [`compile()`]: a [`QuerySpec`] against a catalogue [`Table`](crate::catalogue::Table) to a row
//!   statement and a count statement, with the caller's [`Visibility`]
//!   applied to every table the query touches.
//! - [`compile_get`]: single-row GET by primary key, scoped.
//! - [`scope_condition`]: the ENTITY scope of one table, for callers that
//!   build their own statements (PUT, DELETE).
//!
//! # Guarantees
//! - Every client value is a bound parameter (`sea_query::Value`); every
//!   identifier comes from the catalogue, never from the request.
//! - Scope is part of the SQL: a relation filter, `has`/`any`, `order_by`
//!   or `group_by` only ever sees related rows the user may see, so no
//!   filter can test, and no ordering can leak, another entity's data.
//!
//! # Semantics the spec leaves open (recorded in `docs/decisions.md`)
//! - `relation__field` (any depth: `a__b__field`) with any operator means
//!   "some related row, visible to the user, satisfies it": `EXISTS` on the
//!   related table, for to-one and to-many relations alike. Consequently
//!   `notes__note_text != 'x'` holds when some note differs, and it never
//!   holds for a row without notes.
//! - `has` and `any` are accepted on both kinds of relation (both mean
//!   `EXISTS`); `val` is a filter object or a list of them, evaluated on
//!   the related table (ANDed); or a plain value / list of values, matched
//!   against the related table's primary key ("True if any related field
//!   matches a value in the supplied list"). With a `relation__field` name
//!   and a plain value they mean `field == val` on the related row
//!   (`field IN val` for a list), Flask-Restless' legacy form.
//! - `field` (column-to-column) names a column of the table the filter is
//!   written against: the queried table at top level, even when `name` is
//!   `relation__field` (as in Flask-Restless), and the related table inside
//!   a nested `has`/`any` filter.
//! - `like` is case-sensitive and `ilike` is `LOWER(col) LIKE LOWER(?)`;
//!   both use `\` as the escape character on both databases. SQLite's LIKE
//!   is case-insensitive for ASCII unless the connection sets
//!   `PRAGMA case_sensitive_like = ON`, which the pool must do.
//! - `order_by`/`group_by` accept `relation__field` through to-one
//!   relations only (a LEFT JOIN that cannot multiply rows); NULLs sort
//!   last ascending and first descending on both databases (PostgreSQL's
//!   default). The primary key is appended as the last sort key.
//! - `group_by` selects exactly the grouped fields (see [`compile()`]).
//! - q's `limit`/`offset` apply first and the page window is cut from
//!   within that result, as Flask-Restless does.

mod compile;
mod error;
mod parse;
#[cfg(test)]
mod sqlite_tests;

pub use compile::{
    admit, compile, compile_get, compile_get_as, get_columns, get_columns_as, scope_condition,
};
pub use error::QueryError;
pub use parse::{parse, Argument, Comparison, Direction, Filter, Op, OrderBy, QuerySpec};

use sea_query::SelectStatement;

use crate::catalogue::{ColumnType, Permission};

/// Which rows a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Every row (`user_product_visibility` GLOBAL).
    Global,
    /// Only products currently linked to this entity, and rows that belong
    /// to them (`user_product_visibility` ENTITY).
    Entity(i64),
}

/// Who is asking: which rows they may see and which tables and columns
/// their permission level may read (every table a query touches is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Viewer {
    pub visibility: Visibility,
    pub permission: Permission,
}

impl Viewer {
    /// The system itself (internal queries): everything.
    pub fn system() -> Self {
        Self {
            visibility: Visibility::Global,
            permission: Permission::System,
        }
    }
}

/// A page of the result: `page` counts from 1 (0 is read as 1);
/// `per_page == 0` means "no pagination", as `results_per_page=0` does in
/// Flask-Restless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u64,
    pub per_page: u64,
}

impl Page {
    /// The rows before this page. Any page number a client sends is a page
    /// past the end at worst, never an overflow: the product saturates and
    /// stays a valid `OFFSET` (at most `i64::MAX`; the fuzz run sent 2^61).
    pub fn offset(self) -> u64 {
        self.page
            .saturating_sub(1)
            .saturating_mul(self.per_page)
            .min(i64::MAX as u64)
    }

    /// How many pages of `per_page` rows hold `total` rows (0 for none).
    pub fn total_pages(self, total: i64) -> u64 {
        match u64::try_from(total) {
            Ok(total) if total > 0 && self.per_page > 0 => total.div_ceil(self.per_page),
            _ => 0,
        }
    }
}

/// The statements for one list request.
///
/// LIMIT and OFFSET are bound as `Value::BigUnsigned`; they are never above
/// `i64::MAX`, so a binder may convert them to `i64` (PostgreSQL has no
/// unsigned type).
#[derive(Debug, Clone)]
pub struct CompiledQuery {
    /// The page of rows, in a deterministic order.
    pub rows: SelectStatement,
    /// `SELECT COUNT(*)`: the number of rows the query yields before the
    /// page window (the `num_results` of the list body).
    pub count: SelectStatement,
    /// Output column names of `rows`, in select order.
    pub columns: Vec<String>,
    /// The catalogue type of each output column, parallel to `columns`, so
    /// rows can be decoded without looking names up again (`group_by` may
    /// select `relation__field` columns of other tables).
    pub column_types: Vec<ColumnType>,
}
