//! Why a `q` parameter was refused. Every message is written for the client:
//! it ends up, unchanged, as the `message` of a 400 body, so it names the
//! filter, field or key at fault.

use crate::values::ValueError;

/// A `q` parameter that cannot be parsed or compiled. Always a client error
/// (400, or 403 for [`QueryError::is_forbidden`]): the catalogue is
/// validated at start, so nothing here is a server fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `q` is not JSON at all.
    #[error("q is not valid JSON: {0}")]
    Json(String),
    /// `q` is JSON but not an object.
    #[error("q must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// `q` has a key the query language does not know.
    #[error(
        "unknown key '{0}' in q; expected filters, limit, offset, order_by, group_by or single"
    )]
    UnknownKey(String),
    /// `limit`, `offset`, `single`, `filters`, `order_by` or `group_by` has the wrong shape.
    #[error("'{key}' must be {expected}")]
    BadParameter {
        key: &'static str,
        expected: &'static str,
    },
    /// A filter is not an object, lacks `name`/`op`, or has an unknown key.
    /// `at` is the 1-based position, dotted for nested filters (`2.1`).
    #[error("filter {at} is malformed: {reason}")]
    BadFilter { at: String, reason: String },
    /// The operator is not one the API knows.
    #[error("unknown operator '{op}' in filter {at}")]
    UnknownOperator { op: String, at: String },
    /// A binary operator without `val` (or `field`).
    #[error("filter on '{name}' with op '{op}' needs {needs}")]
    MissingArgument {
        name: String,
        op: String,
        needs: &'static str,
    },
    /// A binary operator compared with `null` (SQL would never match).
    #[error("filter on '{name}' with op '{op}' compares with null; use is_null or is_not_null")]
    NullArgument { name: String, op: String },
    /// `in`/`not_in` without a list.
    #[error("filter on '{name}' with op '{op}' needs a list as 'val'")]
    NotAList { name: String, op: String },
    /// `like`/`ilike` with a pattern that is not a string.
    #[error("filter on '{name}' with op '{op}' needs a string pattern as 'val'")]
    PatternNotString { name: String, op: String },
    /// An `order_by` or `group_by` entry is not `{"field": ..}` (and `direction`).
    #[error("{key} entry {at} is malformed: {reason}")]
    BadOrdering {
        key: &'static str,
        at: usize,
        reason: String,
    },
    /// A name is neither a column nor a relation of the table.
    #[error("unknown field '{field}' on table '{table}'")]
    UnknownField { table: String, field: String },
    /// The part before `__` is not a relation of the table.
    #[error("unknown relation '{relation}' on table '{table}'")]
    UnknownRelation { table: String, relation: String },
    /// `has`/`any` on a name that is a column, or a nested filter on a column.
    #[error("op '{op}' needs a relation name, but '{name}' is a field")]
    NotARelation { name: String, op: String },
    /// A comparison, `order_by` or `group_by` on a relation instead of a field.
    #[error("'{name}' is a relation; use op 'has' or 'any', or name one of its fields as '{name}__<field>'")]
    NotAField { name: String },
    /// The operator does not apply to the column's type (`like` on an int,
    /// `gt` on an array).
    #[error("op '{op}' cannot be used on '{name}', which is of type {ty}")]
    OperatorNotApplicable {
        name: String,
        op: String,
        ty: &'static str,
    },
    /// A column-to-column comparison between types that do not compare.
    #[error("cannot compare '{name}' ({ty}) with field '{other}' ({other_ty})")]
    Incomparable {
        name: String,
        ty: &'static str,
        other: String,
        other_ty: &'static str,
    },
    /// The value does not fit the column (wrong JSON type, bad time, not one of the options).
    #[error("invalid value in filter on '{name}': {source}")]
    BadValue {
        name: String,
        #[source]
        source: ValueError,
    },
    /// `order_by`/`group_by` through a to-many relation: one row would need
    /// several sort keys or would be split over several groups.
    #[error("{key} on '{name}' goes through the to-many relation '{relation}'; only to-one relations can be used there")]
    ToManyPath {
        key: &'static str,
        name: String,
        relation: String,
    },
    /// With `group_by`, rows are groups, so they can only be ordered by grouped fields.
    #[error("order_by field '{0}' must also be a group_by field")]
    OrderNotGrouped(String),
    /// The query touches a table the user may not read (403).
    #[error("'{name}' reads table '{table}', which {needed}; you have {have} permissions")]
    TableForbidden {
        name: String,
        table: String,
        needed: String,
        have: String,
    },
    /// The query touches a table that is not open to ENTITY-scoped users (403).
    #[error("'{name}' reads table '{table}', which users limited to one entity may not read")]
    ScopeRefused { name: String, table: String },
    /// A credential column used in a filter, `order_by` or `group_by` by a
    /// user below the level that may read it (403).
    #[error("'{name}' is the credential {table}.{column}, which needs {needed} permissions to read, filter or sort by")]
    SecretColumn {
        name: String,
        table: String,
        column: String,
        needed: String,
    },
}

impl QueryError {
    /// Whether this is a refusal (403) rather than a malformed query (400).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::TableForbidden { .. } | Self::ScopeRefused { .. } | Self::SecretColumn { .. }
        )
    }
}
