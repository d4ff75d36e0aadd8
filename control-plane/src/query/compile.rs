//! Compiling a [`QuerySpec`] against the catalogue into sea-query statements.
//!
//! Shape of the SQL (PostgreSQL shown; SQLite differs only in placeholders):
//!
//! ```sql
//! SELECT "product"."product_imei", ...           -- readable columns, or the group_by fields
//! FROM "product"
//! LEFT JOIN "hub" AS "q3" ON "q3"."hub_id" = "product"."hub_id"   -- to-one order_by/group_by paths
//! WHERE "product"."product_imei" IN (<entity's IMEIs>)             -- scope of the main table
//!   AND EXISTS (SELECT 1 FROM "product_note" AS "q1"               -- relation filter
//!               WHERE "q1"."product_imei" = "product"."product_imei"
//!                 AND "q1"."product_imei" IN (<entity's IMEIs>)   -- scope of the related table
//!                 AND "q1"."note_text" LIKE $2 ESCAPE '\')
//! ORDER BY "q3"."name" DESC NULLS FIRST, "product"."product_imei" ASC
//! LIMIT $3 OFFSET $4
//! ```
//!
//! Every table reached from the main one gets a fresh alias (`q1`, `q2`,
//! ...), so a relation back to the same table (a part replacing a part) or
//! the same table reached twice never makes a column reference ambiguous.

use sea_query::{
    Alias, BinOper, Expr, Func, JoinType, NullOrdering, Order, Query, SelectStatement, SimpleExpr,
    Value,
};
use serde_json::Value as Json;

use super::{
    Argument, Comparison, CompiledQuery, Direction, Filter, Op, Page, QueryError, QuerySpec,
    Viewer, Visibility,
};
use crate::catalogue::{
    Catalogue, Column, ColumnType, Permission, ProductScope, Relation, Table, SECRET_READ_LEVEL,
};
use crate::values;

/// The escape character of every LIKE pattern. PostgreSQL defaults to `\`
/// and SQLite has none, so it is always spelt out to behave the same.
const LIKE_ESCAPE: char = '\\';

/// The largest LIMIT/OFFSET both databases accept (signed 64-bit); also
/// stands in for "no limit" when only an offset is given, because SQLite
/// has no OFFSET without LIMIT.
const MAX_WINDOW: u64 = i64::MAX as u64;

/// Compiles a parsed query for `table` as seen with `visibility`.
///
/// Without `group_by`, `rows` selects the table's readable columns in
/// catalogue order. With `group_by`, it selects exactly the grouped fields,
/// named as written (`product_type_id`, `hub__name`): any other column
/// would be ambiguous within a group and is refused by PostgreSQL, and the
/// grouped values are what a client grouping rows asks for. `order_by` must
/// then name grouped fields too.
///
/// `count` counts what filters, scope, `group_by` and q's own
/// `limit`/`offset` yield. `rows` additionally cuts `page` from that result
/// (Flask-Restless applies q's limit/offset first, then paginates).
///
/// Every table the query touches (the main one, each relation hop of a
/// filter, `has`/`any`, `order_by` and `group_by`) must be readable by the
/// viewer's level and open to its scope, and no credential column may be
/// named below [`SECRET_READ_LEVEL`]; otherwise a 403 error naming the table
/// or column, never rows.
pub fn compile<'c>(
    cat: &'c Catalogue,
    table: &'c Table,
    spec: &QuerySpec,
    viewer: &Viewer,
    page: Option<Page>,
) -> Result<CompiledQuery, QueryError> {
    let mut b = Builder::new(cat, viewer.visibility, viewer.permission);
    admit(table, viewer, &table.name)?;
    let main = At::main(table);

    let mut conditions = Vec::new();
    conditions.extend(b.scope(&main));
    for f in &spec.filters {
        conditions.push(b.filter(&main, f)?);
    }

    let mut joins = Vec::new();
    let mut groups = Vec::new();
    for field in &spec.group_by {
        let g = b.path_expr(&main, &mut joins, field, "group_by")?;
        if !groups.iter().any(|h: &Selected| h.name == g.name) {
            groups.push(g);
        }
    }
    // Group joins come first, so the count statement can take just these.
    let group_joins = joins.len();

    let mut order: Vec<(SimpleExpr, Direction)> = Vec::new();
    let mut ordered_names: Vec<String> = Vec::new();
    for o in &spec.order_by {
        let s = b.path_expr(&main, &mut joins, &o.field, "order_by")?;
        if !groups.is_empty() && !groups.iter().any(|g| g.name == s.name) {
            return Err(QueryError::OrderNotGrouped(o.field.clone()));
        }
        ordered_names.push(s.name);
        order.push((s.expr, o.direction));
    }

    let mut rows = Query::select();
    let (columns, column_types) = if groups.is_empty() {
        let readable: Vec<&Column> = table.readable_columns_for(viewer.permission).collect();
        for c in &readable {
            rows.expr(main.col(&c.name));
        }
        (
            readable.iter().map(|c| c.name.clone()).collect(),
            readable.iter().map(|c| c.ty).collect(),
        )
    } else {
        for g in &groups {
            rows.expr_as(g.expr.clone(), Alias::new(&g.name));
        }
        (
            groups.iter().map(|g| g.name.clone()).collect(),
            groups.iter().map(|g| g.ty).collect(),
        )
    };
    rows.from(Alias::new(&table.name));
    for j in &joins {
        rows.join_as(
            JoinType::LeftJoin,
            Alias::new(&j.at.table.name),
            j.at.alias.clone(),
            j.on.clone(),
        );
    }
    for c in &conditions {
        rows.and_where(c.clone());
    }
    if !groups.is_empty() {
        rows.add_group_by(groups.iter().map(|g| g.expr.clone()));
    }
    for (expr, direction) in order {
        // PostgreSQL's default (NULL sorts as the largest value), spelt out
        // so SQLite, which sorts NULL smallest, returns the same order.
        let (o, nulls) = match direction {
            Direction::Asc => (Order::Asc, NullOrdering::Last),
            Direction::Desc => (Order::Desc, NullOrdering::First),
        };
        rows.order_by_expr_with_nulls(expr, o, nulls);
    }
    // Tie-breakers make pages stable: without them the database may return
    // equal rows in any order, and a row could show on two pages.
    if groups.is_empty() {
        // Not needed after a unique, not-null column of the table: the order is already
        // total, and an index on that column can then serve the whole ORDER BY.
        let total = ordered_names.iter().any(|name| {
            table
                .column(name)
                .is_some_and(|c| c.primary_key || (c.unique && c.not_null))
        });
        if !total {
            rows.order_by_expr(main.col(&table.primary_key().name), Order::Asc);
        }
    } else {
        for g in groups.iter().filter(|g| !ordered_names.contains(&g.name)) {
            rows.order_by_expr_with_nulls(g.expr.clone(), Order::Asc, NullOrdering::Last);
        }
    }
    let (limit, offset) = window(spec.limit, spec.offset, page);
    apply_window(&mut rows, limit, offset);

    let mut counted = Query::select();
    counted.from(Alias::new(&table.name));
    for j in &joins[..group_joins] {
        counted.join_as(
            JoinType::LeftJoin,
            Alias::new(&j.at.table.name),
            j.at.alias.clone(),
            j.on.clone(),
        );
    }
    for c in conditions {
        counted.and_where(c);
    }
    let count = if groups.is_empty() && spec.limit.is_none() && spec.offset.is_none() {
        counted.expr_as(Expr::cust("COUNT(*)"), Alias::new("num_results"));
        counted
    } else {
        // Groups and q's window can only be counted from the outside.
        counted.expr(Expr::cust("1"));
        if !groups.is_empty() {
            counted.add_group_by(groups.iter().map(|g| g.expr.clone()));
        }
        apply_window(&mut counted, spec.limit, spec.offset.unwrap_or(0));
        Query::select()
            .expr_as(Expr::cust("COUNT(*)"), Alias::new("num_results"))
            .from_subquery(counted, Alias::new("counted"))
            .to_owned()
    };

    Ok(CompiledQuery {
        rows,
        count,
        columns,
        column_types,
    })
}

/// The single-row GET: the readable columns of the row whose primary key is
/// `id`, if `visibility` lets the user see it (no row otherwise, which the
/// caller answers with 404, so the row's existence is not revealed either).
///
/// Selects [`Table::readable_columns`] (no credentials): for internal reads
/// whose rows may end up in a response. A user's own GET goes through
/// [`compile_get_as`].
pub fn compile_get(
    cat: &Catalogue,
    table: &Table,
    id: Value,
    visibility: &Visibility,
) -> SelectStatement {
    get_columns(cat, table, id, visibility, table.readable_columns())
}

/// The single-row GET of a user: refused ([`admit`]) when the user may not
/// read the table, and with the columns the user's level may read.
pub fn compile_get_as<'t>(
    cat: &Catalogue,
    table: &'t Table,
    id: Value,
    viewer: &Viewer,
) -> Result<(SelectStatement, Vec<&'t Column>), QueryError> {
    let columns = get_columns_as(table, viewer)?;
    let stmt = get_columns(cat, table, id, &viewer.visibility, columns.iter().copied());
    Ok((stmt, columns))
}

/// The columns of `table` that `viewer` reads in a single-row GET; refused ([`admit`]) when
/// the viewer may not read the table. With [`get_columns`], the parts of [`compile_get_as`]
/// for callers that reuse the rendered statement.
pub fn get_columns_as<'t>(
    table: &'t Table,
    viewer: &Viewer,
) -> Result<Vec<&'t Column>, QueryError> {
    admit(table, viewer, &table.name)?;
    Ok(table.readable_columns_for(viewer.permission).collect())
}

/// `SELECT columns FROM table WHERE pk = id`, restricted to the rows `visibility` may see.
pub fn get_columns<'t>(
    cat: &Catalogue,
    table: &'t Table,
    id: Value,
    visibility: &Visibility,
    columns: impl Iterator<Item = &'t Column>,
) -> SelectStatement {
    let mut b = Builder::new(cat, *visibility, Permission::System);
    let main = At::main(table);
    let mut sel = Query::select();
    for c in columns {
        sel.expr(main.col(&c.name));
    }
    sel.from(Alias::new(&table.name)).and_where(bin(
        main.col(&table.primary_key().name),
        BinOper::Equal,
        id.into(),
    ));
    if let Some(s) = b.scope(&main) {
        sel.and_where(s);
    }
    sel
}

/// The condition that restricts `table` (referenced by its own name) to
/// the rows `visibility` lets a user see; `None` when nothing is hidden
/// (GLOBAL users, and reference tables that belong to no product).
///
/// For ENTITY users, by the table's [`ProductScope`]:
/// - `Column(c)`: `c` is one of the IMEIs currently linked to the entity
///   (`product_entity_linker` rows with `date_removed IS NULL`);
/// - `Via { column, table }`: `column` points at a visible row of `table`;
/// - `Linked { .. }`: no linker row points at the row, or one that does
///   carries a visible IMEI.
///
/// A row whose product column is NULL belongs to no product of the entity
/// and is hidden (except under `Linked`, as above).
pub fn scope_condition(
    cat: &Catalogue,
    table: &Table,
    visibility: &Visibility,
) -> Option<SimpleExpr> {
    Builder::new(cat, *visibility, Permission::System).scope(&At::main(table))
}

/// Whether `viewer` may read `table` at all: its level reaches the table's
/// GET permission (a table without one is readable by nobody), and an
/// ENTITY-scoped viewer is refused tables not open to entities
/// ([`ProductScope::Refused`]). `name` is what the client wrote, for the
/// message.
pub fn admit(table: &Table, viewer: &Viewer, name: &str) -> Result<(), QueryError> {
    let allowed = table
        .permission_for("GET")
        .is_some_and(|needed| viewer.permission >= needed);
    if !allowed {
        return Err(QueryError::TableForbidden {
            name: name.to_string(),
            table: table.name.clone(),
            needed: table.permission_for("GET").map_or_else(
                || "is not readable through the API".to_string(),
                |p| format!("needs {p} permissions to read"),
            ),
            have: viewer.permission.to_string(),
        });
    }
    if matches!(viewer.visibility, Visibility::Entity(_)) && table.scope == ProductScope::Refused {
        return Err(QueryError::ScopeRefused {
            name: name.to_string(),
            table: table.name.clone(),
        });
    }
    Ok(())
}

/// A table as referenced in the statement: by its own name (the main table)
/// or by a fresh alias.
#[derive(Clone)]
struct At<'c> {
    table: &'c Table,
    alias: Alias,
}

impl<'c> At<'c> {
    fn main(table: &'c Table) -> Self {
        Self {
            table,
            alias: Alias::new(&table.name),
        }
    }

    fn col(&self, name: &str) -> SimpleExpr {
        Expr::col((self.alias.clone(), Alias::new(name))).into()
    }
}

/// One step along a relation path.
struct Hop<'c> {
    relation: &'c Relation,
    table: &'c Table,
}

/// What a filter/order/group name denotes.
enum Target<'c> {
    /// A column, reached through zero or more relations.
    Column(Vec<Hop<'c>>, &'c Column),
    /// A relation (the last hop), for `has`/`any`.
    Relation(Vec<Hop<'c>>),
}

/// A LEFT JOIN for an `order_by`/`group_by` path through to-one relations.
struct Join<'c> {
    /// Relation names up to this table (`hub`, `hub__region`), to reuse joins.
    path: String,
    at: At<'c>,
    on: SimpleExpr,
}

/// A selected or sorted expression with its output name and type.
struct Selected {
    expr: SimpleExpr,
    name: String,
    ty: ColumnType,
}

struct Builder<'c> {
    cat: &'c Catalogue,
    visibility: Visibility,
    /// The viewer's level: every table and column a name reaches is checked against it.
    permission: Permission,
    aliases: usize,
}

fn bin(left: SimpleExpr, op: BinOper, right: SimpleExpr) -> SimpleExpr {
    SimpleExpr::Binary(Box::new(left), op, Box::new(right))
}

/// `pattern ESCAPE '\'`, in the shape sea-query renders without parentheses.
fn escaped(pattern: SimpleExpr) -> SimpleExpr {
    bin(
        pattern,
        BinOper::Escape,
        SimpleExpr::Constant(LIKE_ESCAPE.into()),
    )
}

/// Constant truth values, spelt so both databases (and SQLite before
/// TRUE/FALSE keywords) accept them.
fn always() -> SimpleExpr {
    Expr::cust("1 = 1")
}

fn never() -> SimpleExpr {
    Expr::cust("1 = 0")
}

impl<'c> Builder<'c> {
    fn new(cat: &'c Catalogue, visibility: Visibility, permission: Permission) -> Self {
        Self {
            cat,
            visibility,
            permission,
            aliases: 0,
        }
    }

    fn viewer(&self) -> Viewer {
        Viewer {
            visibility: self.visibility,
            permission: self.permission,
        }
    }

    /// A column the viewer may name, or the reason it may not.
    fn readable_column(
        &self,
        table: &'c Table,
        column: &'c Column,
        name: &str,
    ) -> Result<&'c Column, QueryError> {
        if column.readable_by(self.permission) {
            Ok(column)
        } else {
            Err(QueryError::SecretColumn {
                name: name.to_string(),
                table: table.name.clone(),
                column: column.name.clone(),
                needed: SECRET_READ_LEVEL.to_string(),
            })
        }
    }

    fn fresh(&mut self, table: &'c Table) -> At<'c> {
        self.aliases += 1;
        At {
            table,
            alias: Alias::new(format!("q{}", self.aliases)),
        }
    }

    fn target(&self, from: &Table, r: &Relation) -> Result<&'c Table, QueryError> {
        // The catalogue resolves relations from its own tables, so this only
        // fails for a hand-made catalogue; report it as an unknown relation.
        self.cat
            .table(&r.target)
            .ok_or_else(|| QueryError::UnknownRelation {
                table: from.name.clone(),
                relation: r.name.clone(),
            })
    }

    // ---- scope ------------------------------------------------------------

    fn scope(&mut self, at: &At<'c>) -> Option<SimpleExpr> {
        let Visibility::Entity(entity) = self.visibility else {
            return None;
        };
        match &at.table.scope {
            ProductScope::Unscoped => None,
            // Callers refuse these tables up front ([`admit`]); the SQL
            // hides every row as well, in case one does not.
            ProductScope::Refused => Some(never()),
            ProductScope::Entity(c) => Some(bin(at.col(c), BinOper::Equal, entity.into())),
            ProductScope::Column(c) => {
                Some(Expr::expr(at.col(c)).in_subquery(self.entity_imeis(entity)))
            }
            ProductScope::Via { column, table } => {
                // Fail closed: an inconsistent catalogue hides rather than shows.
                let Some(t) = self.cat.table(table) else {
                    return Some(never());
                };
                let via = self.fresh(t);
                let mut sel = Query::select();
                sel.expr(via.col(&t.primary_key().name))
                    .from_as(Alias::new(&t.name), via.alias.clone());
                if let Some(s) = self.scope(&via) {
                    sel.and_where(s);
                }
                Some(Expr::expr(at.col(column)).in_subquery(sel))
            }
            ProductScope::Linked {
                table,
                column,
                imei_column,
            } => {
                let Some(t) = self.cat.table(table) else {
                    return Some(never());
                };
                let pk = at.col(&at.table.primary_key().name);
                let any_link = self.fresh(t);
                let mut unlinked = Query::select();
                unlinked
                    .expr(Expr::cust("1"))
                    .from_as(Alias::new(&t.name), any_link.alias.clone())
                    .and_where(bin(any_link.col(column), BinOper::Equal, pk.clone()));
                let visible_link = self.fresh(t);
                let mut linked = Query::select();
                linked
                    .expr(Expr::cust("1"))
                    .from_as(Alias::new(&t.name), visible_link.alias.clone())
                    .and_where(bin(visible_link.col(column), BinOper::Equal, pk))
                    .and_where(
                        Expr::expr(visible_link.col(imei_column))
                            .in_subquery(self.entity_imeis(entity)),
                    );
                Some(Expr::exists(unlinked).not().or(Expr::exists(linked)))
            }
        }
    }

    /// `SELECT product_imei FROM product_entity_linker WHERE entity_id = ?
    /// AND date_removed IS NULL`: the products an entity holds now.
    fn entity_imeis(&mut self, entity: i64) -> SelectStatement {
        self.aliases += 1;
        let a = Alias::new(format!("q{}", self.aliases));
        let col = |name: &str| -> SimpleExpr { Expr::col((a.clone(), Alias::new(name))).into() };
        Query::select()
            .expr(col("product_imei"))
            .from_as(Alias::new("product_entity_linker"), a.clone())
            .and_where(bin(col("entity_id"), BinOper::Equal, entity.into()))
            .and_where(Expr::expr(col("date_removed")).is_null())
            .to_owned()
    }

    // ---- names ------------------------------------------------------------

    /// Resolves `column`, `relation`, or `rel__rel__column` from `table`.
    fn resolve(&self, table: &'c Table, name: &str) -> Result<Target<'c>, QueryError> {
        let mut hops = Vec::new();
        let mut t = table;
        let mut rest = name;
        loop {
            // Write-only columns (password hashes, encrypted webhook keys)
            // cannot be filtered or sorted on: that would let a client test
            // guesses against them.
            if let Some(c) = t.column(rest).filter(|c| !c.is_write_only()) {
                return Ok(Target::Column(hops, self.readable_column(t, c, name)?));
            }
            if let Some(r) = t.relation(rest) {
                let next = self.target(t, r)?;
                admit(next, &self.viewer(), name)?;
                hops.push(Hop {
                    relation: r,
                    table: next,
                });
                return Ok(Target::Relation(hops));
            }
            let Some((head, tail)) = rest.split_once("__") else {
                return Err(QueryError::UnknownField {
                    table: t.name.clone(),
                    field: rest.to_string(),
                });
            };
            let r = t
                .relation(head)
                .ok_or_else(|| QueryError::UnknownRelation {
                    table: t.name.clone(),
                    relation: head.to_string(),
                })?;
            let next = self.target(t, r)?;
            admit(next, &self.viewer(), name)?;
            hops.push(Hop {
                relation: r,
                table: next,
            });
            t = next;
            rest = tail;
        }
    }

    // ---- filters ----------------------------------------------------------

    fn filter(&mut self, at: &At<'c>, f: &Filter) -> Result<SimpleExpr, QueryError> {
        match f {
            Filter::And(list) => self.all(at, list),
            Filter::Or(list) => {
                let mut out: Option<SimpleExpr> = None;
                for f in list {
                    let e = self.filter(at, f)?;
                    out = Some(match out {
                        Some(acc) => acc.or(e),
                        None => e,
                    });
                }
                Ok(out.unwrap_or_else(never))
            }
            Filter::Compare(c) => self.comparison(at, c),
        }
    }

    fn all(&mut self, at: &At<'c>, list: &[Filter]) -> Result<SimpleExpr, QueryError> {
        let mut out: Option<SimpleExpr> = None;
        for f in list {
            let e = self.filter(at, f)?;
            out = Some(match out {
                Some(acc) => acc.and(e),
                None => e,
            });
        }
        Ok(out.unwrap_or_else(always))
    }

    fn comparison(&mut self, at: &At<'c>, c: &Comparison) -> Result<SimpleExpr, QueryError> {
        let target = self.resolve(at.table, &c.name)?;
        if c.op == Op::NotAny {
            return Ok(self.has_any(at, c, target)?.not());
        }
        if c.op.is_relational() {
            return self.has_any(at, c, target);
        }
        let (hops, column) = match target {
            Target::Column(hops, column) => (hops, column),
            Target::Relation(_) => {
                return Err(QueryError::NotAField {
                    name: c.name.clone(),
                })
            }
        };
        // Resolved against `at` before descending: `field` names a column of
        // the table the filter is written against (Flask-Restless).
        let other = match &c.arg {
            Argument::Field(f) => Some(self.other_field(at, c, column, f)?),
            _ => None,
        };
        self.through(at, &hops, |b, inner| {
            b.predicate(inner.col(&column.name), column, c, other)
        })
    }

    /// `cond` evaluated on the row at the end of `hops`: nested EXISTS, one
    /// per hop, each correlated with its parent and restricted by the scope
    /// of the table it reads.
    fn through(
        &mut self,
        at: &At<'c>,
        hops: &[Hop<'c>],
        leaf: impl FnOnce(&mut Self, &At<'c>) -> Result<SimpleExpr, QueryError>,
    ) -> Result<SimpleExpr, QueryError> {
        let mut chain = Vec::with_capacity(hops.len());
        let mut parent = at.clone();
        for hop in hops {
            let child = self.fresh(hop.table);
            chain.push((hop.relation, parent, child.clone()));
            parent = child;
        }
        let mut cond = leaf(self, &parent)?;
        for (relation, parent, child) in chain.into_iter().rev() {
            let mut sel = Query::select();
            sel.expr(Expr::cust("1"))
                .from_as(Alias::new(&child.table.name), child.alias.clone())
                .and_where(bin(
                    child.col(&relation.remote_column),
                    BinOper::Equal,
                    parent.col(&relation.local_column),
                ));
            if let Some(s) = self.scope(&child) {
                sel.and_where(s);
            }
            sel.and_where(cond);
            cond = Expr::exists(sel);
        }
        Ok(cond)
    }

    fn other_field(
        &self,
        at: &At<'c>,
        c: &Comparison,
        column: &Column,
        other: &str,
    ) -> Result<SimpleExpr, QueryError> {
        let oc = at
            .table
            .column(other)
            .filter(|c| !c.is_write_only())
            .ok_or_else(|| QueryError::UnknownField {
                table: at.table.name.clone(),
                field: other.to_string(),
            })?;
        let oc = self.readable_column(at.table, oc, other)?;
        if !comparable(column.ty, oc.ty) {
            return Err(QueryError::Incomparable {
                name: c.name.clone(),
                ty: column.ty.as_str(),
                other: oc.name.clone(),
                other_ty: oc.ty.as_str(),
            });
        }
        Ok(at.col(&oc.name))
    }

    /// `col <op> <argument>` for a column (not a relation).
    fn predicate(
        &self,
        col: SimpleExpr,
        column: &Column,
        c: &Comparison,
        other: Option<SimpleExpr>,
    ) -> Result<SimpleExpr, QueryError> {
        match c.op {
            Op::IsNull => return Ok(Expr::expr(col).is_null()),
            Op::IsNotNull => return Ok(Expr::expr(col).is_not_null()),
            _ => {}
        }
        let not_applicable = || QueryError::OperatorNotApplicable {
            name: c.name.clone(),
            op: c.op_name.clone(),
            ty: column.ty.as_str(),
        };
        let textual = matches!(column.ty, ColumnType::String | ColumnType::Text);
        // JSON arrays have no portable comparison (PostgreSQL's json has no `=`).
        if column.ty == ColumnType::Array || (matches!(c.op, Op::Like | Op::ILike) && !textual) {
            return Err(not_applicable());
        }
        let right = match (other, &c.arg) {
            (Some(other), _) => other,
            (None, Argument::Value(v)) => match c.op {
                Op::In | Op::NotIn => {
                    let list = v.as_array().ok_or_else(|| QueryError::NotAList {
                        name: c.name.clone(),
                        op: c.op_name.clone(),
                    })?;
                    let values = list
                        .iter()
                        .map(|v| coerce(column, v, &c.name))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok(if c.op == Op::In {
                        Expr::expr(col).is_in(values)
                    } else {
                        Expr::expr(col).is_not_in(values)
                    });
                }
                // A pattern is not a value of the column: no options or
                // length check, only "is it text".
                Op::Like | Op::ILike => match v {
                    Json::String(s) => SimpleExpr::Value(s.as_str().into()),
                    _ => {
                        return Err(QueryError::PatternNotString {
                            name: c.name.clone(),
                            op: c.op_name.clone(),
                        })
                    }
                },
                _ => SimpleExpr::Value(coerce(column, v, &c.name)?),
            },
            // The parser guarantees an argument for binary operators.
            (None, _) => {
                return Err(QueryError::MissingArgument {
                    name: c.name.clone(),
                    op: c.op_name.clone(),
                    needs: "'val' or 'field'",
                })
            }
        };
        Ok(match c.op {
            Op::Eq => bin(col, BinOper::Equal, right),
            Op::Ne => bin(col, BinOper::NotEqual, right),
            Op::Gt => bin(col, BinOper::GreaterThan, right),
            Op::Lt => bin(col, BinOper::SmallerThan, right),
            Op::Ge => bin(col, BinOper::GreaterThanOrEqual, right),
            Op::Le => bin(col, BinOper::SmallerThanOrEqual, right),
            Op::Like => bin(col, BinOper::Like, escaped(right)),
            // LOWER on both sides, in SQL, so the two sides are folded by
            // the same function (Rust's Unicode lowercasing and SQLite's
            // ASCII-only LOWER disagree on non-ASCII text).
            Op::ILike => bin(
                Func::lower(col).into(),
                BinOper::Like,
                escaped(Func::lower(right).into()),
            ),
            Op::In | Op::NotIn => {
                return Err(QueryError::NotAList {
                    name: c.name.clone(),
                    op: c.op_name.clone(),
                })
            }
            Op::IsNull | Op::IsNotNull | Op::Has | Op::Any | Op::NotAny => {
                unreachable!("handled above")
            }
        })
    }

    /// `has`/`any`: some related row (visible to the user) satisfies `val`.
    fn has_any(
        &mut self,
        at: &At<'c>,
        c: &Comparison,
        target: Target<'c>,
    ) -> Result<SimpleExpr, QueryError> {
        let not_a_relation = || QueryError::NotARelation {
            name: c.name.clone(),
            op: c.op_name.clone(),
        };
        match (target, &c.arg) {
            (Target::Relation(hops), Argument::Filters(filters)) => {
                self.through(at, &hops, |b, inner| b.all(inner, filters))
            }
            // A plain value: the related row's primary key matches it.
            (Target::Relation(hops), Argument::Value(v)) => {
                let pk = hops
                    .last()
                    .expect("a relation target has a hop")
                    .table
                    .primary_key();
                self.through(at, &hops, |_, inner| {
                    matches_value(inner.col(&pk.name), pk, v, &c.name)
                })
            }
            // Flask-Restless' legacy form: `relation__field` with `has`/`any`
            // and a value means `field == val` on the related row.
            (Target::Column(hops, column), Argument::Value(v)) if !hops.is_empty() => {
                if column.ty == ColumnType::Array {
                    return Err(QueryError::OperatorNotApplicable {
                        name: c.name.clone(),
                        op: c.op_name.clone(),
                        ty: column.ty.as_str(),
                    });
                }
                self.through(at, &hops, |_, inner| {
                    matches_value(inner.col(&column.name), column, v, &c.name)
                })
            }
            (Target::Column(..), Argument::Filters(_) | Argument::Value(_)) => {
                Err(not_a_relation())
            }
            (_, Argument::None | Argument::Field(_)) => Err(QueryError::MissingArgument {
                name: c.name.clone(),
                op: c.op_name.clone(),
                needs: "'val'",
            }),
        }
    }

    // ---- order_by / group_by ---------------------------------------------

    /// A column, or a column reached through to-one relations (LEFT JOINed
    /// once per distinct path, with the scope of each joined table in the ON
    /// clause so an invisible related row sorts and groups as NULL).
    fn path_expr(
        &mut self,
        main: &At<'c>,
        joins: &mut Vec<Join<'c>>,
        name: &str,
        key: &'static str,
    ) -> Result<Selected, QueryError> {
        let (hops, column) = match self.resolve(main.table, name)? {
            Target::Column(hops, column) => (hops, column),
            Target::Relation(_) => {
                return Err(QueryError::NotAField {
                    name: name.to_string(),
                })
            }
        };
        if column.ty == ColumnType::Array {
            return Err(QueryError::OperatorNotApplicable {
                name: name.to_string(),
                op: key.to_string(),
                ty: "array",
            });
        }
        let mut at = main.clone();
        let mut path = String::new();
        for hop in &hops {
            if !hop.relation.to_one {
                return Err(QueryError::ToManyPath {
                    key,
                    name: name.to_string(),
                    relation: hop.relation.name.clone(),
                });
            }
            if !path.is_empty() {
                path.push_str("__");
            }
            path.push_str(&hop.relation.name);
            at = match joins.iter().find(|j| j.path == path) {
                Some(j) => j.at.clone(),
                None => {
                    let child = self.fresh(hop.table);
                    let mut on = bin(
                        child.col(&hop.relation.remote_column),
                        BinOper::Equal,
                        at.col(&hop.relation.local_column),
                    );
                    if let Some(s) = self.scope(&child) {
                        on = on.and(s);
                    }
                    joins.push(Join {
                        path: path.clone(),
                        at: child.clone(),
                        on,
                    });
                    child
                }
            };
        }
        // The output name is rebuilt from catalogue names, never echoed.
        let name = if path.is_empty() {
            column.name.clone()
        } else {
            format!("{path}__{}", column.name)
        };
        Ok(Selected {
            expr: at.col(&column.name),
            name,
            ty: column.ty,
        })
    }
}

/// `col = val`, or `col IN (...)` for a list.
fn matches_value(
    col: SimpleExpr,
    column: &Column,
    v: &Json,
    name: &str,
) -> Result<SimpleExpr, QueryError> {
    Ok(match v {
        Json::Array(list) => Expr::expr(col).is_in(
            list.iter()
                .map(|v| coerce(column, v, name))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => bin(
            col,
            BinOper::Equal,
            SimpleExpr::Value(coerce(column, v, name)?),
        ),
    })
}

fn coerce(column: &Column, v: &Json, name: &str) -> Result<Value, QueryError> {
    values::coerce(column, v).map_err(|source| QueryError::BadValue {
        name: name.to_string(),
        source,
    })
}

/// Whether two column types compare without a cast on both databases.
fn comparable(a: ColumnType, b: ColumnType) -> bool {
    use ColumnType as T;
    let family = |t| match t {
        T::Int | T::Float => 0,
        T::String | T::Text => 1,
        T::Datetime | T::Date => 2,
        T::Boolean => 3,
        T::Array => 4,
    };
    a != T::Array && b != T::Array && family(a) == family(b)
}

/// The rows window: q's own limit/offset, then the page cut from within it.
fn window(limit: Option<u64>, offset: Option<u64>, page: Option<Page>) -> (Option<u64>, u64) {
    let offset = offset.unwrap_or(0);
    match page {
        Some(p) if p.per_page > 0 => {
            let start = p.page.max(1).saturating_sub(1).saturating_mul(p.per_page);
            let take = match limit {
                Some(l) => l.saturating_sub(start).min(p.per_page),
                None => p.per_page,
            };
            (Some(take), offset.saturating_add(start))
        }
        _ => (limit, offset),
    }
}

fn apply_window(sel: &mut SelectStatement, limit: Option<u64>, offset: u64) {
    if offset > 0 {
        sel.limit(limit.unwrap_or(MAX_WINDOW).min(MAX_WINDOW))
            .offset(offset.min(MAX_WINDOW));
    } else if let Some(l) = limit {
        sel.limit(l.min(MAX_WINDOW));
    }
}

#[cfg(test)]
mod tests;
