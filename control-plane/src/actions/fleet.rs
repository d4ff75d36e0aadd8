//! Fleet data about one product (parts, parameters, connectivity, networks)
//! or all visible products (locations), and the small per-product settings
//! (energy limit, DCM flag, PAYG flag).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use chrono::{Duration, NaiveDateTime};
use sea_query::{Alias, Expr, Order, Query, SelectStatement, SimpleExpr};
use serde_json::{json, Map, Value as Json};

use super::{object, GetArgs};
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType, Permission};
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::query::Visibility;
use crate::rows::{c, col, eq, insert, select_all, tc, update, RowExt};
use crate::web::{success, JsonBody, QueryPairs};

/// A unit is expected to connect once every four hours (spec).
const EXPECTED_CONNECTION_SECS: i64 = 4 * 3600;

/// How far in the future `end` may be before it is refused, for clients
/// whose clock is slightly ahead (`end` is then read as now).
const CLOCK_SKEW_SECS: i64 = 60;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/products/{id}/parts", get(parts))
        .route("/products/locations", get(locations))
        .route("/products/{id}/parameters/history", get(parameter_history))
        .route(
            "/products/{id}/connectivity_reliability_rate",
            get(connectivity_reliability_rate),
        )
        .route("/products/{id}/available_networks", get(available_networks))
        .route(
            "/products/{id}/suggest_energy_limit",
            put(suggest_energy_limit),
        )
        .route(
            "/products/{id}/set_dcm_enabled_flag",
            put(set_dcm_enabled_flag),
        )
        .route("/products/{id}/set_is_payg", put(set_is_payg))
}

fn in_list(name: (&str, &str), values: impl IntoIterator<Item = i64>) -> SimpleExpr {
    Expr::col((Alias::new(name.0), Alias::new(name.1))).is_in(values)
}

/// Reads in one read-only transaction, so the parts of an answer agree; on
/// SQLite on a reader connection, so fleet reads never queue behind writes.
async fn read_tx(state: &AppState) -> Result<Tx, ApiError> {
    Ok(state.db.begin_read().await?)
}

// ------------------------------------------------------------------ parts

async fn parts(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let mut tx = read_tx(&state).await?;
    let product = super::visible_product(&mut tx, &user.visibility, &imei).await?;
    let mut stmt = select_all("part_product_linker");
    stmt.and_where(eq("product_imei", imei.as_str()))
        .order_by(Alias::new("part_product_linker_id"), Order::Asc);
    // The latest link of each part (a part may have left and come back).
    let mut linkers: BTreeMap<i64, Row> = BTreeMap::new();
    for l in crate::rows::rows(&mut tx, "part_product_linker", &stmt).await? {
        if let Some(id) = l.int("part_id") {
            linkers.insert(id, l);
        }
    }
    let mut stmt = select_all("part");
    stmt.and_where(in_list(("part", "part_id"), linkers.keys().copied()));
    let part_rows = crate::rows::rows(&mut tx, "part", &stmt).await?;
    let type_ids: BTreeSet<i64> = part_rows
        .iter()
        .filter_map(|p| p.int("part_type_id"))
        .collect();
    let mut stmt = select_all("part_type_replacement_linker");
    stmt.and_where(in_list(
        ("part_type_replacement_linker", "existing_part_type_id"),
        type_ids.iter().copied(),
    ))
    .and_where(
        Expr::col(Alias::new("product_type_id"))
            .is_null()
            .or(eq("product_type_id", product.int("product_type_id"))),
    )
    .order_by(Alias::new("part_type_replacement_linker_id"), Order::Asc);
    let replacements = crate::rows::rows(&mut tx, "part_type_replacement_linker", &stmt).await?;
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
    let types: BTreeMap<i64, Row> = crate::rows::rows(&mut tx, "part_type", &stmt)
        .await?
        .into_iter()
        .filter_map(|t| Some((t.int("part_type_id")?, t)))
        .collect();
    tx.commit().await?;
    let mut data = Map::new();
    for part in part_rows {
        let id = part.int("part_id").unwrap_or_default();
        let type_id = part.int("part_type_id").unwrap_or_default();
        let mut out = part.clone();
        out.insert(
            "part_product_linker".into(),
            linkers
                .get(&id)
                .cloned()
                .map(Json::Object)
                .unwrap_or(Json::Null),
        );
        out.insert(
            "part_type".into(),
            types
                .get(&type_id)
                .cloned()
                .map(Json::Object)
                .unwrap_or(Json::Null),
        );
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
    Ok(success(StatusCode::OK, "Parts found.", Json::Object(data)))
}

// -------------------------------------------------------------- locations

/// The id of the latest connection of the outer query's `connection` row's
/// product that has a location (not failed, with a latitude): what the
/// locations list and the dashboard show as where a product is.
pub(super) fn latest_location_of_row() -> SelectStatement {
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

async fn locations(
    State(state): State<AppState>,
    user: AuthUser,
    params: QueryPairs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let page = params.page(
        state.config.locations_per_page,
        state.config.bulk_max_results_per_page,
    )?;
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
        &user.visibility,
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
    let rows = state.db.fetch_all(&stmt, &refs).await?;
    Ok(axum::Json(json!({ "data": rows })).into_response())
}

// ---------------------------------------------------- parameter history

fn parse_time_arg(args: &Map<String, Json>, name: &str) -> Result<Option<NaiveDateTime>, ApiError> {
    match args.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Json::String(s)) => crate::values::parse_datetime(s).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "'{name}' must be an ISO-formatted timestamp or 'yyyy-mm-dd HH:MM:SS', got '{s}'"
            ))
        }),
        Some(other) => Err(ApiError::BadRequest(format!(
            "'{name}' must be an ISO-formatted timestamp or 'yyyy-mm-dd HH:MM:SS', got {other}"
        ))),
    }
}

/// Was the row active at `at`? (`date_added <= at < date_removed`.)
fn active_at(row: &Row, at: NaiveDateTime) -> bool {
    let added = row.time("date_added");
    let removed = row.time("date_removed");
    added.is_some_and(|a| a <= at) && removed.is_none_or(|r| r > at)
}

async fn parameter_history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    GetArgs(args): GetArgs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let at = parse_time_arg(&args, "date")?;
    let mut tx = read_tx(&state).await?;
    super::visible_product(&mut tx, &user.visibility, &imei).await?;
    let mut stmt = select_all("product_parameter");
    stmt.and_where(eq("product_imei", imei.as_str()))
        .order_by(Alias::new("product_parameter_id"), Order::Asc);
    let product_params = crate::rows::rows(&mut tx, "product_parameter", &stmt).await?;
    let mut stmt = select_all("part_product_linker");
    stmt.and_where(eq("product_imei", imei.as_str()))
        .order_by(Alias::new("part_product_linker_id"), Order::Asc);
    let linkers = crate::rows::rows(&mut tx, "part_product_linker", &stmt).await?;
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
    let mut stmt = select_all("part_parameter");
    stmt.and_where(in_list(
        ("part_parameter", "part_id"),
        part_ids.iter().copied(),
    ))
    .order_by(Alias::new("part_parameter_id"), Order::Asc);
    let part_params = crate::rows::rows(&mut tx, "part_parameter", &stmt).await?;
    tx.commit().await?;
    // As of a date: only what was active then, shown as active.
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
    let message = match at {
        None => format!("Full parameter history for #{imei} returned successfully"),
        Some(t) => format!(
            "Active parameters for #{imei} at {} returned successfully",
            crate::values::format_datetime(&t)
        ),
    };
    Ok(success(
        StatusCode::OK,
        message,
        json!({
            "part_parameters": part_parameters,
            "product_parameters": as_of(product_params),
        }),
    ))
}

// ---------------------------------------------------------- connectivity

/// The connectivity rate of `actual` connections over `[start, end]`:
/// expected is one per full four hours (pessimistic: 7 hours expect one),
/// capped at 1.00, rounded to two decimals. A window shorter than four
/// hours expects nothing, so any unit meets it: 1.00.
pub fn reliability_rate(actual: i64, start: NaiveDateTime, end: NaiveDateTime) -> f64 {
    let expected = (end - start).num_seconds() / EXPECTED_CONNECTION_SECS;
    if expected <= 0 {
        return 1.0;
    }
    let rate = (actual as f64 / expected as f64).min(1.0);
    (rate * 100.0).round() / 100.0
}

async fn connectivity_reliability_rate(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    GetArgs(args): GetArgs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let now = state.clock.now();
    let end = parse_time_arg(&args, "end")?;
    let start = parse_time_arg(&args, "start")?;
    if let Some(e) = end {
        if e > now + Duration::seconds(CLOCK_SKEW_SECS) {
            return Err(ApiError::BadRequest(
                "'end' must not be in the future".into(),
            ));
        }
    }
    let end = end.unwrap_or(now).min(now);
    let start = start.unwrap_or(end - Duration::days(7));
    if end < start {
        return Err(ApiError::BadRequest(
            "'end' must not be before 'start'".into(),
        ));
    }
    let mut tx = read_tx(&state).await?;
    super::visible_product(&mut tx, &user.visibility, &imei).await?;
    let count = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(Alias::new("connection"))
        .and_where(eq("product_imei", imei.as_str()))
        .and_where(Expr::col(Alias::new("date")).gte(start))
        .and_where(Expr::col(Alias::new("date")).lte(end))
        .to_owned();
    let actual = tx.fetch_i64(&count).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        "Successfully computed product connectivity reliability rate",
        json!({"connectivity_reliability_rate": reliability_rate(actual, start, end)}),
    ))
}

// --------------------------------------------------------------- networks

async fn available_networks(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    GetArgs(args): GetArgs,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let mcc = match super::int_field(&args, "mcc") {
        Ok(Some(m)) if (0..1000).contains(&m) => m,
        Ok(None) => {
            return Err(ApiError::BadRequest(
                "The mobile country code is required: ?mcc=<mcc>".into(),
            ))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "'mcc' must be a mobile country code (an integer from 0 to 999)".into(),
            ))
        }
    };
    let mut tx = read_tx(&state).await?;
    super::visible_product(&mut tx, &user.visibility, &imei).await?;
    // The unit's current parts -> their SIM providers -> those providers'
    // networks in the country.
    let part_types = Query::select()
        .expr(tc("part", "part_type_id"))
        .from(Alias::new("part"))
        .inner_join(
            Alias::new("part_product_linker"),
            c("part_product_linker", "part_id").equals((Alias::new("part"), Alias::new("part_id"))),
        )
        .and_where(c("part_product_linker", "product_imei").eq(imei.as_str()))
        .and_where(c("part_product_linker", "date_removed").is_null())
        .to_owned();
    let providers = Query::select()
        .column(Alias::new("sim_provider_id"))
        .from(Alias::new("sim_part_type_sim_provider_linker"))
        .and_where(Expr::col(Alias::new("sim_part_type_id")).in_subquery(part_types))
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
    let rows = crate::rows::rows(&mut tx, "network", &stmt).await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        "Available networks found",
        json!({ "networks": rows }),
    ))
}

// ------------------------------------------------------------ energy limit

fn parse_limit(v: Option<&Json>) -> Result<f64, ApiError> {
    let bad = || {
        ApiError::field(
            "energy_limit",
            "field 'energy_limit' must be a non-negative number (passed as a string)",
        )
    };
    let value = match v {
        None | Some(Json::Null) => {
            return Err(ApiError::field(
                "energy_limit",
                "field 'energy_limit' is required",
            ))
        }
        Some(Json::String(s)) => s.trim().parse::<f64>().map_err(|_| bad())?,
        Some(Json::Number(n)) => n.as_f64().ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(bad())
    }
}

/// The `default_energy_limit` row for the unit's battery and state,
/// preferring one specific to one of its entities.
async fn default_limits(tx: &mut Tx, imei: &str, state_type: i64) -> Result<Option<Row>, ApiError> {
    let battery_types = Query::select()
        .expr(tc("part", "part_type_id"))
        .from(Alias::new("part"))
        .inner_join(
            Alias::new("part_product_linker"),
            c("part_product_linker", "part_id").equals((Alias::new("part"), Alias::new("part_id"))),
        )
        .and_where(c("part_product_linker", "product_imei").eq(imei))
        .and_where(c("part_product_linker", "date_removed").is_null())
        .to_owned();
    let mut stmt = select_all("default_energy_limit");
    stmt.and_where(Expr::col(Alias::new("battery_type_id")).in_subquery(battery_types))
        .and_where(eq("state_type_id", state_type))
        .order_by(Alias::new("default_energy_limit_id"), Order::Asc);
    let rows = crate::rows::rows(tx, "default_energy_limit", &stmt).await?;
    let entities: Vec<i64> = super::entity::current_entities(tx, imei)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let specific = rows
        .iter()
        .find(|r| r.int("entity_id").is_some_and(|e| entities.contains(&e)));
    let general = rows.iter().find(|r| r.int("entity_id").is_none());
    Ok(specific.or(general).cloned())
}

async fn suggest_energy_limit(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    use super::state::{ACTIVATED, IN_REPAIR_SYSTEM, MONITORED};
    user.require(Permission::Technical)?;
    let body = object(body)?;
    let requested = parse_limit(body.get("energy_limit"))?;
    let now = state.clock.now();
    let by = user.username.as_str();
    let mut tx = state.db.begin().await?;
    let product = super::lock_product(&mut tx, &user.visibility, &imei).await?;
    let state_type =
        super::state::current_state_type(&mut tx, product.int("latest_state_id")).await?;
    if ![ACTIVATED, MONITORED, IN_REPAIR_SYSTEM].contains(&state_type) {
        return Err(ApiError::field(
            "state",
            format!(
                "The energy limit can only be set on units in ACTIVATED, MONITORED or IN_REPAIR_SYSTEM; #{imei} is in state '{state_type}'"
            ),
        ));
    }
    if let Some(total) =
        super::active_product_parameter(&mut tx, &imei, "total_accessory_energy").await?
    {
        return Err(ApiError::field(
            "energy_limit",
            format!(
                "The energy limit of #{imei} is locked: total_accessory_energy is set ({total})"
            ),
        ));
    }
    let cap = super::active_product_parameter(&mut tx, &imei, "energy_limit_cap")
        .await?
        .and_then(|c| c.trim().parse::<f64>().ok());
    let defaults = default_limits(&mut tx, &imei, state_type).await?;
    let default_max = defaults
        .as_ref()
        .and_then(|d| d.get("max_energy_limit"))
        .and_then(Json::as_f64);
    let min = defaults
        .as_ref()
        .and_then(|d| d.get("min_energy_limit"))
        .and_then(Json::as_f64);
    let max = match (default_max, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut applied = requested;
    if let Some(max) = max {
        applied = applied.min(max);
    }
    if let Some(min) = min {
        applied = applied.max(min);
    }
    let bounded = applied != requested;
    let type_id = super::parameter_type_id(&mut tx, "energy_limit", "float", by, now).await?;
    // A newer suggestion supersedes one the unit has not picked up yet.
    update(
        &mut tx,
        "product_parameter",
        vec![
            ("status", "expired".into()),
            ("date_added", now.into()),
            ("date_removed", now.into()),
        ],
        eq("product_imei", imei.as_str())
            .and(eq("parameter_type_id", type_id))
            .and(eq("status", "pending")),
        by,
        now,
    )
    .await?;
    insert(
        &mut tx,
        "product_parameter",
        vec![
            ("product_imei", imei.as_str().into()),
            ("parameter_type_id", type_id.into()),
            ("status", "pending".into()),
            ("value", applied.to_string().into()),
        ],
        by,
        now,
    )
    .await?;
    tx.commit().await?;
    let message = if bounded {
        format!("Energy limit for #{imei}: requested {requested} was bounded to {applied}")
    } else {
        format!("Energy limit for #{imei} set to {applied}")
    };
    Ok(success(
        StatusCode::OK,
        message,
        json!({
            "requested": requested,
            "applied": applied,
            "max_energy_limit": max,
            "min_energy_limit": min,
            "energy_limit_cap": cap,
            "bounded": bounded,
        }),
    ))
}

// ------------------------------------------------------------------ flags

async fn set_dcm_enabled_flag(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    set_product_flag(state, user, imei, body, ProductFlag::DcmEnabled).await
}

async fn set_is_payg(
    State(state): State<AppState>,
    user: AuthUser,
    Path(imei): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    set_product_flag(state, user, imei, body, ProductFlag::IsPayg).await
}

/// A product flag a TECHNICAL user sets with `{"<field>": true|false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProductFlag {
    DcmEnabled,
    IsPayg,
}

impl ProductFlag {
    /// The body's field.
    fn field(self) -> &'static str {
        match self {
            Self::DcmEnabled => "enabled",
            Self::IsPayg => "is_payg",
        }
    }

    /// The `product` column.
    fn column(self) -> &'static str {
        match self {
            Self::DcmEnabled => "dcm_enabled_flag",
            Self::IsPayg => "is_payg",
        }
    }

    /// The spec's success message.
    fn message(self, imei: &str, value: bool) -> String {
        let value = super::py_bool(value);
        match self {
            Self::DcmEnabled => format!("Product {imei}. DCM Enabled Flag set to {value}"),
            Self::IsPayg => format!("is_payg for the Product {imei}, has been set to={value}"),
        }
    }
}

/// Sets a product flag of a locked, visible product. BP20 units keep
/// their DCM flag: they are DCM enabled from the factory.
async fn set_flag(
    tx: &mut Tx,
    visibility: &Visibility,
    imei: &str,
    flag: ProductFlag,
    value: bool,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let product = super::lock_product(tx, visibility, imei).await?;
    if flag == ProductFlag::DcmEnabled && super::is_bp20(tx, product.int("product_type_id")).await?
    {
        return Err(ApiError::field(
            "enabled",
            "BP20 devices are DCM enabled by default and cannot be modified",
        ));
    }
    update(
        tx,
        "product",
        vec![(flag.column(), value.into())],
        eq("product_imei", imei),
        by,
        now,
    )
    .await?;
    Ok(())
}

async fn set_product_flag(
    state: AppState,
    user: AuthUser,
    imei: String,
    body: Json,
    flag: ProductFlag,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    let value = super::require_bool(&object(body)?, flag.field())?;
    let mut tx = state.db.begin().await?;
    set_flag(
        &mut tx,
        &user.visibility,
        &imei,
        flag,
        value,
        &user.username,
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(success(
        StatusCode::OK,
        flag.message(&imei, value),
        Json::Null,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        crate::values::parse_datetime(s).unwrap()
    }

    #[test]
    fn reliability_is_pessimistic_and_capped() {
        let start = t("2017-01-01 00:00:00");
        // 7 hours expect one connection.
        assert_eq!(reliability_rate(1, start, t("2017-01-01 07:00:00")), 1.0);
        assert_eq!(reliability_rate(0, start, t("2017-01-01 07:00:00")), 0.0);
        // A week expects 42.
        assert_eq!(reliability_rate(21, start, t("2017-01-08 00:00:00")), 0.5);
        assert_eq!(reliability_rate(100, start, t("2017-01-08 00:00:00")), 1.0);
        assert_eq!(reliability_rate(0, start, t("2017-01-01 03:00:00")), 1.0);
    }
}
