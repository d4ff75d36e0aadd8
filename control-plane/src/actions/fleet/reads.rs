//! The fleet reads, without HTTP: one product's parts, parameter history,
//! connections and networks, and where every visible product is. Each read
//! of one product runs in one read-only transaction, so the parts of an
//! answer agree.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, Order, Query, SelectStatement, SimpleExpr};
use serde_json::{json, Map, Value as Json};

use super::parse::active_at;
use crate::catalogue::{Column, ColumnType};
use crate::db::{Db, Row, Tx};
use crate::error::ApiError;
use crate::query::{Page, Visibility};
use crate::rows::{c, col, eq, rows, select_all, tc, RowExt};

/// The whole rows of `table` whose `column` is one of `ids`, in `order`.
pub(super) fn select_in(
    table: &str,
    column: &str,
    ids: impl IntoIterator<Item = i64>,
    order: &str,
) -> SelectStatement {
    let mut stmt = select_all(table);
    stmt.and_where(in_list((table, column), ids))
        .order_by(Alias::new(order), Order::Asc);
    stmt
}

fn in_list(name: (&str, &str), values: impl IntoIterator<Item = i64>) -> SimpleExpr {
    Expr::col((Alias::new(name.0), Alias::new(name.1))).is_in(values)
}

/// The part types on the unit now (its parts not removed): a subquery.
pub(super) fn current_part_types(imei: &str) -> SelectStatement {
    Query::select()
        .expr(tc("part", "part_type_id"))
        .from(Alias::new("part"))
        .inner_join(
            Alias::new("part_product_linker"),
            c("part_product_linker", "part_id").equals((Alias::new("part"), Alias::new("part_id"))),
        )
        .and_where(c("part_product_linker", "product_imei").eq(imei))
        .and_where(c("part_product_linker", "date_removed").is_null())
        .to_owned()
}

/// Every part link of the unit, past and present, oldest first.
async fn part_links(tx: &mut Tx, imei: &str) -> Result<Vec<Row>, ApiError> {
    let mut stmt = select_all("part_product_linker");
    stmt.and_where(eq("product_imei", imei))
        .order_by(Alias::new("part_product_linker_id"), Order::Asc);
    rows(tx, "part_product_linker", &stmt).await
}

/// A read-only transaction in which `imei` is visible (404 otherwise), and
/// its product row. On SQLite it is a reader connection, so fleet reads
/// never queue behind writes.
async fn read_product(
    db: &Db,
    visibility: &Visibility,
    imei: &str,
) -> Result<(Tx, crate::actions::Product), ApiError> {
    let mut tx = db.begin_read().await?;
    let product = super::super::visible_product(&mut tx, visibility, imei).await?;
    Ok((tx, product))
}

/// part_id -> the part with its latest link, its type and the types that
/// may replace it (for the unit's product type or any).
pub(super) async fn parts(
    db: &Db,
    visibility: &Visibility,
    imei: &str,
) -> Result<Map<String, Json>, ApiError> {
    let (mut tx, product) = read_product(db, visibility, imei).await?;
    // The latest link of each part (a part may have left and come back).
    let mut linkers: BTreeMap<i64, Row> = BTreeMap::new();
    for l in part_links(&mut tx, imei).await? {
        if let Some(id) = l.int("part_id") {
            linkers.insert(id, l);
        }
    }
    let mut stmt = select_all("part");
    stmt.and_where(in_list(("part", "part_id"), linkers.keys().copied()));
    let part_rows = rows(&mut tx, "part", &stmt).await?;
    let type_ids: BTreeSet<i64> = part_rows
        .iter()
        .filter_map(|p| p.int("part_type_id"))
        .collect();
    let mut stmt = select_in(
        "part_type_replacement_linker",
        "existing_part_type_id",
        type_ids.iter().copied(),
        "part_type_replacement_linker_id",
    );
    stmt.and_where(
        Expr::col(Alias::new("product_type_id"))
            .is_null()
            .or(eq("product_type_id", product.product_type_id)),
    );
    let replacements = rows(&mut tx, "part_type_replacement_linker", &stmt).await?;
    let all_types: BTreeSet<i64> = type_ids
        .iter()
        .copied()
        .chain(
            replacements
                .iter()
                .filter_map(|r| r.int("replacement_part_type_id")),
        )
        .collect();
    let mut stmt = select_all("part_type");
    stmt.and_where(in_list(("part_type", "part_type_id"), all_types));
    let types: BTreeMap<i64, Row> = rows(&mut tx, "part_type", &stmt)
        .await?
        .into_iter()
        .filter_map(|t| Some((t.int("part_type_id")?, t)))
        .collect();
    tx.commit().await?;
    let object_or_null = |row: Option<&Row>| row.cloned().map(Json::Object).unwrap_or(Json::Null);
    let mut data = Map::new();
    for part in part_rows {
        let id = part.int("part_id").unwrap_or_default();
        let type_id = part.int("part_type_id").unwrap_or_default();
        let mut out = part.clone();
        out.insert(
            "part_product_linker".into(),
            object_or_null(linkers.get(&id)),
        );
        out.insert("part_type".into(), object_or_null(types.get(&type_id)));
        let mut seen = BTreeSet::new();
        let replacement_types: Vec<Json> = replacements
            .iter()
            .filter(|r| r.int("existing_part_type_id") == Some(type_id))
            .filter_map(|r| r.int("replacement_part_type_id"))
            .filter(|t| seen.insert(*t))
            .filter_map(|t| types.get(&t).cloned().map(Json::Object))
            .collect();
        out.insert(
            "replacement_part_types".into(),
            Json::Array(replacement_types),
        );
        data.insert(id.to_string(), Json::Object(out));
    }
    Ok(data)
}

/// The id of the latest connection of the outer query's `connection` row's
/// product that has a location (not failed, with a latitude): what the
/// locations list and the dashboard show as where a product is.
pub(in crate::actions) fn latest_location_of_row() -> SelectStatement {
    Query::select()
        .expr(tc("c2", "connection_id"))
        .from_as(Alias::new("connection"), Alias::new("c2"))
        .and_where(
            c("c2", "product_imei").equals((Alias::new("connection"), Alias::new("product_imei"))),
        )
        .and_where(c("c2", "location_failed_flag").eq(false))
        .and_where(c("c2", "latitude").is_not_null())
        .order_by((Alias::new("c2"), Alias::new("date")), Order::Desc)
        .order_by((Alias::new("c2"), Alias::new("connection_id")), Order::Desc)
        .limit(1)
        .to_owned()
}

/// One page of the visible products' latest locations, by IMEI. The rows
/// are the answer as they are, hence JSON maps.
pub(super) async fn locations(
    db: &Db,
    visibility: &Visibility,
    page: Page,
) -> Result<Vec<Row>, ApiError> {
    let latest = latest_location_of_row();
    let mut stmt = Query::select()
        .expr(tc("connection", "product_imei"))
        .expr(tc("connection", "latitude"))
        .expr(tc("connection", "longitude"))
        .expr(tc("connection", "error_radius"))
        .from(Alias::new("connection"))
        .and_where(c("connection", "product_imei").is_not_null())
        .and_where(c("connection", "connection_id").in_subquery(latest))
        .order_by(
            (Alias::new("connection"), Alias::new("product_imei")),
            Order::Asc,
        )
        .limit(page.per_page)
        .offset(page.offset())
        .to_owned();
    if let Some(scope) = crate::query::scope_condition(
        crate::rows::catalogue(),
        crate::rows::table("connection"),
        visibility,
    ) {
        stmt.and_where(scope);
    }
    let cols = [
        col("product_imei", ColumnType::String),
        col("latitude", ColumnType::String),
        col("longitude", ColumnType::String),
        col("error_radius", ColumnType::Int),
    ];
    let refs: Vec<&Column> = cols.iter().collect();
    Ok(db.fetch_all(&stmt, &refs).await?)
}

/// The unit's product parameters and its parts' parameters (by part id);
/// as of `at`, only the parts on the unit then and what was active then,
/// shown as active.
pub(super) async fn parameter_history(
    db: &Db,
    visibility: &Visibility,
    imei: &str,
    at: Option<NaiveDateTime>,
) -> Result<Json, ApiError> {
    let (mut tx, _) = read_product(db, visibility, imei).await?;
    let mut stmt = select_all("product_parameter");
    stmt.and_where(eq("product_imei", imei))
        .order_by(Alias::new("product_parameter_id"), Order::Asc);
    let product_params = rows(&mut tx, "product_parameter", &stmt).await?;
    let linkers = part_links(&mut tx, imei).await?;
    let part_ids: BTreeSet<i64> = linkers
        .iter()
        .filter(|l| match at {
            // Parts on the unit at that time (a link without dates counts).
            Some(t) => {
                l.time("date_added").is_none_or(|a| a <= t)
                    && l.time("date_removed").is_none_or(|r| r > t)
            }
            None => true,
        })
        .filter_map(|l| l.int("part_id"))
        .collect();
    let stmt = select_in(
        "part_parameter",
        "part_id",
        part_ids.iter().copied(),
        "part_parameter_id",
    );
    let part_params = rows(&mut tx, "part_parameter", &stmt).await?;
    tx.commit().await?;
    let as_of = |rows: Vec<Row>| -> Vec<Json> {
        rows.into_iter()
            .filter(|r| at.is_none_or(|t| active_at(r, t)))
            .map(|mut r| {
                if at.is_some() {
                    r.insert("status".into(), json!("active"));
                }
                Json::Object(r)
            })
            .collect()
    };
    let mut by_part: BTreeMap<i64, Vec<Row>> =
        part_ids.iter().map(|id| (*id, Vec::new())).collect();
    for p in part_params {
        if let Some(id) = p.int("part_id") {
            by_part.entry(id).or_default().push(p);
        }
    }
    let part_parameters: Map<String, Json> = by_part
        .into_iter()
        .map(|(id, rows)| (id.to_string(), Json::Array(as_of(rows))))
        .collect();
    Ok(json!({
        "part_parameters": part_parameters,
        "product_parameters": as_of(product_params),
    }))
}

/// How many times the unit connected in `[start, end]`.
pub(super) async fn connection_count(
    db: &Db,
    visibility: &Visibility,
    imei: &str,
    (start, end): (NaiveDateTime, NaiveDateTime),
) -> Result<i64, ApiError> {
    let (mut tx, _) = read_product(db, visibility, imei).await?;
    let count = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(Alias::new("connection"))
        .and_where(eq("product_imei", imei))
        .and_where(Expr::col(Alias::new("date")).gte(start))
        .and_where(Expr::col(Alias::new("date")).lte(end))
        .to_owned();
    let actual = tx.fetch_i64(&count).await?;
    tx.commit().await?;
    Ok(actual)
}

/// The networks in country `mcc` that the SIM providers of the unit's
/// current parts reach. The rows are the answer as they are.
pub(super) async fn available_networks(
    db: &Db,
    visibility: &Visibility,
    imei: &str,
    mcc: i64,
) -> Result<Vec<Row>, ApiError> {
    let (mut tx, _) = read_product(db, visibility, imei).await?;
    let providers = Query::select()
        .column(Alias::new("sim_provider_id"))
        .from(Alias::new("sim_part_type_sim_provider_linker"))
        .and_where(Expr::col(Alias::new("sim_part_type_id")).in_subquery(current_part_types(imei)))
        .to_owned();
    let networks = Query::select()
        .column(Alias::new("network_id"))
        .from(Alias::new("sim_provider_network_linker"))
        .and_where(Expr::col(Alias::new("sim_provider_id")).in_subquery(providers))
        .to_owned();
    let mut stmt = select_all("network");
    stmt.and_where(c("network", "mccmnc").in_subquery(networks))
        .and_where(eq("mcc", mcc))
        .order_by(Alias::new("mccmnc"), Order::Asc);
    let rows = rows(&mut tx, "network", &stmt).await?;
    tx.commit().await?;
    Ok(rows)
}
