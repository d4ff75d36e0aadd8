//! Products: the `create_product/<kind>`, `create_hub2` and
//! `create_enterprise` requests, and the product built from a PCB (see the
//! module docs of [`super`] for the lifecycle it starts).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDateTime;
use sea_query::{Alias, Query};
use serde_json::{json, Map, Value as Json};

use super::pcb::{create_pcb, exists, part_body, part_by_serial, properties_of};
use super::pcb::{require_new_part, require_part_type, PcbRequest, PCB_IMEI};
use super::serial::next_serial;
use super::HYENA_PCB_PART_TYPE;
use crate::actions::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::rows::{eq, insert, RowExt};
use crate::web::{success, JsonBody};

/// The longest battery serial number a product request takes.
pub const MAX_BATTERY_SERIAL: usize = 255;

/// The kinds of product `create_product/<kind>` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductKind {
    Home2,
    Home3,
    Hub2,
    Enterprise,
}

impl ProductKind {
    /// The spellings [`Self::parse`] accepts (the OpenAPI document's enum).
    pub const NAMES: [&'static str; 4] = ["home2", "home3", "hub2", "enterprise"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "home2" => Some(Self::Home2),
            "home3" => Some(Self::Home3),
            "hub2" => Some(Self::Hub2),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }

    /// The `product_type_id` (migration 0003).
    pub fn product_type_id(self) -> i64 {
        match self {
            Self::Home2 => 6,
            Self::Home3 => 10,
            Self::Hub2 => 7,
            Self::Enterprise => 4,
        }
    }

    /// Whether the request must name a battery (the document's `required`).
    pub fn needs_battery(self) -> bool {
        !matches!(self, Self::Hub2)
    }

    fn message(self, serial: &str, imei: &str) -> String {
        match self {
            Self::Home2 => format!("Home2Product: {serial} - ({imei}) created."),
            Self::Home3 => "new Home3 product successfully created.".into(),
            Self::Hub2 => format!("Hub2Product: {serial} - ({imei}) created."),
            Self::Enterprise => format!("EnterpriseProduct: {serial} - ({imei}) created."),
        }
    }
}

/// Product columns a factory may set through the `product` object.
pub const PRODUCT_FIELDS: [&str; 10] = [
    "assembler",
    "hub_id",
    "shop_id",
    "rtc_network_name",
    "rtc_enabled_flag",
    "warranty_start_date",
    "gps_lat",
    "gps_lon",
    "is_payg",
    "ip_address",
];

/// A validated product request (the body of `create_product/<kind>`).
#[derive(Debug, Clone)]
pub struct ProductRequest {
    pub pcb_imei: String,
    /// `(part_type_id, serial_number)`.
    pub battery: Option<(i64, String)>,
    pub solar_panel_wattage: Option<f64>,
    /// Validated `product` fields.
    pub product: Vec<(String, sea_query::Value)>,
}

impl ProductRequest {
    /// Validates a body (`pcb_imei` is not required when `imei` is given
    /// by the caller, as in `create_hub2`).
    pub fn parse(
        body: &Map<String, Json>,
        kind: ProductKind,
        imei: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut errors = Map::new();
        let pcb_imei = match imei {
            Some(i) => Some(i.to_string()),
            None => PCB_IMEI.read(body, &mut errors),
        };
        let battery = match body.get("battery") {
            None | Some(Json::Null) => {
                if kind.needs_battery() {
                    errors.insert("battery".into(), json!("field 'battery' is required"));
                }
                None
            }
            Some(Json::Object(b)) => {
                let part_type = crate::actions::int_field(b, "part_type_id").ok().flatten();
                let serial = b
                    .get("serial_number")
                    .and_then(Json::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.chars().count() <= MAX_BATTERY_SERIAL);
                match (part_type, serial) {
                    (Some(t), Some(s)) => Some((t, s.to_string())),
                    _ => {
                        errors.insert(
                            "battery".into(),
                            json!("field 'battery' must be {\"part_type_id\": <int>, \"serial_number\": <string>}"),
                        );
                        None
                    }
                }
            }
            Some(_) => {
                errors.insert("battery".into(), json!("field 'battery' must be an object"));
                None
            }
        };
        let solar_panel_wattage = match body.get("solar_panel_wattage") {
            None | Some(Json::Null) => None,
            Some(v) => match v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(w) if w.is_finite() && w > 0.0 => Some(w),
                _ => {
                    errors.insert(
                        "solar_panel_wattage".into(),
                        json!("field 'solar_panel_wattage' must be a positive number"),
                    );
                    None
                }
            },
        };
        let mut product = Vec::new();
        match body.get("product") {
            None | Some(Json::Null) => {}
            Some(Json::Object(p)) => {
                let table = crate::rows::table("product");
                for (k, v) in p {
                    match table
                        .column(k)
                        .filter(|_| PRODUCT_FIELDS.contains(&k.as_str()))
                    {
                        None => {
                            errors.insert(
                                format!("product.{k}"),
                                json!(format!(
                                    "field '{k}' cannot be set on a new product; allowed: {}",
                                    PRODUCT_FIELDS.join(", ")
                                )),
                            );
                        }
                        Some(c) if v.is_null() && c.not_null => {
                            errors.insert(
                                format!("product.{k}"),
                                json!(format!("field '{k}' may not be null")),
                            );
                        }
                        Some(c) => match crate::values::coerce(c, v) {
                            Ok(value) => product.push((k.clone(), value)),
                            Err(e) => {
                                errors.insert(format!("product.{k}"), json!(e.to_string()));
                            }
                        },
                    }
                }
            }
            Some(_) => {
                errors.insert("product".into(), json!("field 'product' must be an object"));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Self {
            pcb_imei: pcb_imei.unwrap_or_default(),
            battery,
            solar_panel_wattage,
            product,
        })
    }
}

/// What [`create_product_from_pcb`] created.
#[derive(Debug, Clone)]
pub struct CreatedProduct {
    pub product: Row,
    pub pcb: Row,
    pub sim: Option<Row>,
    pub battery: Option<Row>,
}

async fn link_part(
    tx: &mut Tx,
    imei: &str,
    part: &Row,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    insert(
        tx,
        "part_product_linker",
        vec![
            ("part_id", part.int("part_id").into()),
            ("product_imei", imei.into()),
            ("date_added", now.into()),
        ],
        by,
        now,
    )
    .await?;
    Ok(())
}

/// Builds a product of `kind` from an existing PCB, inside `tx` (see the
/// module docs for the lifecycle it starts).
pub async fn create_product_from_pcb(
    tx: &mut Tx,
    kind: ProductKind,
    req: &ProductRequest,
    serial_prefix: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<CreatedProduct, ApiError> {
    let imei = req.pcb_imei.as_str();
    let pcb = part_by_serial(tx, imei).await?.ok_or_else(|| {
        ApiError::field(
            "pcb_imei",
            format!("No PCB part with serial_number '{imei}'"),
        )
    })?;
    let props = properties_of(&pcb);
    let prop = |k: &str| props.get(k).and_then(Json::as_str).map(str::to_string);
    let Some(imsi) = prop("imsi") else {
        return Err(ApiError::field(
            "pcb_imei",
            format!(
                "Part '{imei}' is not a PCB created by create_*_pcb (no imsi in its properties)"
            ),
        ));
    };
    if exists(tx, "product", "product_imei", imei.into()).await? {
        return Err(ApiError::field(
            "pcb_imei",
            format!("A product with product_imei '{imei}' already exists"),
        ));
    }
    let linked = Query::select()
        .expr(sea_query::Expr::col(Alias::new("part_product_linker_id")).count())
        .from(Alias::new("part_product_linker"))
        .and_where(eq("part_id", pcb.int("part_id")))
        .and_where(sea_query::Expr::col(Alias::new("date_removed")).is_null())
        .to_owned();
    if tx.fetch_i64(&linked).await? > 0 {
        return Err(ApiError::field(
            "pcb_imei",
            format!("PCB '{imei}' is already part of a product"),
        ));
    }
    for (name, value) in &req.product {
        let target = match name.as_str() {
            "hub_id" => Some(("hub", "hub_id")),
            "shop_id" => Some(("shop", "shop_id")),
            _ => None,
        };
        if let (Some((table, pk)), false) =
            (target, matches!(value, sea_query::Value::BigInt(None)))
        {
            if !exists(tx, table, pk, value.clone()).await? {
                return Err(ApiError::field(
                    format!("product.{name}"),
                    format!(
                        "field '{name}' refers to {table} {pk} {value:?}, which does not exist"
                    ),
                ));
            }
        }
    }
    let serial = match prop("serial_number") {
        Some(s) => s,
        None => next_serial(tx, serial_prefix, by, now).await?,
    };
    let battery = match &req.battery {
        Some((part_type, battery_serial)) => {
            require_part_type(tx, "battery", *part_type).await?;
            require_new_part(tx, "battery", battery_serial).await?;
            Some(
                insert(
                    tx,
                    "part",
                    vec![
                        ("serial_number", battery_serial.as_str().into()),
                        ("part_type_id", (*part_type).into()),
                    ],
                    by,
                    now,
                )
                .await?,
            )
        }
        None => None,
    };
    let iccid = prop("iccid");
    let sim_serial = iccid.clone().unwrap_or_else(|| imsi.clone());
    let sim = part_by_serial(tx, &sim_serial).await?;
    let product_type = kind.product_type_id();
    let bp20 = crate::actions::is_bp20(tx, product_type).await?;
    let mut values: Vec<(&str, sea_query::Value)> = vec![
        ("product_imei", imei.into()),
        ("imsi", imsi.as_str().into()),
        ("iccid", iccid.clone().into()),
        ("device_key", prop("device_key").into()),
        ("serial_number", serial.as_str().into()),
        ("product_type_id", product_type.into()),
        ("current_enable_flag", false.into()),
        ("desired_enable_flag", false.into()),
        ("current_tamper_flag", false.into()),
        ("desired_tamper_flag", false.into()),
        ("rtc_enabled_flag", false.into()),
        ("dcm_enabled_flag", bp20.into()),
        ("is_payg", true.into()),
    ];
    for (name, value) in &req.product {
        values.retain(|(n, _)| *n != name.as_str());
        values.push((name.as_str(), value.clone()));
    }
    insert(tx, "product", values, by, now).await?;
    crate::actions::state::record_state(
        tx,
        imei,
        crate::actions::state::NON_EXISTANT,
        crate::actions::state::NON_EXISTANT,
        by,
        now,
    )
    .await?;
    let history =
        crate::actions::unit::record_enable_change(tx, imei, "init", "disabled", by, now).await?;
    crate::rows::update(
        tx,
        "product",
        vec![("latest_enable_history_id", history.into())],
        eq("product_imei", imei),
        by,
        now,
    )
    .await?;
    link_part(tx, imei, &pcb, by, now).await?;
    if let Some(sim) = &sim {
        link_part(tx, imei, sim, by, now).await?;
    }
    if let Some(battery) = &battery {
        link_part(tx, imei, battery, by, now).await?;
    }
    crate::actions::entity::link_entity(tx, imei, crate::actions::entity::UNKNOWN_ENTITY, by, now)
        .await?;
    if let Some(watts) = req.solar_panel_wattage {
        let pt =
            crate::actions::parameter_type_id(tx, "solar_panel_wattage", "float", by, now).await?;
        insert(
            tx,
            "product_parameter",
            vec![
                ("product_imei", imei.into()),
                ("parameter_type_id", pt.into()),
                ("status", "active".into()),
                ("value", watts.to_string().into()),
                ("date_added", now.into()),
            ],
            by,
            now,
        )
        .await?;
    }
    // The factory flow is complete: NON_EXISTANT -> STORED.
    let product = crate::actions::lock_product(tx, &crate::query::Visibility::Global, imei).await?;
    crate::actions::state::transition(tx, &product, crate::actions::state::STORED, by, now).await?;
    let product = crate::actions::product_body(tx, imei).await?;
    Ok(CreatedProduct {
        product,
        pcb,
        sim,
        battery,
    })
}

fn product_data(created: &CreatedProduct) -> Json {
    let mut product = created.product.clone();
    product.insert(
        "imei".into(),
        product.get("product_imei").cloned().unwrap_or(Json::Null),
    );
    let mut data = Map::new();
    if let Some(b) = &created.battery {
        data.insert("battery".into(), part_body(b));
    }
    data.insert("pcb".into(), part_body(&created.pcb));
    data.insert("product".into(), Json::Object(product));
    if let Some(s) = &created.sim {
        let mut sim = part_body(s);
        if let Json::Object(o) = &mut sim {
            o.insert(
                "imsi".into(),
                created.product.get("imsi").cloned().unwrap_or(Json::Null),
            );
        }
        data.insert("sim".into(), sim);
    }
    Json::Object(data)
}

pub(super) async fn create_product(
    State(state): State<AppState>,
    user: AuthUser,
    Path(kind): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    user.require(Permission::Factory)?;
    let kind = ProductKind::parse(&kind).ok_or_else(|| {
        ApiError::NotFound(format!(
            "No product kind '{kind}'; expected home2, home3, hub2 or enterprise"
        ))
    })?;
    let req = ProductRequest::parse(&object(body)?, kind, None)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let created = create_product_from_pcb(
        &mut tx,
        kind,
        &req,
        &state.config.serial_prefix,
        &user.username,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(created_response(&state, kind, &created, &req.pcb_imei).await)
}

/// `create_hub2` / `create_enterprise`: a hyena PCB and the product in one
/// transaction; nothing is left behind when any step fails.
async fn pcb_and_product(
    state: AppState,
    user: AuthUser,
    body: Json,
    kind: ProductKind,
) -> Result<Response, ApiError> {
    user.require(Permission::Factory)?;
    let body = object(body)?;
    let pcb_req = PcbRequest::parse(&body, HYENA_PCB_PART_TYPE);
    let product_req = ProductRequest::parse(&body, kind, Some(""));
    // Report the problems of both halves together.
    let (pcb_req, mut product_req) = match (pcb_req, product_req) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(ApiError::Validation(mut a)), Err(ApiError::Validation(b))) => {
            a.extend(b);
            return Err(ApiError::Validation(a));
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    product_req.pcb_imei = pcb_req.imei.clone();
    let now = state.clock.now();
    let prefix = state.config.serial_prefix.clone();
    let mut tx = state.db.begin().await?;
    create_pcb(&mut tx, &pcb_req, &prefix, &user.username, now).await?;
    let created =
        create_product_from_pcb(&mut tx, kind, &product_req, &prefix, &user.username, now).await?;
    tx.commit().await?;
    Ok(created_response(&state, kind, &created, &pcb_req.imei).await)
}

/// The answer to a committed `create_<kind>`: the new product, its parts and
/// the spec's message; first the RTC directory forgets a cached "no such unit".
async fn created_response(
    state: &AppState,
    kind: ProductKind,
    created: &CreatedProduct,
    pcb_imei: &str,
) -> Response {
    new_unit_connects(state, created).await;
    let serial = created.product.text("serial_number").unwrap_or_default();
    success(
        StatusCode::OK,
        kind.message(serial, pcb_imei),
        product_data(created),
    )
}

/// RTC: a directory that cached "no such unit" for the new IMEI (a unit that tried before
/// it was built) forgets it, so the unit connects at once.
async fn new_unit_connects(state: &AppState, created: &CreatedProduct) {
    if let Some(imei) = created.product.text("product_imei") {
        crate::rtc::credentials_changed(state, imei).await;
    }
}

pub(super) async fn create_hub2(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    pcb_and_product(state, user, body, ProductKind::Hub2).await
}

pub(super) async fn create_enterprise(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    pcb_and_product(state, user, body, ProductKind::Enterprise).await
}
