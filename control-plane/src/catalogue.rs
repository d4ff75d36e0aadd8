//! The table catalogue: every generic table of the SMARTSolar schema, declared
//! once in `catalogue/tables.json`.
//!
//! Routes, request validation, filter compilation, row decoding, the OpenAPI
//! document and the DDL all read this one declaration, so a table is added or
//! changed in exactly one place. The JSON was bootstrapped from the spec by
//! `tools/extract_catalogue.py`; corrections are listed in `docs/decisions.md`.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

/// The catalogue as shipped in the binary.
const TABLES_JSON: &str = include_str!("../catalogue/tables.json");

/// How each table's rows belong to an entity (see [`ScopeDecl`]), kept apart
/// from `tables.json` so the declaration of every table reads as one list.
const SCOPES_JSON: &str = include_str!("../catalogue/scopes.json");

/// The lowest level that may read, filter or sort by a credential column
/// (`product.device_key`): the level that provisions units, whose create
/// actions return the key (spec: `/products/create_hub2`, FACTORY).
pub const SECRET_READ_LEVEL: Permission = Permission::Factory;

/// The system-maintained columns every record carries (spec: "Meta Data").
pub const META_COLUMNS: [&str; 4] = ["created_at", "created_by", "modified_at", "modified_by"];

/// The five hierarchical permission levels, lowest first, so `Ord` answers
/// "may a user with level A do something that needs level B".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Permission {
    Overview,
    Technical,
    Admin,
    Factory,
    System,
}

impl Permission {
    /// The spelling the API uses (`"SYSTEM"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overview => "OVERVIEW",
            Self::Technical => "TECHNICAL",
            Self::Admin => "ADMIN",
            Self::Factory => "FACTORY",
            Self::System => "SYSTEM",
        }
    }

    /// Parses the API spelling; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "OVERVIEW" => Some(Self::Overview),
            "TECHNICAL" => Some(Self::Technical),
            "ADMIN" => Some(Self::Admin),
            "FACTORY" => Some(Self::Factory),
            "SYSTEM" => Some(Self::System),
            _ => None,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The column types the spec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int,
    Float,
    /// Short strings (`string`, `varchar(n)`, and the spec's `unknown-type`).
    String,
    /// Free text (`text`).
    Text,
    Boolean,
    /// UTC timestamp without zone, microsecond precision.
    Datetime,
    Date,
    /// A JSON array (e.g. `parameter_types`).
    Array,
}

impl ColumnType {
    /// The name used in validation messages and the OpenAPI document.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::String => "string",
            Self::Text => "text",
            Self::Boolean => "boolean",
            Self::Datetime => "datetime",
            Self::Date => "date",
            Self::Array => "array",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub max_len: Option<usize>,
    pub primary_key: bool,
    pub not_null: bool,
    pub unique: bool,
    /// The referenced table; the referenced column is its primary key.
    pub foreign_key: Option<String>,
    /// A default used by the DDL and on insert when the client omits the column.
    pub default: Option<String>,
    /// The allowed values (`options: [...]` in the spec).
    pub options: Option<Vec<String>>,
    /// The later migration that adds this column (`"0012_issue19"`): the
    /// generated first migration leaves it out, so databases that applied it
    /// keep their checksum; a schema test checks the named migration adds it.
    #[serde(default)]
    pub added_by: Option<String>,
    #[serde(default)]
    pub description: String,
}

impl Column {
    /// A column that is not in the catalogue (a count, a joined field), for
    /// decoding rows.
    pub fn computed(name: &str, ty: ColumnType) -> Self {
        Self {
            name: name.to_string(),
            ty,
            max_len: None,
            primary_key: false,
            not_null: false,
            unique: false,
            foreign_key: None,
            default: None,
            options: None,
            added_by: None,
            description: String::new(),
        }
    }

    /// Set by the system: the meta data columns, and `<table>_id` integer
    /// primary keys. (Natural keys such as `network.mccmnc` or
    /// `channel.name` may be supplied by the client; when left out, the
    /// generic POST assigns them: `http::natural_keys`.)
    pub fn is_system(&self) -> bool {
        META_COLUMNS.contains(&self.name.as_str())
            || (self.primary_key && self.ty == ColumnType::Int && self.name.ends_with("_id"))
    }

    /// Never returned: the user password hash, and the subscriber's webhook
    /// key (stored encrypted; the key is shown once, on subscribe).
    pub fn is_write_only(&self) -> bool {
        self.name == "password" || self.name == "key"
    }

    /// A credential that only [`SECRET_READ_LEVEL`] and above may read,
    /// filter or sort by: `device_key` is a unit's HMAC identity on the
    /// gateway and its HTTP Basic password, so whoever reads it can
    /// impersonate the unit (forge balances, pull its MT commands).
    pub fn is_secret(&self) -> bool {
        self.name == "device_key"
    }

    /// Whether a user with `level` may read (and filter or sort by) this column.
    pub fn readable_by(&self, level: Permission) -> bool {
        !self.is_write_only() && (!self.is_secret() || level >= SECRET_READ_LEVEL)
    }
}

/// Which permission each HTTP method needs; a missing method answers 405.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct Methods {
    pub post: Option<Permission>,
    pub get: Option<Permission>,
    pub put: Option<Permission>,
    pub delete: Option<Permission>,
}

/// How a relation name in a filter (`relation__field`, `has`, `any`) joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The name used in queries.
    pub name: String,
    /// The related table.
    pub target: String,
    /// Column on this table that the join uses.
    pub local_column: String,
    /// Column on the related table that the join uses.
    pub remote_column: String,
    /// `true` when this row points at one related row (a foreign key on this
    /// table); `false` when many related rows point at this one.
    pub to_one: bool,
}

/// How a table declares (in `catalogue/scopes.json`) that its rows belong
/// to an entity. Every table must declare one; a table that does not is
/// refused to ENTITY users (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeDecl {
    /// Reference data that belongs to no entity (types, networks): visible to all.
    Global,
    /// Only GLOBAL users may read it (users, dead letters whose unit may be unknown).
    Admin,
    /// The named column holds the product IMEI.
    Product(String),
    /// The named column holds the owning entity's id.
    Entity(String),
    /// The named foreign key points at a row of a scoped table.
    Via(String),
    /// Parts: through `part_product_linker` (unlinked stock stays visible).
    PartLinker,
}

/// How a row of a table belongs to an entity, for ENTITY-scoped users,
/// resolved from its [`ScopeDecl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductScope {
    /// Reference data that belongs to no product: visible to every user.
    Unscoped,
    /// Refused to ENTITY users: declared admin only, or not declared at all.
    Refused,
    /// The row's own column holds the owning entity's id.
    Entity(String),
    /// The row's own column holds the product IMEI (`product_imei`, or the
    /// product table's primary key).
    Column(String),
    /// The row points (by `column`) at a row of `table`, which is scoped.
    Via { column: String, table: String },
    /// Rows of `table` point at this row by `column` and carry the IMEI in
    /// `imei_column` (parts are linked to products by `part_product_linker`).
    /// A row no linker row points at belongs to no product and stays visible.
    Linked {
        table: String,
        column: String,
        imei_column: String,
    },
}

/// One generic table.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Collection paths under `/v1` (`/action_types`); some tables have two.
    pub paths: Vec<String>,
    /// The name of the URL parameter that addresses one row.
    pub id_param: Option<String>,
    pub columns: Vec<Column>,
    /// Relation names as the spec lists them; resolved into `relations`.
    #[serde(rename = "relationships")]
    relationship_names: Vec<String>,
    pub methods: Methods,
    #[serde(skip)]
    pub relations: Vec<Relation>,
    #[serde(skip, default = "unscoped")]
    pub scope: ProductScope,
    #[serde(skip)]
    column_index: HashMap<String, usize>,
}

fn unscoped() -> ProductScope {
    ProductScope::Unscoped
}

impl Table {
    /// The primary key column.
    pub fn primary_key(&self) -> &Column {
        self.columns
            .iter()
            .find(|c| c.primary_key)
            .expect("catalogue validated: every table has a primary key")
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.column_index.get(name).map(|&i| &self.columns[i])
    }

    /// A relation by name.
    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.iter().find(|r| r.name == name)
    }

    /// The columns any reader may see, in declaration order: no write-only
    /// columns and no credentials ([`Column::is_secret`]). Internal reads
    /// that end in a response use these, so a credential never leaks
    /// through an action's answer.
    pub fn readable_columns(&self) -> impl Iterator<Item = &Column> {
        self.readable_columns_for(Permission::Overview)
    }

    /// The columns a user with `level` may read, in declaration order.
    pub fn readable_columns_for(&self, level: Permission) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(move |c| c.readable_by(level))
    }

    /// The permission a method needs, or `None` when the method is not allowed.
    pub fn permission_for(&self, method: &str) -> Option<Permission> {
        match method {
            "POST" => self.methods.post,
            "GET" => self.methods.get,
            "PUT" => self.methods.put,
            "DELETE" => self.methods.delete,
            _ => None,
        }
    }
}

/// The whole catalogue, with lookups by table name.
#[derive(Debug)]
pub struct Catalogue {
    tables: Vec<Table>,
    by_name: HashMap<String, usize>,
}

/// A catalogue that does not hang together (only possible after a bad edit of
/// `tables.json`; a unit test loads the shipped one).
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The JSON does not parse.
    #[error("catalogue JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// A table has no, or more than one, primary key.
    #[error("table {0} must have exactly one primary key")]
    PrimaryKey(String),
    /// A scope declaration does not fit its table.
    #[error("scope of table {table}: {problem}")]
    Scope { table: String, problem: String },
    /// A foreign key names a table that does not exist.
    #[error("column {table}.{column} references unknown table {target}")]
    UnknownTarget {
        table: String,
        column: String,
        target: String,
    },
    /// Two tables or two columns share a name.
    #[error("duplicate name {0}")]
    Duplicate(String),
}

#[derive(Deserialize)]
struct CatalogueFile {
    tables: Vec<Table>,
}

#[derive(Deserialize)]
struct ScopesFile {
    scopes: HashMap<String, ScopeDecl>,
}

impl Catalogue {
    /// The catalogue compiled into the binary.
    pub fn builtin() -> Self {
        Self::from_json_with_scopes(TABLES_JSON, SCOPES_JSON)
            .expect("the shipped catalogue is valid (tested)")
    }

    /// The scope declarations shipped in the binary, by table name.
    pub fn builtin_scope_declarations() -> HashMap<String, ScopeDecl> {
        serde_json::from_str::<ScopesFile>(SCOPES_JSON)
            .expect("the shipped scopes are valid (tested)")
            .scopes
    }

    /// Parses and validates a catalogue without scope declarations: every
    /// table is then refused to ENTITY users.
    pub fn from_json(json: &str) -> Result<Self, CatalogueError> {
        Self::from_json_with_scopes(json, r#"{"scopes": {}}"#)
    }

    /// Parses and validates a catalogue and its scope declarations,
    /// resolving relations and scope.
    pub fn from_json_with_scopes(json: &str, scopes: &str) -> Result<Self, CatalogueError> {
        let file: CatalogueFile = serde_json::from_str(json)?;
        let decls = serde_json::from_str::<ScopesFile>(scopes)?.scopes;
        let mut tables = file.tables;
        let mut by_name = HashMap::new();
        for (i, t) in tables.iter_mut().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(CatalogueError::Duplicate(t.name.clone()));
            }
            if t.columns.iter().filter(|c| c.primary_key).count() != 1 {
                return Err(CatalogueError::PrimaryKey(t.name.clone()));
            }
            for (ci, c) in t.columns.iter().enumerate() {
                if t.column_index.insert(c.name.clone(), ci).is_some() {
                    return Err(CatalogueError::Duplicate(format!("{}.{}", t.name, c.name)));
                }
            }
        }
        for t in &tables {
            for c in &t.columns {
                if let Some(target) = &c.foreign_key {
                    if !by_name.contains_key(target) {
                        return Err(CatalogueError::UnknownTarget {
                            table: t.name.clone(),
                            column: c.name.clone(),
                            target: target.clone(),
                        });
                    }
                }
            }
        }
        let relations: Vec<Vec<Relation>> = tables
            .iter()
            .map(|t| resolve_relations(t, &tables, &by_name))
            .collect();
        for (t, rels) in tables.iter_mut().zip(relations) {
            t.relations = rels;
        }
        if let Some(unknown) = decls.keys().find(|n| !by_name.contains_key(*n)) {
            return Err(CatalogueError::Scope {
                table: unknown.clone(),
                problem: "declared, but there is no such table".into(),
            });
        }
        let scopes: Vec<ProductScope> = tables
            .iter()
            .map(|t| resolve_scope(t, decls.get(&t.name), &decls))
            .collect::<Result<_, _>>()?;
        for (t, scope) in tables.iter_mut().zip(scopes) {
            t.scope = scope;
        }
        Ok(Self { tables, by_name })
    }

    /// Every table, sorted by name.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.by_name.get(name).map(|&i| &self.tables[i])
    }
}

/// Resolves a table's relations: one to-one relation per foreign key (named
/// after the target table, and after the column without `_id`), and one
/// to-many relation per table with a foreign key to this one (named as the
/// spec's relationship list names it where that can be matched, and always
/// by the referencing table's name).
fn resolve_relations(
    table: &Table,
    tables: &[Table],
    by_name: &HashMap<String, usize>,
) -> Vec<Relation> {
    let mut out: Vec<Relation> = Vec::new();
    let mut push = |r: Relation| {
        if !out.iter().any(|o| o.name == r.name) && table.column(&r.name).is_none() {
            out.push(r);
        }
    };
    for c in &table.columns {
        let Some(target) = &c.foreign_key else {
            continue;
        };
        let target_pk = tables[by_name[target]].primary_key().name.clone();
        let stripped = c.name.strip_suffix("_id").unwrap_or(&c.name).to_string();
        for name in [target.clone(), stripped] {
            push(Relation {
                name,
                target: target.clone(),
                local_column: c.name.clone(),
                remote_column: target_pk.clone(),
                to_one: true,
            });
        }
    }
    let pk = table.primary_key().name.clone();
    let referencing: Vec<(&Table, &Column)> = tables
        .iter()
        .flat_map(|t| t.columns.iter().map(move |c| (t, c)))
        .filter(|(_, c)| c.foreign_key.as_deref() == Some(table.name.as_str()))
        .collect();
    for spec_name in &table.relationship_names {
        let singular = singular(spec_name);
        let found = referencing.iter().find(|(t, _)| {
            t.name == *spec_name || t.name == singular || t.name.ends_with(&format!("_{singular}"))
        });
        if let Some((t, c)) = found {
            push(Relation {
                name: spec_name.clone(),
                target: t.name.clone(),
                local_column: pk.clone(),
                remote_column: c.name.clone(),
                to_one: false,
            });
        }
    }
    for (t, c) in &referencing {
        push(Relation {
            name: t.name.clone(),
            target: t.name.clone(),
            local_column: pk.clone(),
            remote_column: c.name.clone(),
            to_one: false,
        });
    }
    out
}

/// `notes` -> `note`, `histories` -> `history`, `enable_history_rel` -> `enable_history`.
fn singular(name: &str) -> String {
    let name = name.strip_suffix("_rel").unwrap_or(name);
    if let Some(stem) = name.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = name.strip_suffix('s') {
        if name.ends_with("ss") {
            name.to_string()
        } else {
            stem.to_string()
        }
    } else {
        name.to_string()
    }
}

/// Resolves a table's [`ScopeDecl`] (see [`ProductScope`]); a table
/// without one is [`ProductScope::Refused`].
fn resolve_scope(
    table: &Table,
    decl: Option<&ScopeDecl>,
    decls: &HashMap<String, ScopeDecl>,
) -> Result<ProductScope, CatalogueError> {
    let problem = |p: String| CatalogueError::Scope {
        table: table.name.clone(),
        problem: p,
    };
    let column = |c: &str| {
        table
            .column(c)
            .map(|_| c.to_string())
            .ok_or_else(|| problem(format!("no column {c}")))
    };
    Ok(match decl {
        None | Some(ScopeDecl::Admin) => ProductScope::Refused,
        Some(ScopeDecl::Global) => ProductScope::Unscoped,
        Some(ScopeDecl::Product(c)) => ProductScope::Column(column(c)?),
        Some(ScopeDecl::Entity(c)) => ProductScope::Entity(column(c)?),
        Some(ScopeDecl::PartLinker) => ProductScope::Linked {
            table: "part_product_linker".into(),
            column: "part_id".into(),
            imei_column: "product_imei".into(),
        },
        Some(ScopeDecl::Via(c)) => {
            let target = table
                .column(c)
                .and_then(|col| col.foreign_key.clone())
                .ok_or_else(|| problem(format!("{c} is not a foreign key")))?;
            // Through a global table would show every row: declare it global instead.
            match decls.get(&target) {
                None | Some(ScopeDecl::Global) | Some(ScopeDecl::Admin) => {
                    return Err(problem(format!(
                        "{c} points at {target}, which is not scoped by entity"
                    )))
                }
                Some(_) => ProductScope::Via {
                    column: c.clone(),
                    table: target,
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_loads_and_covers_the_spec() {
        let cat = Catalogue::builtin();
        assert!(
            cat.tables().len() >= 84,
            "spec's 80 tables plus the unlisted ones"
        );
        for name in [
            "user",
            "product_entity_linker",
            "tamper_enable_history",
            "product_group",
            "part_parameter",
        ] {
            assert!(cat.table(name).is_some(), "missing {name}");
        }
        let product = cat.table("product").unwrap();
        assert_eq!(product.primary_key().name, "product_imei");
        assert_eq!(product.scope, ProductScope::Column("product_imei".into()));
        assert_eq!(
            product.permission_for("POST"),
            None,
            "products are created by actions only"
        );
        assert_eq!(product.permission_for("GET"), Some(Permission::Overview));
    }

    #[test]
    fn relations_resolve_both_directions() {
        let cat = Catalogue::builtin();
        let product = cat.table("product").unwrap();
        let states = product.relation("states").expect("spec relation name");
        assert_eq!((states.target.as_str(), states.to_one), ("state", false));
        let notes = product.relation("notes").expect("spec relation name");
        assert_eq!(notes.target, "product_note");
        let pt = product
            .relation("product_type")
            .expect("foreign key relation");
        assert!(pt.to_one);
        assert_eq!(pt.remote_column, "product_type_id");
        assert!(product.relation("product_entity_linker").is_some());
    }

    #[test]
    fn scope_follows_product_references() {
        let cat = Catalogue::builtin();
        assert_eq!(
            cat.table("entity").unwrap().scope,
            ProductScope::Entity("entity_id".into())
        );
        assert_eq!(
            cat.table("product_type").unwrap().scope,
            ProductScope::Unscoped
        );
        assert_eq!(
            cat.table("alert").unwrap().scope,
            ProductScope::Column("product_imei".into())
        );
        assert!(matches!(
            cat.table("repair_workflow_event").unwrap().scope,
            ProductScope::Via { ref table, .. } if table == "repair"
        ));
        assert!(matches!(
            cat.table("part").unwrap().scope,
            ProductScope::Linked { .. }
        ));
    }

    #[test]
    fn every_table_declares_its_scope() {
        let decls = Catalogue::builtin_scope_declarations();
        let cat = Catalogue::builtin();
        for t in cat.tables() {
            assert!(decls.contains_key(&t.name), "{} declares no scope", t.name);
        }
        assert_eq!(decls.len(), cat.tables().len());
        assert_eq!(
            cat.table("subscriber").unwrap().scope,
            ProductScope::Entity("entity_id".into())
        );
        assert_eq!(cat.table("user").unwrap().scope, ProductScope::Refused);
        assert!(matches!(
            cat.table("part_parameter").unwrap().scope,
            ProductScope::Via { ref table, .. } if table == "part"
        ));
        assert!(matches!(
            cat.table("shop").unwrap().scope,
            ProductScope::Via { ref table, .. } if table == "hub"
        ));
    }

    #[test]
    fn an_undeclared_table_is_refused_and_bad_declarations_fail() {
        let cat = Catalogue::from_json(TABLES_JSON).unwrap();
        assert!(cat
            .tables()
            .iter()
            .all(|t| t.scope == ProductScope::Refused));
        let bad = r#"{"scopes": {"shop": {"via": "shop_id"}}}"#;
        assert!(Catalogue::from_json_with_scopes(TABLES_JSON, bad).is_err());
        let global_via = r#"{"scopes": {"network": "global", "sim_provider_network_linker": {"via": "network_id"}}}"#;
        let err = Catalogue::from_json_with_scopes(TABLES_JSON, global_via).unwrap_err();
        assert!(err.to_string().contains("not scoped"), "{err}");
        let unknown = r#"{"scopes": {"no_such_table": "global"}}"#;
        assert!(Catalogue::from_json_with_scopes(TABLES_JSON, unknown).is_err());
    }

    #[test]
    fn device_key_is_a_credential_readable_from_factory() {
        let cat = Catalogue::builtin();
        let product = cat.table("product").unwrap();
        let key = product.column("device_key").unwrap();
        assert!(key.is_secret());
        assert!(!key.readable_by(Permission::Admin));
        assert!(key.readable_by(Permission::Factory));
        assert!(!product.readable_columns().any(|c| c.name == "device_key"));
        assert!(product
            .readable_columns_for(Permission::System)
            .any(|c| c.name == "device_key"));
    }

    #[test]
    fn permissions_are_ordered() {
        assert!(Permission::System > Permission::Factory);
        assert!(Permission::Technical > Permission::Overview);
        assert_eq!(Permission::parse("ADMIN"), Some(Permission::Admin));
        assert_eq!(Permission::parse("admin"), None);
    }
}
