//! SQL-shape tests: what the compiler emits, on both builders, and that
//! client values only ever travel as bound parameters.

use std::sync::OnceLock;

use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder, Values};
use serde_json::json;

use super::*;
use crate::query::parse;

fn cat() -> &'static Catalogue {
    static CAT: OnceLock<Catalogue> = OnceLock::new();
    CAT.get_or_init(Catalogue::builtin)
}

fn table(name: &str) -> &'static Table {
    cat().table(name).unwrap()
}

fn try_compile(
    t: &str,
    q: serde_json::Value,
    vis: Visibility,
) -> Result<CompiledQuery, QueryError> {
    let viewer = Viewer {
        visibility: vis,
        permission: Permission::System,
    };
    compile(cat(), table(t), &parse(&q.to_string())?, &viewer, None)
}

fn compiled(t: &str, q: serde_json::Value, vis: Visibility) -> CompiledQuery {
    try_compile(t, q, vis).unwrap()
}

fn err(t: &str, q: serde_json::Value) -> String {
    try_compile(t, q, Visibility::Global)
        .map(|c| pg(&c.rows).0)
        .unwrap_err()
        .to_string()
}

fn pg(stmt: &SelectStatement) -> (String, Values) {
    stmt.build(PostgresQueryBuilder)
}

fn lite(stmt: &SelectStatement) -> (String, Values) {
    stmt.build(SqliteQueryBuilder)
}

fn filters(f: serde_json::Value) -> serde_json::Value {
    json!({ "filters": [f] })
}

fn string(s: &str) -> Value {
    Value::String(Some(Box::new(s.to_string())))
}

#[test]
fn a_plain_filter_binds_its_value() {
    let c = compiled(
        "product",
        filters(json!({"name": "product_imei", "op": "eq", "val": "013777894687"})),
        Visibility::Global,
    );
    let (sql, values) = pg(&c.rows);
    assert!(
        sql.starts_with(r#"SELECT "product"."product_imei", "product"."analysis_timestamp""#),
        "{sql}"
    );
    assert!(
        sql.contains(r#"FROM "product" WHERE "product"."product_imei" = $1"#),
        "{sql}"
    );
    assert!(
        sql.ends_with(r#"ORDER BY "product"."product_imei" ASC"#),
        "{sql}"
    );
    assert_eq!(values.0, vec![string("013777894687")]);
    assert_eq!(
        c.columns.len(),
        table("product")
            .readable_columns_for(Permission::System)
            .count()
    );
    assert_eq!(c.columns[0], "product_imei");
    assert_eq!(
        pg(&c.count).0,
        r#"SELECT COUNT(*) AS "num_results" FROM "product" WHERE "product"."product_imei" = $1"#
    );
}

#[test]
fn every_comparison_operator_compiles() {
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("==", json!(4), r#""product"."product_type_id" = $1"#),
        ("!=", json!(4), r#""product"."product_type_id" <> $1"#),
        (">", json!(4), r#""product"."product_type_id" > $1"#),
        ("<", json!(4), r#""product"."product_type_id" < $1"#),
        (">=", json!(4), r#""product"."product_type_id" >= $1"#),
        ("<=", json!(4), r#""product"."product_type_id" <= $1"#),
        (
            "in",
            json!([4, 6]),
            r#""product"."product_type_id" IN ($1, $2)"#,
        ),
        (
            "not_in",
            json!([4]),
            r#""product"."product_type_id" NOT IN ($1)"#,
        ),
        (
            "is_null",
            json!(""),
            r#""product"."product_type_id" IS NULL"#,
        ),
        (
            "is_not_null",
            json!(""),
            r#""product"."product_type_id" IS NOT NULL"#,
        ),
    ];
    for (op, val, expected) in cases {
        let c = compiled(
            "product",
            filters(json!({"name": "product_type_id", "op": op, "val": val})),
            Visibility::Global,
        );
        let sql = pg(&c.rows).0;
        assert!(sql.contains(expected), "{op}: {sql}");
    }
}

#[test]
fn like_is_escaped_and_ilike_lowers_both_sides() {
    let like = compiled(
        "product",
        filters(json!({"name": "serial_number", "op": "like", "val": "SN%"})),
        Visibility::Global,
    );
    assert!(
        pg(&like.rows)
            .0
            .contains(r#""product"."serial_number" LIKE $1 ESCAPE E'\\'"#),
        "{}",
        pg(&like.rows).0
    );
    assert!(
        lite(&like.rows)
            .0
            .contains(r#""product"."serial_number" LIKE ? ESCAPE '\'"#),
        "{}",
        lite(&like.rows).0
    );
    let ilike = compiled(
        "product",
        filters(json!({"name": "serial_number", "op": "ilike", "val": "sn%"})),
        Visibility::Global,
    );
    let (sql, values) = lite(&ilike.rows);
    assert!(
        sql.contains(r#"LOWER("product"."serial_number") LIKE LOWER(?) ESCAPE '\'"#),
        "{sql}"
    );
    assert_eq!(values.0, vec![string("sn%")]);
}

#[test]
fn injection_attempts_stay_in_the_values() {
    let evil = "x' OR 1=1 --";
    for op in ["eq", "like", "ilike", "in", "!="] {
        let val = if op == "in" {
            json!([evil])
        } else {
            json!(evil)
        };
        let q = json!({"filters": [
            {"name": "serial_number", "op": op, "val": val},
            {"name": "notes__note_text", "op": op, "val": val},
            {"name": "notes", "op": "any", "val": {"name": "note_text", "op": op, "val": val}}
        ]});
        let c = compiled("product", q, Visibility::Entity(7));
        for (sql, values) in [pg(&c.rows), lite(&c.rows), pg(&c.count), lite(&c.count)] {
            assert!(!sql.contains("1=1") && !sql.contains(evil), "{op}: {sql}");
            assert_eq!(
                values.0.iter().filter(|v| **v == string(evil)).count(),
                3,
                "{op}: {values:?}"
            );
        }
    }
}

#[test]
fn nested_and_or() {
    let q = filters(json!({"or": [
        {"name": "product_type_id", "op": "eq", "val": 4},
        {"and": [{"name": "hub_id", "op": "eq", "val": 1}, {"name": "shop_id", "op": "is_null"}]}
    ]}));
    let (sql, values) = pg(&compiled("product", q, Visibility::Global).rows);
    assert!(
        sql.contains(
            r#"WHERE "product"."product_type_id" = $1 OR ("product"."hub_id" = $2 AND "product"."shop_id" IS NULL)"#
        ),
        "{sql}"
    );
    assert_eq!(
        values.0,
        vec![Value::BigInt(Some(4)), Value::BigInt(Some(1))]
    );
    // Empty junctions: AND of nothing holds, OR of nothing never does.
    let sql = pg(&compiled(
        "product",
        json!({"filters": [{"and": []}, {"or": []}]}),
        Visibility::Global,
    )
    .rows)
    .0;
    assert!(sql.contains("WHERE (1 = 1) AND (1 = 0)"), "{sql}");
}

#[test]
fn relation_filters_become_correlated_exists() {
    let to_many = compiled(
        "product",
        filters(json!({"name": "notes__note_text", "op": "like", "val": "%low%"})),
        Visibility::Global,
    );
    let sql = pg(&to_many.rows).0;
    assert!(
        sql.contains(
            r#"WHERE EXISTS(SELECT 1 FROM "product_note" AS "q1" WHERE "q1"."product_imei" = "product"."product_imei" AND "q1"."note_text" LIKE $1 ESCAPE E'\\')"#
        ),
        "{sql}"
    );
    let to_one = compiled(
        "product",
        filters(json!({"name": "product_type__name", "op": "eq", "val": "home2"})),
        Visibility::Global,
    );
    let sql = pg(&to_one.rows).0;
    assert!(
        sql.contains(
            r#"EXISTS(SELECT 1 FROM "product_type" AS "q1" WHERE "q1"."product_type_id" = "product"."product_type_id" AND "q1"."name" = $1)"#
        ),
        "{sql}"
    );
    // Two hops: note -> product -> product_type.
    let deep = compiled(
        "product_note",
        filters(json!({"name": "product__product_type__name", "op": "eq", "val": "x"})),
        Visibility::Global,
    );
    let sql = pg(&deep.rows).0;
    assert!(
        sql.contains(r#"FROM "product" AS "q1""#) && sql.contains(r#"FROM "product_type" AS "q2""#),
        "{sql}"
    );
    assert!(
        sql.contains(r#""q2"."product_type_id" = "q1"."product_type_id""#),
        "{sql}"
    );
}

#[test]
fn has_and_any_forms() {
    // Nested filter object on the related table.
    let sql = pg(&compiled("product", filters(json!({"name": "notes", "op": "any", "val": {"name": "note_text", "op": "eq", "val": "a"}})), Visibility::Global).rows).0;
    assert!(sql.contains(r#"EXISTS(SELECT 1 FROM "product_note" AS "q1" WHERE "q1"."product_imei" = "product"."product_imei" AND "q1"."note_text" = $1)"#), "{sql}");
    // A list of nested filters: all must hold on the same related row.
    let sql = pg(&compiled("product", filters(json!({"name": "notes", "op": "any", "val": [
        {"name": "note_text", "op": "eq", "val": "a"}, {"name": "product_note_id", "op": "gt", "val": 3}
    ]})), Visibility::Global).rows).0;
    assert!(
        sql.contains(r#""q1"."note_text" = $1 AND "q1"."product_note_id" > $2)"#),
        "{sql}"
    );
    // A plain value list: the related primary key.
    let (sql, values) = pg(&compiled(
        "product",
        filters(json!({"name": "notes", "op": "any", "val": [1, 2]})),
        Visibility::Global,
    )
    .rows);
    assert!(
        sql.contains(r#""q1"."product_note_id" IN ($1, $2)"#),
        "{sql}"
    );
    assert_eq!(
        values.0,
        vec![Value::BigInt(Some(1)), Value::BigInt(Some(2))]
    );
    // Flask-Restless' legacy form: relation__field with a value means ==.
    let sql = pg(&compiled(
        "product",
        filters(json!({"name": "product_type__name", "op": "has", "val": "home2"})),
        Visibility::Global,
    )
    .rows)
    .0;
    assert!(sql.contains(r#""q1"."name" = $1"#), "{sql}");
    // Nested has/any inside has/any.
    let sql = pg(&compiled(
        "product_type",
        filters(json!({"name": "products", "op": "any", "val":
        {"name": "notes", "op": "any", "val": {"name": "note_text", "op": "is_null"}}})),
        Visibility::Global,
    )
    .rows)
    .0;
    assert!(
        sql.contains(r#"FROM "product" AS "q1""#) && sql.contains(r#""q2"."note_text" IS NULL"#),
        "{sql}"
    );
}

#[test]
fn column_to_column() {
    let q = filters(
        json!({"name": "desired_tamper_flag", "op": "equals_to", "fieldname": "current_tamper_flag"}),
    );
    let (sql, values) = pg(&compiled("product", q, Visibility::Global).rows);
    assert!(
        sql.contains(r#""product"."desired_tamper_flag" = "product"."current_tamper_flag""#),
        "{sql}"
    );
    assert!(values.0.is_empty());
    // With relation__field, `field` is a column of the queried table.
    let q = filters(json!({"name": "notes__created_at", "op": "gt", "field": "created_at"}));
    let sql = pg(&compiled("product", q, Visibility::Global).rows).0;
    assert!(
        sql.contains(r#""q1"."created_at" > "product"."created_at""#),
        "{sql}"
    );
}

#[test]
fn entity_scope_reaches_every_table_a_query_reads() {
    let entity_imeis = |alias: &str| {
        format!(
            r#"(SELECT "{alias}"."product_imei" FROM "product_entity_linker" AS "{alias}" WHERE "{alias}"."entity_id" = "#
        )
    };
    let c = compiled(
        "product",
        json!({
            "filters": [{"name": "notes__note_text", "op": "eq", "val": "x"}],
            "order_by": [{"field": "hub__name", "direction": "desc"}]
        }),
        Visibility::Entity(7),
    );
    let (sql, values) = pg(&c.rows);
    // The main table.
    assert!(
        sql.contains(&format!(
            r#"WHERE "product"."product_imei" IN {}"#,
            entity_imeis("q1")
        )),
        "{sql}"
    );
    // The related table of the filter.
    assert!(
        sql.contains(&format!(
            r#"AND "q2"."product_imei" IN {}"#,
            entity_imeis("q3")
        )),
        "{sql}"
    );
    // The ordering join, with the hub's own (entity column) scope in its ON clause.
    assert!(
        sql.contains(r#"LEFT JOIN "hub" AS "q4" ON "q4"."hub_id" = "product"."hub_id" AND "q4"."entity_id" = $"#),
        "{sql}"
    );
    assert!(
        sql.contains(r#"ORDER BY "q4"."name" DESC NULLS FIRST, "product"."product_imei" ASC"#),
        "{sql}"
    );
    assert_eq!(
        values
            .0
            .iter()
            .filter(|v| **v == Value::BigInt(Some(7)))
            .count(),
        3,
        "{values:?}"
    );
    assert!(pg(&c.count).0.contains(r#"IN (SELECT "q1"."product_imei""#));
    // A table scoped through another one.
    let sql = pg(&compiled("repair_workflow_event", json!({}), Visibility::Entity(7)).rows).0;
    assert!(
        sql.contains(r#"WHERE "repair_workflow_event"."repair_id" IN (SELECT "q1"."repair_id" FROM "repair" AS "q1" WHERE "q1"."product_imei" IN (SELECT"#),
        "{sql}"
    );
    // Parts: unlinked, or linked to a visible product.
    let sql = pg(&compiled("part", json!({}), Visibility::Entity(7)).rows).0;
    assert!(sql.contains(r#"WHERE (NOT EXISTS(SELECT 1 FROM "part_product_linker" AS "q1" WHERE "q1"."part_id" = "part"."part_id")) OR EXISTS(SELECT 1 FROM "part_product_linker" AS "q2" WHERE "q2"."part_id" = "part"."part_id" AND "q2"."product_imei" IN (SELECT"#), "{sql}");
    // A reference table reached from a scoped one is not scoped; a scoped one
    // reached from a reference table is.
    let sql = pg(&compiled(
        "product_type",
        filters(json!({"name": "products__serial_number", "op": "eq", "val": "S"})),
        Visibility::Entity(7),
    )
    .rows)
    .0;
    assert!(
        sql.starts_with(r#"SELECT "product_type"."product_type_id""#),
        "{sql}"
    );
    assert!(
        sql.contains(r#"AND "q1"."product_imei" IN (SELECT"#),
        "{sql}"
    );
    // GLOBAL users see everything: no scope at all.
    assert!(!pg(&compiled("part", json!({}), Visibility::Global).rows)
        .0
        .contains("WHERE"));
    assert!(scope_condition(cat(), table("product_type"), &Visibility::Entity(7)).is_none());
    // An entity sees its own entity row only; a refused table, no row at all.
    let (own, values) =
        lite_expr(scope_condition(cat(), table("entity"), &Visibility::Entity(7)).unwrap());
    assert_eq!(own, r#""entity"."entity_id" = ?"#);
    assert_eq!(values.0, vec![Value::BigInt(Some(7))]);
    let (refused, _) =
        lite_expr(scope_condition(cat(), table("user"), &Visibility::Entity(7)).unwrap());
    assert_eq!(refused, "1 = 0");
    assert!(scope_condition(cat(), table("product"), &Visibility::Global).is_none());
}

/// A condition as SQLite SQL, through a one-condition SELECT.
fn lite_expr(e: SimpleExpr) -> (String, Values) {
    let (sql, values) = lite(
        &Query::select()
            .expr(Expr::cust("1"))
            .and_where(e)
            .to_owned(),
    );
    (sql.split_once(" WHERE ").unwrap().1.to_string(), values)
}

#[test]
fn a_viewer_needs_every_table_it_touches_and_no_secret_below_factory() {
    let viewer = |p| Viewer {
        visibility: Visibility::Global,
        permission: p,
    };
    let run = |t: &str, q: serde_json::Value, p| {
        compile(
            cat(),
            table(t),
            &parse(&q.to_string()).unwrap(),
            &viewer(p),
            None,
        )
    };
    for q in [
        json!({"filters": [{"name": "user__username", "op": "like", "val": "a%"}]}),
        json!({"filters": [{"name": "user", "op": "any", "val": {"name": "username", "op": "eq", "val": "x"}}]}),
        json!({"group_by": [{"field": "user__username"}]}),
    ] {
        let err = run("entity", q.clone(), Permission::Admin).unwrap_err();
        assert!(err.is_forbidden(), "{q}: {err}");
        assert!(err.to_string().contains("'user'"), "{err}");
        // SYSTEM may read `user` (the group_by is still a to-many path: a 400).
        assert!(run("entity", q, Permission::System).map_or_else(|e| !e.is_forbidden(), |_| true));
    }
    let q = json!({"order_by": [{"field": "device_key"}]});
    let err = run("product", q.clone(), Permission::Admin).unwrap_err();
    assert!(matches!(err, QueryError::SecretColumn { .. }), "{err}");
    assert!(run("product", q, Permission::Factory).is_ok());
    // Below FACTORY the key is not even selected.
    let c = run("product", json!({}), Permission::Overview).unwrap();
    assert!(!c.columns.iter().any(|c| c == "device_key"));
    // An ENTITY user is refused a table not open to entities, even through a relation.
    let entity_viewer = Viewer {
        visibility: Visibility::Entity(7),
        permission: Permission::System,
    };
    let q =
        parse(&json!({"filters": [{"name": "user__username", "op": "is_not_null"}]}).to_string())
            .unwrap();
    let err = compile(cat(), table("entity"), &q, &entity_viewer, None).unwrap_err();
    assert!(matches!(err, QueryError::ScopeRefused { .. }), "{err}");
}

#[test]
fn single_row_get_is_scoped() {
    let stmt = compile_get(
        cat(),
        table("product_note"),
        Value::BigInt(Some(5)),
        &Visibility::Entity(3),
    );
    let (sql, values) = pg(&stmt);
    assert!(sql.contains(r#"WHERE "product_note"."product_note_id" = $1 AND "product_note"."product_imei" IN (SELECT"#), "{sql}");
    assert_eq!(
        values.0,
        vec![Value::BigInt(Some(5)), Value::BigInt(Some(3))]
    );
    let stmt = compile_get(cat(), table("user"), string("admin"), &Visibility::Global);
    assert!(
        !pg(&stmt).0.contains("password"),
        "the hash is never selected"
    );
}

#[test]
fn order_by_and_group_by() {
    let c = compiled(
        "product",
        json!({"order_by": [{"field": "created_at", "direction": "asc"}, {"field": "product_imei", "direction": "desc"}]}),
        Visibility::Global,
    );
    let sql = pg(&c.rows).0;
    assert!(sql.ends_with(r#"ORDER BY "product"."created_at" ASC NULLS LAST, "product"."product_imei" DESC NULLS FIRST"#), "{sql}");

    let c = compiled(
        "product",
        json!({"group_by": [{"field": "product_type_id"}, {"field": "hub__name"}], "order_by": [{"field": "hub__name", "direction": "desc"}]}),
        Visibility::Global,
    );
    assert_eq!(c.columns, ["product_type_id", "hub__name"]);
    assert_eq!(c.column_types, [ColumnType::Int, ColumnType::String]);
    let sql = pg(&c.rows).0;
    assert!(sql.starts_with(r#"SELECT "product"."product_type_id" AS "product_type_id", "q1"."name" AS "hub__name" FROM "product" LEFT JOIN "hub" AS "q1""#), "{sql}");
    assert!(sql.contains(r#"GROUP BY "product"."product_type_id", "q1"."name" ORDER BY "q1"."name" DESC NULLS FIRST, "product"."product_type_id" ASC NULLS LAST"#), "{sql}");
    let count = pg(&c.count).0;
    assert!(count.starts_with(r#"SELECT COUNT(*) AS "num_results" FROM (SELECT 1 FROM "product" LEFT JOIN "hub" AS "q1""#), "{count}");
    assert!(
        count.ends_with(r#"GROUP BY "product"."product_type_id", "q1"."name") AS "counted""#),
        "{count}"
    );
}

#[test]
fn windows_apply_q_first_then_the_page() {
    let spec = parse(r#"{"limit": 25, "offset": 5}"#).unwrap();
    let page = |page, per_page| {
        let c = compile(
            cat(),
            table("entity"),
            &spec,
            &Viewer::system(),
            Some(Page { page, per_page }),
        )
        .unwrap();
        (lite(&c.rows).1 .0, lite(&c.count))
    };
    let (rows, (count, count_values)) = page(1, 10);
    assert_eq!(
        rows,
        vec![Value::BigUnsigned(Some(10)), Value::BigUnsigned(Some(5))]
    );
    assert!(
        count.ends_with(r#"LIMIT ? OFFSET ?) AS "counted""#),
        "{count}"
    );
    assert_eq!(
        count_values.0,
        vec![Value::BigUnsigned(Some(25)), Value::BigUnsigned(Some(5))]
    );
    // Page 3 of 10 within q's 25 rows: rows 20..25 of the q result.
    assert_eq!(
        page(3, 10).0,
        vec![Value::BigUnsigned(Some(5)), Value::BigUnsigned(Some(25))]
    );
    assert_eq!(
        page(4, 10).0,
        vec![Value::BigUnsigned(Some(0)), Value::BigUnsigned(Some(35))]
    );
    // per_page 0: no pagination.
    assert_eq!(
        page(1, 0).0,
        vec![Value::BigUnsigned(Some(25)), Value::BigUnsigned(Some(5))]
    );
    // An offset alone still gets a LIMIT (SQLite needs one).
    let c = compile(
        cat(),
        table("entity"),
        &parse(r#"{"offset": 5}"#).unwrap(),
        &Viewer::system(),
        None,
    )
    .unwrap();
    assert_eq!(
        lite(&c.rows).1 .0,
        vec![
            Value::BigUnsigned(Some(MAX_WINDOW)),
            Value::BigUnsigned(Some(5))
        ]
    );
}

#[test]
fn unknown_names_and_bad_values_are_named() {
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("product", filters(json!({"name": "capacity", "op": "eq", "val": 1})), "unknown field 'capacity' on table 'product'"),
        ("product", filters(json!({"name": "nope__name", "op": "eq", "val": 1})), "unknown relation 'nope' on table 'product'"),
        ("product", filters(json!({"name": "notes__nope", "op": "eq", "val": 1})), "unknown field 'nope' on table 'product_note'"),
        (
            "product",
            filters(json!({"name": "product_type_id", "op": "eq", "val": "3"})),
            "invalid value in filter on 'product_type_id': field 'product_type_id' must be of type int, got string",
        ),
        (
            "product",
            filters(json!({"name": "product_type_id", "op": "in", "val": [1, "x"]})),
            "invalid value in filter on 'product_type_id': field 'product_type_id' must be of type int, got string",
        ),
        (
            "product",
            filters(json!({"name": "product_entity_linker__entity_id", "op": "gt", "val": true})),
            "invalid value in filter on 'product_entity_linker__entity_id': field 'entity_id' must be of type int",
        ),
        ("product", filters(json!({"name": "product_type_id", "op": "like", "val": "1%"})), "op 'like' cannot be used on 'product_type_id', which is of type int"),
        ("product", filters(json!({"name": "serial_number", "op": "ilike", "val": 5})), "filter on 'serial_number' with op 'ilike' needs a string pattern as 'val'"),
        ("product_type", filters(json!({"name": "parameter_types", "op": "eq", "val": [1]})), "op 'eq' cannot be used on 'parameter_types', which is of type array"),
        ("product", filters(json!({"name": "product_type_id", "op": "eq", "field": "serial_number"})), "cannot compare 'product_type_id' (int) with field 'serial_number' (string)"),
        ("product", filters(json!({"name": "product_type_id", "op": "eq", "field": "nope"})), "unknown field 'nope' on table 'product'"),
        ("product", filters(json!({"name": "serial_number", "op": "has", "val": "x"})), "op 'has' needs a relation name, but 'serial_number' is a field"),
        ("product", filters(json!({"name": "notes", "op": "eq", "val": 1})), "'notes' is a relation; use op 'has' or 'any'"),
        ("product", filters(json!({"name": "notes", "op": "any", "val": "x"})), "invalid value in filter on 'notes': field 'product_note_id' must be of type int"),
        ("product", filters(json!({"name": "notes", "op": "any", "val": {"name": "nope", "op": "eq", "val": 1}})), "unknown field 'nope' on table 'product_note'"),
        ("product", filters(json!({"name": "notes__note_text", "op": "any", "val": {"name": "x", "op": "eq", "val": 1}})), "op 'any' needs a relation name"),
        ("product", json!({"order_by": [{"field": "notes__note_text"}]}), "order_by on 'notes__note_text' goes through the to-many relation 'notes'"),
        ("product", json!({"group_by": [{"field": "nope"}]}), "unknown field 'nope' on table 'product'"),
        ("product", json!({"order_by": [{"field": "hub"}]}), "'hub' is a relation"),
        ("product", json!({"group_by": [{"field": "hub_id"}], "order_by": [{"field": "created_at"}]}), "order_by field 'created_at' must also be a group_by field"),
        ("enable_history", filters(json!({"name": "current_enable_state", "op": "eq", "val": "on"})), "must be one of"),
    ];
    for (t, q, expected) in cases {
        let e = err(t, q.clone());
        assert!(e.contains(expected), "{q}: {e}");
    }
}
