//! Product, part and fleet actions: the endpoints of the spec's "Product
//! Actions", "Part Actions" and "Custom Endpoints" sections, and the service
//! functions behind them.
//!
//! # Layout
//! - [`manufacturing`]: PCB parts, products, serial numbers (FACTORY).
//! - [`unit`]: enable/disable, tamper switch, software; and
//!   [`unit::apply_unit_report`], which the gateway/ingest call when a unit
//!   reports its actual state.
//! - [`sms`]: the SMS provider trait, WAKEUP SMS, delivery receipts, expiry.
//! - [`entity`]: assign/change/remove entity with the Unknown Entity rule.
//! - [`state`]: the lifecycle state machine (`change_state`).
//! - [`fleet`]: parts, locations, parameter history, connectivity,
//!   networks, energy limit, DCM and PAYG flags.
//! - [`dashboard`]: `/dashboard2` and `/current_enable_status`.
//! - [`alert`]: alert dismissal.
//!
//! # Conventions
//! - Service functions take `&mut Tx`, so a caller composes them with each
//!   other and with the notification outbox into one transaction.
//! - A product-level action first loads the product *locked* (`SELECT ...
//!   FOR UPDATE` on PostgreSQL; on SQLite every write transaction already
//!   runs alone on the single writer connection) and *scoped*: a product
//!   the user may not see answers 404, as the generic routes do.
//! - Every change of a unit's enable status or lifecycle state writes a
//!   `product-status` notification into the outbox in the same transaction.

pub mod alert;
pub mod dashboard;
pub mod entity;
pub mod fleet;
pub mod manufacturing;
pub mod sms;
pub mod state;
pub mod unit;

use axum::extract::{FromRequest, Request};
use axum::Router;
use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, JoinType, LockType, Query, SelectStatement};
use serde_json::{Map, Value as Json};

use crate::app::AppState;
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::query::Visibility;
use crate::rows::{c, catalogue, eq, insert_id, row, table};
use crate::web::{JsonBody, QueryPairs};

/// Every action route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(manufacturing::router())
        .merge(unit::router())
        .merge(sms::router())
        .merge(entity::router())
        .merge(state::router())
        .merge(fleet::router())
        .merge(dashboard::router())
        .merge(alert::router())
}

/// `INNER JOIN <table> AS <alias> ON <alias>.<key> = <from>.<key>`: the
/// join of a linker row to the row it names by `key`, as the actions'
/// reads spell it.
pub(crate) trait JoinOn {
    fn join_on(&mut self, table: &str, alias: &str, from: &str, key: &str) -> &mut Self;
}

impl JoinOn for SelectStatement {
    fn join_on(&mut self, table: &str, alias: &str, from: &str, key: &str) -> &mut Self {
        self.join_as(
            JoinType::InnerJoin,
            Alias::new(table),
            Alias::new(alias),
            c(alias, key).equals((Alias::new(from), Alias::new(key))),
        )
    }
}

/// The product columns the actions decide by: a locked or visible product
/// as [`lock_product`] and [`visible_product`] read it.
#[derive(Debug, sqlx::FromRow)]
pub struct Product {
    pub product_imei: String,
    pub product_type_id: i64,
    pub latest_state_id: Option<i64>,
    pub software_lock: Option<i64>,
    pub current_enable_flag: bool,
    pub desired_enable_flag: bool,
    pub current_tamper_flag: bool,
    pub desired_tamper_flag: bool,
    pub rtc_enabled_flag: bool,
}

impl Product {
    /// The columns of [`Product`], as the select names them.
    const COLUMNS: [&'static str; 9] = [
        "product_imei",
        "product_type_id",
        "latest_state_id",
        "software_lock",
        "current_enable_flag",
        "desired_enable_flag",
        "current_tamper_flag",
        "desired_tamper_flag",
        "rtc_enabled_flag",
    ];

    /// The select of product `imei` reduced to [`Product::COLUMNS`], with
    /// no row when `visibility` does not let the user see it.
    fn select(visibility: &Visibility, imei: &str) -> SelectStatement {
        let product = table("product");
        let columns = Self::COLUMNS.iter().map(|name| {
            product
                .column(name)
                .unwrap_or_else(|| panic!("product.{name} is in the catalogue"))
        });
        crate::query::get_columns(catalogue(), product, imei.into(), visibility, columns)
    }
}

/// The product, locked for the rest of `tx`, if `visibility` lets the
/// user see it; 404 otherwise (the same answer as for a missing product,
/// so another entity's IMEIs are not revealed).
pub(crate) async fn lock_product(
    tx: &mut Tx,
    visibility: &Visibility,
    imei: &str,
) -> Result<Product, ApiError> {
    let mut stmt = Product::select(visibility, imei);
    stmt.lock(LockType::Update);
    tx.fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| product_not_found(imei))
}

/// The product if visible, without a lock (for reads).
pub(crate) async fn visible_product(
    tx: &mut Tx,
    visibility: &Visibility,
    imei: &str,
) -> Result<Product, ApiError> {
    tx.fetch_typed_optional(&Product::select(visibility, imei))
        .await?
        .ok_or_else(|| product_not_found(imei))
}

/// The whole product row as the generic routes answer it (every readable
/// column), for a response body; 404 when there is no such product.
pub(crate) async fn product_body(tx: &mut Tx, imei: &str) -> Result<Row, ApiError> {
    let stmt = crate::query::compile_get(
        catalogue(),
        table("product"),
        imei.into(),
        &Visibility::Global,
    );
    row(tx, "product", &stmt)
        .await?
        .ok_or_else(|| product_not_found(imei))
}

/// `columns` of product `imei`, decoded as `T` (404 when there is no such product).
pub(crate) async fn product_columns<T: crate::db::TypedRow>(
    tx: &mut Tx,
    imei: &str,
    columns: &[&str],
) -> Result<T, ApiError> {
    let stmt = Query::select()
        .columns(columns.iter().map(|c| Alias::new(*c)))
        .from(Alias::new("product"))
        .and_where(eq("product_imei", imei))
        .to_owned();
    tx.fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| product_not_found(imei))
}

pub(crate) fn product_not_found(imei: &str) -> ApiError {
    ApiError::NotFound(format!("No product with product_imei '{imei}'"))
}

/// A request body that must be a JSON object (an empty body is an empty
/// object); anything else is a 400.
pub(crate) fn object(body: Json) -> Result<Map<String, Json>, ApiError> {
    match body {
        Json::Null => Ok(Map::new()),
        Json::Object(m) => Ok(m),
        _ => Err(ApiError::BadRequest(
            "The body must be a JSON object".into(),
        )),
    }
}

/// Arguments of a GET that the spec documents with a JSON body: the body's
/// fields, overridden by the query string's (so both ways of sending them
/// work; a client's HTTP library may drop a GET body).
pub(crate) struct GetArgs(pub(crate) Map<String, Json>);

impl FromRequest<AppState> for GetArgs {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().unwrap_or("").to_string();
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        let mut args = object(body)?;
        for (k, v) in QueryPairs::parse(Some(&query))? {
            args.insert(k, Json::String(v));
        }
        Ok(Self(args))
    }
}

/// A required integer field (a JSON number, or a string of digits as
/// query strings and form-minded clients send).
pub(crate) fn int_field(body: &Map<String, Json>, name: &str) -> Result<Option<i64>, ApiError> {
    match body.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::field(name, format!("field '{name}' must be an integer"))),
        Some(Json::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            ApiError::field(
                name,
                format!("field '{name}' must be an integer, got '{s}'"),
            )
        }),
        Some(_) => Err(ApiError::field(
            name,
            format!("field '{name}' must be an integer"),
        )),
    }
}

pub(crate) fn require_int(body: &Map<String, Json>, name: &str) -> Result<i64, ApiError> {
    int_field(body, name)?
        .ok_or_else(|| ApiError::field(name, format!("field '{name}' is required")))
}

/// An optional string field.
pub(crate) fn str_field(body: &Map<String, Json>, name: &str) -> Result<Option<String>, ApiError> {
    match body.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::field(
            name,
            format!("field '{name}' must be a string"),
        )),
    }
}

/// A required boolean field (`true`/`false`; the strings "true"/"false"
/// too, as Python clients' `data=` form bodies send them).
pub(crate) fn require_bool(body: &Map<String, Json>, name: &str) -> Result<bool, ApiError> {
    match body.get(name) {
        Some(Json::Bool(b)) => Ok(*b),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Json::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        None | Some(Json::Null) => {
            Err(ApiError::field(name, format!("field '{name}' is required")))
        }
        Some(_) => Err(ApiError::field(
            name,
            format!("field '{name}' must be true or false"),
        )),
    }
}

/// Python's spelling of a boolean, as the spec's messages show it.
pub(crate) fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The product columns the `product-status` notification is made of.
#[derive(sqlx::FromRow)]
struct ProductStatusRow {
    current_enable_flag: Option<bool>,
    desired_enable_flag: Option<bool>,
    latest_state_id: Option<i64>,
}

/// Writes the `product-status` notification of `imei`'s current state and
/// enable status, inside `tx`.
pub(crate) async fn notify_product_status(
    tx: &mut Tx,
    imei: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let p: ProductStatusRow = product_columns(
        tx,
        imei,
        &[
            "current_enable_flag",
            "desired_enable_flag",
            "latest_state_id",
        ],
    )
    .await?;
    let status = unit::enable_status(
        p.current_enable_flag.unwrap_or(false),
        p.desired_enable_flag.unwrap_or(false),
    );
    let state = state::current_state_type(tx, p.latest_state_id).await?;
    crate::outbox::enqueue(
        tx,
        crate::outbox::PRODUCT_STATUS,
        Some(imei),
        serde_json::json!({"state": state, "enabled_status": status, "user": by}),
        now,
    )
    .await?;
    Ok(())
}

/// `true` when the product type's name says BP20: such units are DCM
/// enabled from the factory and the flag cannot be changed.
pub(crate) async fn is_bp20(tx: &mut Tx, product_type_id: i64) -> Result<bool, ApiError> {
    let stmt = Query::select()
        .column(Alias::new("name"))
        .from(Alias::new("product_type"))
        .and_where(eq("product_type_id", product_type_id))
        .to_owned();
    let name: Option<(Option<String>,)> = tx.fetch_typed_optional(&stmt).await?;
    Ok(name
        .and_then(|(name,)| name)
        .is_some_and(|n| n.to_ascii_uppercase().contains("BP20")))
}

/// Looks up a parameter type by name, creating it when missing (the
/// parameters the actions themselves set: energy limit, solar panel
/// wattage).
pub(crate) async fn parameter_type_id(
    tx: &mut Tx,
    name: &str,
    data_type: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<i64, ApiError> {
    let stmt = Query::select()
        .column(Alias::new("parameter_type_id"))
        .from(Alias::new("parameter_type"))
        .and_where(eq("name", name))
        .order_by(Alias::new("parameter_type_id"), sea_query::Order::Asc)
        .limit(1)
        .to_owned();
    let found: Option<(Option<i64>,)> = tx.fetch_typed_optional(&stmt).await?;
    if let Some((Some(id),)) = found {
        return Ok(id);
    }
    insert_id(
        tx,
        "parameter_type",
        vec![
            ("name", name.into()),
            ("data_type", data_type.into()),
            ("repeatable", false.into()),
            ("setting", true.into()),
        ],
        by,
        now,
    )
    .await
}

/// A product parameter as [`latest_product_parameter`] reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct ProductParameterRow {
    pub product_parameter_id: Option<i64>,
    pub parameter_type_id: Option<i64>,
    pub value: Option<String>,
}

/// The newest product parameter of a type name in a status (`active`,
/// `pending`, ...): its `product_parameter_id`, `parameter_type_id` and
/// `value`. Shared by the energy-limit actions and the unit reports that
/// confirm a pending parameter.
pub(crate) async fn latest_product_parameter(
    tx: &mut Tx,
    imei: &str,
    name: &str,
    status: &str,
) -> Result<Option<ProductParameterRow>, crate::db::DbError> {
    let pp = |c: &str| (Alias::new("product_parameter"), Alias::new(c));
    let stmt = Query::select()
        .columns([
            pp("product_parameter_id"),
            pp("parameter_type_id"),
            pp("value"),
        ])
        .from(Alias::new("product_parameter"))
        .inner_join(
            Alias::new("parameter_type"),
            c("parameter_type", "parameter_type_id").equals(pp("parameter_type_id")),
        )
        .and_where(Expr::col(pp("product_imei")).eq(imei))
        .and_where(c("parameter_type", "name").eq(name))
        .and_where(Expr::col(pp("status")).eq(status))
        .order_by(pp("product_parameter_id"), sea_query::Order::Desc)
        .limit(1)
        .to_owned();
    tx.fetch_typed_optional(&stmt).await
}

/// The active value of a product parameter by type name, if any.
pub(crate) async fn active_product_parameter(
    tx: &mut Tx,
    imei: &str,
    name: &str,
) -> Result<Option<String>, ApiError> {
    Ok(latest_product_parameter(tx, imei, name, "active")
        .await?
        .and_then(|r| r.value))
}
