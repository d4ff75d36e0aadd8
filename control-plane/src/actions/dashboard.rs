//! Fleet overviews: `/dashboard2` (one summary object per product, with the
//! query language) and `/current_enable_status` (the ERP's sync feed).
//!
//! Both read one page of products with the generic query compiler (so
//! scope and filters behave exactly as on `/products`), then fetch what
//! each summary needs for the whole page at once (one query per kind of
//! data, never one per product).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, Func, Order, Query, SelectStatement};
use serde_json::{json, Map, Value as Json};

use super::JoinOn;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType, Permission};
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::query::{self, Page, QuerySpec};
use crate::rows::{c, col, id_names, select_all, tc, RowExt};
use crate::values::format_datetime;
use crate::web::{success, QueryPairs};

/// The largest page these endpoints serve whatever the configuration says:
/// a page's IMEIs are bound as one `IN (...)` list per query, and SQLite
/// accepts at most 32766 bound parameters (PostgreSQL 65535).
const MAX_PAGE: u64 = 10_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard2", get(dashboard2))
        .route("/current_enable_status", get(current_enable_status))
}

/// Rewrites `{"name": "entities", "op": <op>, "val": <entity name>}`
/// (anywhere in the filter tree) into the standard form: some current
/// `product_entity_linker` whose entity's name satisfies `<op> <val>`.
fn rewrite_entities(filter: &mut Json) {
    match filter {
        Json::Array(items) => items.iter_mut().for_each(rewrite_entities),
        Json::Object(m) => {
            for key in ["and", "or"] {
                if let Some(inner) = m.get_mut(key) {
                    rewrite_entities(inner);
                }
            }
            if m.get("name").and_then(Json::as_str) == Some("entities") {
                let op = m.get("op").cloned().unwrap_or(Json::Null);
                let val = m.get("val").cloned().unwrap_or(Json::Null);
                *filter = json!({
                    "name": "product_entity_linker",
                    "op": "any",
                    "val": [
                        {"name": "date_removed", "op": "is_null"},
                        {"name": "entity__name", "op": op, "val": val},
                    ],
                });
            }
        }
        _ => {}
    }
}

fn parse_q(q: Option<&str>) -> Result<QuerySpec, ApiError> {
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else {
        return Ok(QuerySpec::default());
    };
    let mut json: Json = serde_json::from_str(q)
        .map_err(|e| ApiError::BadRequest(format!("Malformed q parameter: {e}")))?;
    if let Some(filters) = json.get_mut("filters") {
        rewrite_entities(filters);
    }
    Ok(query::parse(&json.to_string())?)
}

/// Rows of `table` whose `key` is one of `imeis`, grouped by `key`.
async fn by_imei(
    tx: &mut Tx,
    table: &str,
    imeis: &[String],
    mut stmt: SelectStatement,
) -> Result<BTreeMap<String, Vec<Row>>, ApiError> {
    stmt.and_where(
        Expr::col((Alias::new(table), Alias::new("product_imei")))
            .is_in(imeis.iter().map(String::as_str)),
    );
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in crate::rows::rows(tx, table, &stmt).await? {
        if let Some(imei) = r.text("product_imei") {
            out.entry(imei.to_string()).or_default().push(r);
        }
    }
    Ok(out)
}

async fn names(tx: &mut Tx, table: &str, pk: &str) -> Result<BTreeMap<i64, String>, ApiError> {
    let stmt = Query::select()
        .columns([pk, "name"].map(Alias::new))
        .from(Alias::new(table))
        .to_owned();
    id_names(tx, &stmt).await
}

/// Current entities per product (full entity rows).
async fn entities(tx: &mut Tx, imeis: &[String]) -> Result<BTreeMap<String, Vec<Row>>, ApiError> {
    let entity = crate::rows::table("entity");
    let mut stmt = Query::select();
    stmt.expr_as(tc("l", "product_imei"), Alias::new("product_imei"));
    for c in entity.readable_columns() {
        stmt.expr_as(tc("e", &c.name), Alias::new(&c.name));
    }
    stmt.from_as(Alias::new("product_entity_linker"), Alias::new("l"))
        .join_on("entity", "e", "l", "entity_id")
        .and_where(c("l", "date_removed").is_null())
        .and_where(c("l", "product_imei").is_in(imeis.iter().map(String::as_str)))
        .order_by((Alias::new("e"), Alias::new("entity_id")), Order::Asc);
    let imei_col = col("product_imei", ColumnType::String);
    let mut cols: Vec<&Column> = vec![&imei_col];
    cols.extend(entity.readable_columns());
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for mut r in tx.fetch_all(&stmt, &cols).await? {
        if let Some(Json::String(imei)) = r.remove("product_imei") {
            out.entry(imei).or_default().push(r);
        }
    }
    Ok(out)
}

/// A timestamp as the generic rows render it (`null` when absent).
fn datetime_json(t: Option<NaiveDateTime>) -> Json {
    t.map_or(Json::Null, |t| Json::from(format_datetime(&t)))
}

/// The IMEIs of a page of products.
fn imeis_of(products: &[Row]) -> Vec<String> {
    products
        .iter()
        .filter_map(|p| p.text("product_imei").map(str::to_string))
        .collect()
}

/// The latest state of each of a page of products, by `state_id`:
/// `(state_type_id, created_at)`.
async fn latest_states(
    tx: &mut Tx,
    products: &[Row],
) -> Result<BTreeMap<i64, (i64, Json)>, ApiError> {
    let ids = products.iter().filter_map(|p| p.int("latest_state_id"));
    let stmt = Query::select()
        .columns(["state_id", "current_state_type", "created_at"].map(Alias::new))
        .from(Alias::new("state"))
        .and_where(c("state", "state_id").is_in(ids))
        .to_owned();
    let rows: Vec<(Option<i64>, Option<i64>, Option<NaiveDateTime>)> =
        tx.fetch_typed(&stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, state_type, created_at)| {
            Some((id?, (state_type?, datetime_json(created_at))))
        })
        .collect())
}

/// A product's latest located connection, as the dashboard shows it.
#[derive(sqlx::FromRow)]
struct LocatedConnection {
    product_imei: Option<String>,
    date: Option<NaiveDateTime>,
    latitude: Option<String>,
    longitude: Option<String>,
    error_radius: Option<i64>,
}

/// The latest connection date and the latest located connection per product.
async fn connections(
    tx: &mut Tx,
    imeis: &[String],
) -> Result<(BTreeMap<String, Json>, BTreeMap<String, LocatedConnection>), ApiError> {
    let recent = Query::select()
        .column(Alias::new("product_imei"))
        .expr_as(Func::max(Expr::col(Alias::new("date"))), Alias::new("date"))
        .from(Alias::new("connection"))
        .and_where(Expr::col(Alias::new("product_imei")).is_in(imeis.iter().map(String::as_str)))
        .group_by_col(Alias::new("product_imei"))
        .to_owned();
    let rows: Vec<(Option<String>, Option<NaiveDateTime>)> = tx.fetch_typed(&recent).await?;
    let recent: BTreeMap<String, Json> = rows
        .into_iter()
        .filter_map(|(imei, date)| Some((imei?, datetime_json(Some(date?)))))
        .collect();
    let latest = super::fleet::latest_location_of_row();
    let stmt = Query::select()
        .columns(["product_imei", "date"].map(Alias::new))
        .columns(["latitude", "longitude", "error_radius"].map(Alias::new))
        .from(Alias::new("connection"))
        .and_where(c("connection", "connection_id").in_subquery(latest))
        .and_where(c("connection", "product_imei").is_in(imeis.iter().map(String::as_str)))
        .to_owned();
    let rows: Vec<LocatedConnection> = tx.fetch_typed(&stmt).await?;
    let located = rows
        .into_iter()
        .filter_map(|l| Some((l.product_imei.clone()?, l)))
        .collect();
    Ok((recent, located))
}

/// A product's active software name, and its pending one with the time
/// the update was requested.
type SoftwareState = (Option<String>, Option<(String, Json)>);

/// A row of [`software`]: one current software link of a product.
#[derive(sqlx::FromRow)]
struct SoftwareRow {
    product_imei: Option<String>,
    name: Option<String>,
    date_added: Option<NaiveDateTime>,
    created_at: Option<NaiveDateTime>,
}

/// Active and pending software per product.
async fn software(
    tx: &mut Tx,
    imeis: &[String],
) -> Result<BTreeMap<String, SoftwareState>, ApiError> {
    let stmt = super::unit::software_links()
        .expr_as(tc("l", "product_imei"), Alias::new("product_imei"))
        .expr_as(tc("s", "name"), Alias::new("name"))
        .expr_as(tc("l", "date_added"), Alias::new("date_added"))
        .expr_as(tc("l", "date_removed"), Alias::new("date_removed"))
        .expr_as(tc("l", "created_at"), Alias::new("created_at"))
        .and_where(c("l", "date_removed").is_null())
        .and_where(c("l", "product_imei").is_in(imeis.iter().map(String::as_str)))
        .order_by(
            (Alias::new("l"), Alias::new("product_software_linker_id")),
            Order::Asc,
        )
        .to_owned();
    let rows: Vec<SoftwareRow> = tx.fetch_typed(&stmt).await?;
    let mut out: BTreeMap<String, SoftwareState> = BTreeMap::new();
    for r in rows {
        let (Some(imei), Some(name)) = (r.product_imei, r.name) else {
            continue;
        };
        let entry = out.entry(imei).or_default();
        if r.date_added.is_some() {
            entry.0 = Some(name);
        } else {
            let requested = r.created_at.as_ref().map(format_datetime);
            entry.1 = Some((name, json!(requested)));
        }
    }
    Ok(out)
}

/// The active value of a named product parameter per product.
async fn parameter(
    tx: &mut Tx,
    imeis: &[String],
    name: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    let stmt = Query::select()
        .expr_as(tc("p", "product_imei"), Alias::new("product_imei"))
        .expr_as(tc("p", "value"), Alias::new("value"))
        .from_as(Alias::new("product_parameter"), Alias::new("p"))
        .join_on("parameter_type", "t", "p", "parameter_type_id")
        .and_where(c("t", "name").eq(name))
        .and_where(c("p", "status").eq("active"))
        .and_where(c("p", "product_imei").is_in(imeis.iter().map(String::as_str)))
        .order_by(
            (Alias::new("p"), Alias::new("product_parameter_id")),
            Order::Asc,
        )
        .to_owned();
    let rows: Vec<(Option<String>, Option<String>)> = tx.fetch_typed(&stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(imei, value)| Some((imei?, value?)))
        .collect())
}

/// One page of visible products matching `spec`, and the count before paging.
async fn product_page(
    state: &AppState,
    user: &AuthUser,
    spec: &QuerySpec,
    page: Page,
) -> Result<(Vec<Row>, i64), ApiError> {
    let product = crate::rows::table("product");
    let compiled = query::compile(&state.catalogue, product, spec, &user.viewer(), Some(page))?;
    let columns: Vec<&Column> = product.readable_columns_for(user.permissions).collect();
    let total = state.db.fetch_i64(&compiled.count).await?;
    let rows = state.db.fetch_all(&compiled.rows, &columns).await?;
    Ok((rows, total))
}

async fn dashboard2(
    State(state): State<AppState>,
    user: AuthUser,
    params: QueryPairs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let spec = parse_q(params.get("q"))?;
    if !spec.group_by.is_empty() || spec.single {
        return Err(ApiError::BadRequest(
            "/dashboard2 does not support group_by or single".into(),
        ));
    }
    let page = params.page(
        state.config.default_results_per_page,
        state.config.max_results_per_page.min(MAX_PAGE),
    )?;
    let (products, filtered) = product_page(&state, &user, &spec, page).await?;
    let all = query::compile(
        &state.catalogue,
        crate::rows::table("product"),
        &QuerySpec::default(),
        &user.viewer(),
        None,
    )?;
    let total = state.db.fetch_i64(&all.count).await?;
    let imeis = imeis_of(&products);
    // Read-only: on SQLite a reader connection, never the writer's queue.
    let mut tx = state.db.begin_read().await?;
    let type_names = names(&mut tx, "product_type", "product_type_id").await?;
    let state_names = names(&mut tx, "state_type", "state_type_id").await?;
    let entities = entities(&mut tx, &imeis).await?;
    let mut stmt = select_all("alert");
    stmt.and_where(c("alert", "dismissed_at").is_null())
        .order_by(Alias::new("alert_id"), Order::Asc);
    let alerts = by_imei(&mut tx, "alert", &imeis, stmt).await?;
    let mut stmt = select_all("product_note");
    stmt.order_by(Alias::new("product_note_id"), Order::Asc);
    let notes = by_imei(&mut tx, "product_note", &imeis, stmt).await?;
    let state_rows = latest_states(&mut tx, &products).await?;
    let (recent, located) = connections(&mut tx, &imeis).await?;
    let software = software(&mut tx, &imeis).await?;
    let capacity = parameter(&mut tx, &imeis, "capacity_limit").await?;
    tx.commit().await?;
    let rows_of = |m: &BTreeMap<String, Vec<Row>>, imei: &str| -> Json {
        Json::Array(
            m.get(imei)
                .map(|v| v.iter().cloned().map(Json::Object).collect())
                .unwrap_or_default(),
        )
    };
    let mut data = Vec::with_capacity(products.len());
    for p in &products {
        let imei = p.text("product_imei").unwrap_or_default();
        let get = |k: &str| p.get(k).cloned().unwrap_or(Json::Null);
        let (state_type, state_date) = p
            .int("latest_state_id")
            .and_then(|id| state_rows.get(&id).cloned())
            .map(|(t, d)| (Some(t), d))
            .unwrap_or((None, Json::Null));
        let state_name = state_type
            .and_then(|t| state_names.get(&t))
            .map(|n| n.to_lowercase());
        let location = located.get(imei);
        let (active, pending) = software.get(imei).cloned().unwrap_or_default();
        let mut o = Map::new();
        o.insert("product_imei".into(), get("product_imei"));
        o.insert("serial_number".into(), get("serial_number"));
        o.insert("imsi".into(), get("imsi"));
        o.insert(
            "hardware_type".into(),
            json!(p.int("product_type_id").and_then(|t| type_names.get(&t))),
        );
        o.insert("entities".into(), rows_of(&entities, imei));
        o.insert("hub_id".into(), get("hub_id"));
        o.insert("shop_id".into(), get("shop_id"));
        o.insert(
            "location_date".into(),
            datetime_json(location.and_then(|l| l.date)),
        );
        o.insert("alerts".into(), rows_of(&alerts, imei));
        o.insert("software_lock".into(), get("software_lock"));
        o.insert(
            "pending_software_created_at".into(),
            pending
                .as_ref()
                .map(|(_, at)| at.clone())
                .unwrap_or(Json::Null),
        );
        o.insert("state".into(), json!(state_name));
        o.insert("state_date".into(), state_date);
        o.insert(
            "recent_connection".into(),
            recent.get(imei).cloned().unwrap_or(Json::Null),
        );
        o.insert(
            "latitude".into(),
            json!(location.and_then(|l| l.latitude.as_deref())),
        );
        o.insert(
            "longitude".into(),
            json!(location.and_then(|l| l.longitude.as_deref())),
        );
        o.insert(
            "error_radius".into(),
            json!(location.and_then(|l| l.error_radius)),
        );
        o.insert("capacity_limit".into(), json!(capacity.get(imei)));
        for k in [
            "current_enable_flag",
            "desired_enable_flag",
            "current_tamper_flag",
            "desired_tamper_flag",
        ] {
            o.insert(k.into(), get(k));
        }
        o.insert("notes".into(), rows_of(&notes, imei));
        o.insert("software".into(), json!(active));
        o.insert("pending_software".into(), json!(pending.map(|(n, _)| n)));
        for k in ["created_at", "created_by", "modified_at"] {
            o.insert(k.into(), get(k));
        }
        data.push(Json::Object(o));
    }
    Ok(axum::Json(json!({
        "data": data,
        "num_results": total,
        "num_results_filtered": filtered,
    }))
    .into_response())
}

async fn current_enable_status(
    State(state): State<AppState>,
    user: AuthUser,
    params: QueryPairs,
) -> Result<Response, ApiError> {
    user.require(Permission::Factory)?;
    let page = params.page(
        state.config.default_results_per_page,
        state.config.bulk_max_results_per_page.min(MAX_PAGE),
    )?;
    let (products, _) = product_page(&state, &user, &QuerySpec::default(), page).await?;
    let imeis = imeis_of(&products);
    // Read-only: on SQLite a reader connection, never the writer's queue.
    let mut tx = state.db.begin_read().await?;
    let type_names = names(&mut tx, "product_type", "product_type_id").await?;
    let stmt = Query::select()
        .columns(["enable_history_id", "user", "date"].map(Alias::new))
        .columns(["prev_enable_state", "current_enable_state"].map(Alias::new))
        .from(Alias::new("enable_history"))
        .and_where(
            c("enable_history", "enable_history_id").is_in(
                products
                    .iter()
                    .filter_map(|p| p.int("latest_enable_history_id")),
            ),
        )
        .to_owned();
    let history: Vec<EnableHistoryRow> = tx.fetch_typed(&stmt).await?;
    let history: BTreeMap<i64, EnableHistoryRow> = history
        .into_iter()
        .filter_map(|h| Some((h.enable_history_id?, h)))
        .collect();
    let state_rows = latest_states(&mut tx, &products).await?;
    let entities = entities(&mut tx, &imeis).await?;
    let accessory = parameter(&mut tx, &imeis, "total_accessory_energy").await?;
    tx.commit().await?;
    let mut data = Vec::with_capacity(products.len());
    for p in &products {
        let imei = p.text("product_imei").unwrap_or_default();
        let h = p
            .int("latest_enable_history_id")
            .and_then(|id| history.get(&id));
        let current = match h.and_then(|h| h.current_enable_state.as_deref()) {
            Some(s) => json!(s),
            None => json!(super::unit::enable_status(
                p.flag("current_enable_flag"),
                p.flag("desired_enable_flag")
            )),
        };
        // The entity a unit is sold through: its first real entity.
        let entity = entities.get(imei).and_then(|es| {
            es.iter()
                .find(|e| e.int("entity_id") != Some(super::entity::UNKNOWN_ENTITY))
                .or_else(|| es.first())
        });
        let state_type = p
            .int("latest_state_id")
            .and_then(|id| state_rows.get(&id))
            .map(|(t, _)| *t)
            .unwrap_or(super::state::NON_EXISTANT);
        let pget = |k: &str| p.get(k).cloned().unwrap_or(Json::Null);
        data.push(EnableStatus {
            current_enable_state: current,
            current_state_type: state_type,
            date: datetime_json(h.and_then(|h| h.date)),
            dcm_enabled_flag: pget("dcm_enabled_flag"),
            entity: entity
                .and_then(|e| e.get("name").cloned())
                .unwrap_or(Json::Null),
            entity_id: entity
                .and_then(|e| e.get("entity_id").cloned())
                .unwrap_or(Json::Null),
            hardware_type: p
                .int("product_type_id")
                .and_then(|t| type_names.get(&t))
                .cloned(),
            prev_enable_state: json!(h.and_then(|h| h.prev_enable_state.as_deref())),
            product_imei: imei.to_string(),
            product_type_id: pget("product_type_id"),
            serial_number: pget("serial_number"),
            total_accessory_energy: accessory.get(imei).cloned(),
            user: json!(h.and_then(|h| h.user.as_deref())),
        });
    }
    Ok(success(
        StatusCode::OK,
        "enable_histories retrieved",
        serde_json::to_value(data).expect("plain fields serialise"),
    ))
}

/// The `enable_history` columns `/current_enable_status` shows.
#[derive(sqlx::FromRow)]
struct EnableHistoryRow {
    enable_history_id: Option<i64>,
    prev_enable_state: Option<String>,
    current_enable_state: Option<String>,
    user: Option<String>,
    date: Option<NaiveDateTime>,
}

/// One unit of `/current_enable_status`. A struct, so the handler and its
/// schema in the OpenAPI document ([`Self::schema`]) name the same fields:
/// `http::openapi`'s tests hold the one to the other. The `Json` fields are
/// catalogue columns as read, and documented with those columns' schemas.
#[derive(serde::Serialize)]
pub(crate) struct EnableStatus {
    /// `enable_history.current_enable_state`, or the status the flags give.
    current_enable_state: Json,
    current_state_type: i64,
    /// `enable_history.date`
    date: Json,
    /// `product.dcm_enabled_flag`
    dcm_enabled_flag: Json,
    /// The name of the entity the unit is sold through (`entity.name`).
    entity: Json,
    entity_id: Json,
    /// The name of its product type.
    hardware_type: Option<String>,
    /// `enable_history.prev_enable_state`
    prev_enable_state: Json,
    product_imei: String,
    /// `product.product_type_id`
    product_type_id: Json,
    /// `product.serial_number`
    serial_number: Json,
    /// The active `total_accessory_energy` parameter.
    total_accessory_energy: Option<String>,
    /// `enable_history.user`
    user: Json,
}

impl EnableStatus {
    /// `column` reads the catalogue's read schema of a column.
    pub(crate) fn schema(column: impl Fn(&str, &str) -> Json) -> Json {
        // Null when the unit has no enable_history row, or no entity.
        let nullable = |mut s: Json| {
            s["nullable"] = json!(true);
            // (`s["enum"]` would add a null `enum` to every other schema.)
            if let Some(values) = s.get_mut("enum").and_then(Json::as_array_mut) {
                if !values.contains(&Json::Null) {
                    values.push(Json::Null);
                }
            }
            s
        };
        let text = |description: &str| json!({"type": "string", "nullable": true, "description": description});
        json!({"type": "object", "title": "Enable status",
        "required": ["current_enable_state", "current_state_type", "date", "dcm_enabled_flag",
                     "entity", "entity_id", "hardware_type", "prev_enable_state", "product_imei",
                     "product_type_id", "serial_number", "total_accessory_energy", "user"],
        "properties": {
            "current_enable_state": column("enable_history", "current_enable_state"),
            "current_state_type": {"type": "integer", "format": "int64",
                                   "description": "state_type_id of the unit's lifecycle state"},
            "date": nullable(column("enable_history", "date")),
            "dcm_enabled_flag": column("product", "dcm_enabled_flag"),
            "entity": text("The entity the unit is sold through: its first one other than UNKNOWN"),
            "entity_id": nullable(column("entity", "entity_id")),
            "hardware_type": text("The name of the unit's product type"),
            "prev_enable_state": nullable(column("enable_history", "prev_enable_state")),
            "product_imei": column("product", "product_imei"),
            "product_type_id": column("product", "product_type_id"),
            "serial_number": column("product", "serial_number"),
            "total_accessory_energy": text("The active total_accessory_energy parameter"),
            "user": nullable(column("enable_history", "user")),
        }})
    }

    /// A value with every field set, for the tests that compare the two.
    #[cfg(test)]
    pub(crate) fn example() -> Self {
        Self {
            current_enable_state: json!("enabled"),
            current_state_type: 3,
            date: json!("2016-07-01T12:34:45.123456"),
            dcm_enabled_flag: json!(false),
            entity: json!("BBOXX"),
            entity_id: json!(1),
            hardware_type: Some("BB17SMART".into()),
            prev_enable_state: json!("pending_enabled"),
            product_imei: "866557056339858".into(),
            product_type_id: json!(4),
            serial_number: json!("BB-1"),
            total_accessory_energy: Some("12.5".into()),
            user: json!("admin"),
        }
    }
}
