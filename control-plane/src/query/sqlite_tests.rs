//! Compiled queries run against a real (in-memory) SQLite: the SQL is valid
//! and each operator selects the rows it should, scope included.
//!
//! The tables are created here from the catalogue's column lists with a
//! minimal DDL, and values are bound by a small binder of our own, so this
//! test depends on neither the migrations nor `db.rs`.

use std::str::FromStr;

use sea_query::{Alias, Query, SelectStatement, SqliteQueryBuilder, Value, Values};
use serde_json::{json, Value as Json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::{compile, compile_get, parse, Page, Viewer, Visibility};
use crate::catalogue::Permission;
use crate::catalogue::{Catalogue, ColumnType};
use crate::values;

const TABLES: [&str; 8] = [
    "entity",
    "hub",
    "product_type",
    "product",
    "product_entity_linker",
    "product_note",
    "part",
    "part_product_linker",
];

const P1: &str = "000000000000001";
const P2: &str = "000000000000002";
const P3: &str = "000000000000003";
const P4: &str = "000000000000004";

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Test-only binder; covers the value kinds the compiler and `coerce` emit.
fn bind(mut q: SqliteQuery<'_>, values: Values) -> SqliteQuery<'_> {
    for v in values.0 {
        q = match v {
            Value::Bool(v) => q.bind(v),
            // sea-query spells an empty IN list as `1 = 2`, with Int parameters.
            Value::Int(v) => q.bind(v),
            Value::BigInt(v) => q.bind(v),
            Value::BigUnsigned(v) => q.bind(v.map(|v| v as i64)),
            Value::Double(v) => q.bind(v),
            Value::String(v) => q.bind(v.map(|s| *s)),
            Value::ChronoDateTime(v) => q.bind(v.map(|t| values::format_datetime(&t))),
            Value::ChronoDate(v) => q.bind(v.map(|d| d.to_string())),
            Value::Json(v) => q.bind(v.map(|j| j.to_string())),
            other => panic!("unexpected value kind {other:?}"),
        };
    }
    q
}

struct Fixture {
    cat: Catalogue,
    pool: SqlitePool,
}

impl Fixture {
    async fn new() -> Self {
        // One connection: every connection to `:memory:` is its own database.
        // case_sensitive_like makes `like` case-sensitive, as on PostgreSQL.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .unwrap()
            .pragma("case_sensitive_like", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let cat = Catalogue::builtin();
        for name in TABLES {
            let t = cat.table(name).unwrap();
            let columns: Vec<String> = t
                .columns
                .iter()
                .map(|c| {
                    let ty = match c.ty {
                        ColumnType::Int => "INTEGER",
                        ColumnType::Float => "REAL",
                        ColumnType::Boolean => "BOOLEAN",
                        _ => "TEXT",
                    };
                    format!(
                        "\"{}\" {ty}{}",
                        c.name,
                        if c.primary_key { " PRIMARY KEY" } else { "" }
                    )
                })
                .collect();
            sqlx::query(&format!("CREATE TABLE \"{name}\" ({})", columns.join(", ")))
                .execute(&pool)
                .await
                .unwrap();
        }
        let f = Self { cat, pool };
        f.seed().await;
        f
    }

    async fn insert(&self, table: &str, row: Json) {
        let t = self.cat.table(table).unwrap();
        let obj = row.as_object().unwrap();
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for (k, v) in obj {
            let c = t.column(k).unwrap_or_else(|| panic!("{table}.{k}"));
            cols.push(Alias::new(k));
            vals.push(values::coerce(c, v).unwrap().into());
        }
        let (sql, values) = Query::insert()
            .into_table(Alias::new(table))
            .columns(cols)
            .values_panic(vals)
            .build(SqliteQueryBuilder);
        bind(sqlx::query(&sql), values)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn seed(&self) {
        for (id, name) in [(1, "Entity One"), (2, "Entity Two")] {
            self.insert("entity", json!({"entity_id": id, "name": name}))
                .await;
        }
        for (id, name) in [(1, "Zeta hub"), (2, "Alpha hub")] {
            self.insert("hub", json!({"hub_id": id, "name": name, "entity_id": 1}))
                .await;
        }
        for (id, name) in [(4, "enterprise"), (6, "home2")] {
            self.insert("product_type", json!({"product_type_id": id, "name": name}))
                .await;
        }
        // imei, type, serial, hub, current/desired tamper, software_lock, created_at
        let products = [
            (
                P1,
                4,
                "SN-alpha",
                Some(1),
                (true, true),
                None,
                "2020-01-04T00:00:00",
            ),
            (
                P2,
                6,
                "sn-BETA",
                Some(2),
                (false, true),
                Some(3),
                "2020-01-03T00:00:00",
            ),
            (
                P3,
                4,
                "SN-gamma",
                None,
                (true, false),
                None,
                "2020-01-02T00:00:00",
            ),
            (
                P4,
                6,
                "XX-delta",
                Some(1),
                (false, false),
                None,
                "2020-01-01T00:00:00",
            ),
        ];
        for (imei, ty, serial, hub, (current, desired), lock, created) in products {
            self.insert(
                "product",
                json!({
                    "product_imei": imei, "product_type_id": ty, "serial_number": serial, "hub_id": hub,
                    "current_tamper_flag": current, "desired_tamper_flag": desired, "software_lock": lock,
                    "created_at": created, "imsi": "1", "is_payg": true
                }),
            )
            .await;
        }
        // P4 moved from entity 1 to entity 2: entity 1 must no longer see it.
        let links = [
            (1, P1, 1, None),
            (2, P2, 1, None),
            (3, P3, 2, None),
            (4, P4, 1, Some("2021-01-01")),
            (5, P4, 2, None),
        ];
        for (id, imei, entity, removed) in links {
            self.insert(
                "product_entity_linker",
                json!({"product_entity_linker_id": id, "product_imei": imei, "entity_id": entity, "date_removed": removed}),
            )
            .await;
        }
        let notes = [
            (1, P1, "battery low"),
            (2, P1, "ok"),
            (3, P2, "Battery swapped"),
            (4, P3, "battery low"),
        ];
        for (id, imei, text) in notes {
            self.insert(
                "product_note",
                json!({"product_note_id": id, "product_imei": imei, "note_text": text}),
            )
            .await;
        }
        for id in [1, 2, 3] {
            self.insert(
                "part",
                json!({"part_id": id, "part_type_id": 43, "serial_number": format!("PART-{id}")}),
            )
            .await;
        }
        for (id, part, imei) in [(1, 1, P1), (2, 2, P3)] {
            self.insert(
                "part_product_linker",
                json!({"part_product_linker_id": id, "part_id": part, "product_imei": imei}),
            )
            .await;
        }
    }

    async fn fetch(&self, stmt: &SelectStatement) -> Vec<sqlx::sqlite::SqliteRow> {
        let (sql, values) = stmt.build(SqliteQueryBuilder);
        bind(sqlx::query(&sql), values)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first output column of every row (the primary key without group_by), and the count.
    async fn run(
        &self,
        table: &str,
        q: Json,
        vis: Visibility,
        page: Option<Page>,
    ) -> (Vec<String>, i64) {
        let spec = parse(&q.to_string()).unwrap();
        let viewer = Viewer {
            visibility: vis,
            permission: Permission::System,
        };
        let c = compile(
            &self.cat,
            self.cat.table(table).unwrap(),
            &spec,
            &viewer,
            page,
        )
        .unwrap();
        let rows = self.fetch(&c.rows).await;
        let keys = rows
            .iter()
            .map(|r| match r.try_get::<Option<String>, _>(0) {
                Ok(s) => s.unwrap_or_else(|| "NULL".into()),
                Err(_) => r.try_get::<i64, _>(0).unwrap().to_string(),
            })
            .collect();
        let count: i64 = self.fetch(&c.count).await[0].get(0);
        (keys, count)
    }

    async fn products(&self, filters: Json) -> Vec<String> {
        self.run(
            "product",
            json!({ "filters": filters }),
            Visibility::Global,
            None,
        )
        .await
        .0
    }
}

#[tokio::test]
async fn operators_select_the_right_rows() {
    let f = Fixture::new().await;
    let cases: Vec<(Json, Vec<&str>)> = vec![
        (
            json!([{"name": "serial_number", "op": "eq", "val": "SN-alpha"}]),
            vec![P1],
        ),
        (
            json!([{"name": "product_type_id", "op": "!=", "val": 4}]),
            vec![P2, P4],
        ),
        (
            json!([{"name": "created_at", "op": "ge", "val": "2020-01-03"}]),
            vec![P1, P2],
        ),
        (
            json!([{"name": "product_type_id", "op": "in", "val": [6]}]),
            vec![P2, P4],
        ),
        (
            json!([{"name": "product_type_id", "op": "not_in", "val": [6]}]),
            vec![P1, P3],
        ),
        (
            json!([{"name": "product_type_id", "op": "in", "val": []}]),
            vec![],
        ),
        (
            json!([{"name": "serial_number", "op": "like", "val": "SN-%"}]),
            vec![P1, P3],
        ),
        (
            json!([{"name": "serial_number", "op": "ilike", "val": "sn-%"}]),
            vec![P1, P2, P3],
        ),
        (
            json!([{"name": "serial_number", "op": "like", "val": "SN\\-%"}]),
            vec![P1, P3],
        ),
        (
            json!([{"name": "hub_id", "op": "is_null", "val": ""}]),
            vec![P3],
        ),
        (
            json!([{"name": "software_lock", "op": "is_not_null"}]),
            vec![P2],
        ),
        (
            json!([{"or": [
                {"and": [{"name": "product_type_id", "op": "eq", "val": 6}, {"name": "hub_id", "op": "eq", "val": 1}]},
                {"name": "serial_number", "op": "eq", "val": "SN-alpha"}
            ]}]),
            vec![P1, P4],
        ),
        (
            json!([{"name": "notes__note_text", "op": "eq", "val": "battery low"}]),
            vec![P1, P3],
        ),
        (
            json!([{"name": "product_type__name", "op": "eq", "val": "home2"}]),
            vec![P2, P4],
        ),
        (
            json!([{"name": "notes", "op": "any", "val": {"name": "note_text", "op": "ilike", "val": "battery%"}}]),
            vec![P1, P2, P3],
        ),
        (
            json!([{"name": "notes", "op": "any", "val": [2, 3]}]),
            vec![P1, P2],
        ),
        (
            json!([{"name": "notes", "op": "not_any", "val": {"name": "note_text", "op": "ilike", "val": "battery%"}}]),
            vec![P4],
        ),
        (
            json!([{"name": "notes", "op": "not_any", "val": [2, 3]}]),
            vec![P3, P4],
        ),
        (
            json!([{"name": "product_type", "op": "has", "val": {"name": "name", "op": "eq", "val": "enterprise"}}]),
            vec![P1, P3],
        ),
        (
            json!([{"name": "hub__name", "op": "has", "val": "Zeta hub"}]),
            vec![P1, P4],
        ),
        (
            json!([{"name": "current_tamper_flag", "op": "eq", "field": "desired_tamper_flag"}]),
            vec![P1, P4],
        ),
        (
            json!([{"name": "current_tamper_flag", "op": "neq", "fieldname": "desired_tamper_flag"}]),
            vec![P2, P3],
        ),
    ];
    for (filters, expected) in cases {
        assert_eq!(f.products(filters.clone()).await, expected, "{filters}");
    }
    // A to-many relation filter from the many side's parent does not repeat rows.
    let (rows, count) = f
        .run(
            "product",
            json!({"filters": [{"name": "notes__note_text", "op": "is_not_null"}]}),
            Visibility::Global,
            None,
        )
        .await;
    assert_eq!(
        (rows, count),
        (vec![P1.to_string(), P2.to_string(), P3.to_string()], 3)
    );
}

#[tokio::test]
async fn ordering_windows_and_groups() {
    let f = Fixture::new().await;
    let g = Visibility::Global;
    let (rows, _) = f
        .run(
            "product",
            json!({"order_by": [{"field": "serial_number", "direction": "desc"}]}),
            g,
            None,
        )
        .await;
    assert_eq!(
        rows,
        [P2, P4, P3, P1],
        "byte order: lowercase sorts after uppercase"
    );
    // Ordered by the related hub's name; P3 has no hub and sorts last ascending.
    let (rows, _) = f
        .run(
            "product",
            json!({"order_by": [{"field": "hub__name"}]}),
            g,
            None,
        )
        .await;
    assert_eq!(rows, [P2, P1, P4, P3]);
    let (rows, _) = f
        .run(
            "product",
            json!({"order_by": [{"field": "hub__name", "direction": "desc"}]}),
            g,
            None,
        )
        .await;
    assert_eq!(
        rows,
        [P3, P1, P4, P2],
        "NULL first descending; ties by primary key"
    );

    let q = json!({"limit": 3, "offset": 1});
    assert_eq!(
        f.run("product", q.clone(), g, None).await,
        (vec![P2.into(), P3.into(), P4.into()], 3)
    );
    let page = |page| Some(Page { page, per_page: 2 });
    assert_eq!(
        f.run("product", q.clone(), g, page(1)).await,
        (vec![P2.into(), P3.into()], 3)
    );
    assert_eq!(
        f.run("product", q.clone(), g, page(2)).await,
        (vec![P4.into()], 3)
    );
    assert_eq!(f.run("product", q.clone(), g, page(3)).await, (vec![], 3));
    assert_eq!(
        f.run("product", json!({"offset": 3}), g, page(1)).await,
        (vec![P4.into()], 1)
    );
    assert_eq!(
        f.run("product", json!({}), g, page(2)).await,
        (vec![P3.into(), P4.into()], 4)
    );

    let q = json!({"group_by": [{"field": "product_type_id"}], "order_by": [{"field": "product_type_id", "direction": "desc"}]});
    assert_eq!(
        f.run("product", q, g, None).await,
        (vec!["6".into(), "4".into()], 2)
    );
    let q = json!({"group_by": [{"field": "hub__name"}]});
    assert_eq!(
        f.run("product", q, g, None).await,
        (
            vec!["Alpha hub".into(), "Zeta hub".into(), "NULL".into()],
            3
        )
    );
}

#[tokio::test]
async fn entity_scope_hides_other_entities_rows() {
    let f = Fixture::new().await;
    let e1 = Visibility::Entity(1);
    // P3 belongs to entity 2; P4 was removed from entity 1.
    assert_eq!(
        f.run("product", json!({}), e1, None).await,
        (vec![P1.into(), P2.into()], 2)
    );
    assert_eq!(
        f.run("product", json!({}), Visibility::Entity(2), None)
            .await,
        (vec![P3.into(), P4.into()], 2)
    );
    assert_eq!(
        f.run("product_note", json!({}), e1, None).await,
        (vec!["1".into(), "2".into(), "3".into()], 3)
    );
    // Parts: linked to a visible product, or to none.
    assert_eq!(f.run("part", json!({}), e1, None).await.0, ["1", "3"]);
    // Reference tables are visible, but filters through them only see
    // visible rows: product type 4 has P3, which entity 1 cannot see.
    let q =
        json!({"filters": [{"name": "products__serial_number", "op": "eq", "val": "SN-gamma"}]});
    assert_eq!(
        f.run("product_type", q.clone(), Visibility::Global, None)
            .await
            .0,
        ["4"]
    );
    assert_eq!(f.run("product_type", q, e1, None).await, (vec![], 0));
    let q = json!({"filters": [{"name": "products", "op": "any", "val": {"name": "hub_id", "op": "is_null"}}]});
    assert_eq!(
        f.run("product_type", q, e1, None).await.0,
        Vec::<String>::new()
    );
    // The note of P3 cannot be matched from a visible product either.
    let q = json!({"filters": [{"name": "notes__note_text", "op": "eq", "val": "battery low"}]});
    assert_eq!(f.run("product", q, e1, None).await.0, [P1]);
    // Single-row GET.
    let get = |imei: &str| {
        compile_get(
            &f.cat,
            f.cat.table("product").unwrap(),
            Value::String(Some(Box::new(imei.into()))),
            &e1,
        )
    };
    assert_eq!(f.fetch(&get(P1)).await.len(), 1);
    assert_eq!(f.fetch(&get(P3)).await.len(), 0);
}
