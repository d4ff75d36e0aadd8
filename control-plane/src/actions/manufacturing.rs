//! Manufacturing: PCB parts (with their SIM), products built from a PCB,
//! and product serial numbers.
//!
//! # Serial numbers
//! `<prefix>-<number>-<check>`, e.g. `HB000501-084031-B`:
//! - `prefix`: `ControlPlaneConfig::serial_prefix` (default `HB000501`);
//! - `number`: the next `serial.serial_number`, zero-padded to six digits
//!   (more digits past 999999). The `serial` table's identity column hands
//!   every caller a different number, also under concurrency, and
//!   `product.serial_number` is UNIQUE as a second guard;
//! - `check`: one character of `0-9A-Z`, the Luhn mod 36 check character
//!   of `<prefix><number>` (letters and digits only; A=10 ... Z=35). It
//!   catches every single mistyped character and most swaps of neighbours
//!   when a serial is typed in from a label ([`is_valid_serial`]).
//!
//! The serial is drawn when the PCB is created (it is part of the PCB's
//! `properties`, as in the spec's examples) and becomes the product's
//! `serial_number` when the product is built from that PCB.
//!
//! # A new product's lifecycle
//! Inside the one transaction that creates it, a product is born in state
//! NON_EXISTANT (a `state` row 1 -> 1), disabled (an `enable_history` row
//! `init` -> `disabled`), with tamper switch off, linked to its parts and
//! to entity 1 "Unknown Entity". Once its parts are linked the factory flow
//! is complete and the same transaction moves it NON_EXISTANT -> STORED
//! (a second `state` row) and writes one `product-status` notification.
//! So a committed product is always STORED, with its birth in the history;
//! any failure rolls back the product, its parts and its serial together.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::NaiveDateTime;
use sea_query::{Alias, Query};
use serde_json::{json, Map, Value as Json};

use super::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{ColumnType, Permission};
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::rows::{col, eq, insert, select_all, RowExt};
use crate::web::{success, JsonBody};

/// Default part types (spec and migration 0003).
pub const SIM_PART_TYPE: i64 = 43;
pub const TIGER_PCB_PART_TYPE: i64 = 44;
pub const HYENA_PCB_PART_TYPE: i64 = 77;
pub const KOALA_PCB_PART_TYPE: i64 = 122;
pub const JACKAL_PCB_PART_TYPE: i64 = 158;

pub(super) fn router() -> Router<AppState> {
    let pcb_routes = PCB_ROUTES.iter().fold(Router::new(), |router, &route| {
        let handler =
            move |State(state): State<AppState>, user: AuthUser, JsonBody(body): JsonBody| {
                pcb_endpoint(state, user, body, route)
            };
        router.route(route.path, post(handler))
    });
    pcb_routes
        .route("/products/create_product/{id}", post(create_product))
        .route("/products/create_hub2", post(create_hub2))
        .route("/products/create_enterprise", post(create_enterprise))
}

// ------------------------------------------------------------ serials

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn code(c: char) -> Option<u32> {
    c.to_digit(36)
}

/// The Luhn mod 36 check character of `body` (non-alphanumerics ignored).
pub fn check_char(body: &str) -> char {
    let mut factor = 2;
    let mut sum = 0;
    for c in body.chars().rev().filter_map(code) {
        let addend = factor * c;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 36 + addend % 36;
    }
    ALPHABET[((36 - sum % 36) % 36) as usize] as char
}

/// Formats serial `number` with `prefix`.
pub fn format_serial(prefix: &str, number: i64) -> String {
    let digits = format!("{number:06}");
    let check = check_char(&format!("{prefix}{digits}"));
    format!("{prefix}-{digits}-{check}")
}

/// `true` when the last character of `serial` is the check character of
/// the rest.
pub fn is_valid_serial(serial: &str) -> bool {
    let Some((body, check)) = serial.rsplit_once('-') else {
        return false;
    };
    let mut chars = check.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => check_char(body) == c.to_ascii_uppercase(),
        _ => false,
    }
}

/// Draws the next serial number inside `tx`.
pub async fn next_serial(
    tx: &mut Tx,
    prefix: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<String, ApiError> {
    let row = insert(tx, "serial", vec![], by, now).await?;
    let n = row
        .int("serial_number")
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("serial without number")))?;
    Ok(format_serial(prefix, n))
}

// ------------------------------------------------------------ requests

/// One text field of a manufacturing request: [`TextRule::read`] enforces it
/// and [`TextRule::schema`] states it in the OpenAPI document, so the two
/// come from one declaration. The value is trimmed before it is checked.
#[derive(Debug, Clone, Copy)]
pub struct TextRule {
    pub name: &'static str,
    pub required: bool,
    /// Fewest and most characters.
    pub min: usize,
    pub max: usize,
    /// Digits only; otherwise ASCII letters, digits and `-`.
    pub digits_only: bool,
}

impl TextRule {
    const fn new(name: &'static str, required: bool, max: usize, digits_only: bool) -> Self {
        Self {
            name,
            required,
            min: 1,
            max,
            digits_only,
        }
    }

    fn read(&self, body: &Map<String, Json>, errors: &mut Map<String, Json>) -> Option<String> {
        let name = self.name;
        let value = match body.get(name) {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.trim().to_string()),
            Some(_) => {
                errors.insert(
                    name.into(),
                    json!(format!("field '{name}' must be a string")),
                );
                return None;
            }
        };
        let len = value.as_deref().map(|v| v.chars().count());
        match value {
            None if self.required => {
                errors.insert(name.into(), json!(format!("field '{name}' is required")));
                None
            }
            None => None,
            Some(_) if len.is_some_and(|n| n < self.min || n > self.max) => {
                let message = if self.min == self.max {
                    format!("field '{name}' must be {} characters long", self.max)
                } else {
                    format!(
                        "field '{name}' must be {} to {} characters long",
                        self.min, self.max
                    )
                };
                errors.insert(name.into(), json!(message));
                None
            }
            Some(v) if self.digits_only && !v.chars().all(|c| c.is_ascii_digit()) => {
                errors.insert(
                    name.into(),
                    json!(format!("field '{name}' must contain digits only")),
                );
                None
            }
            Some(v)
                if !self.digits_only
                    && !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                errors.insert(
                    name.into(),
                    json!(format!(
                        "field '{name}' may contain letters, digits and '-' only"
                    )),
                );
                None
            }
            Some(v) => Some(v),
        }
    }

    /// The field's JSON schema (the document states the untrimmed form).
    pub fn schema(&self) -> Json {
        let class = if self.digits_only {
            "0-9"
        } else {
            "A-Za-z0-9-"
        };
        json!({"type": "string", "minLength": self.min, "maxLength": self.max,
               "pattern": format!("^[{class}]{{{},{}}}$", self.min, self.max)})
    }
}

/// The text fields of a PCB request (`create_*_pcb`, `create_hub2`,
/// `create_enterprise`).
pub const PCB_TEXT_FIELDS: [TextRule; 5] = [
    // An IMEI is exactly 15 digits.
    TextRule {
        min: 15,
        ..TextRule::new("imei", true, 15, true)
    },
    TextRule::new("imsi", true, 15, true),
    TextRule::new("device_key", true, 24, false),
    TextRule::new("iccid", false, 22, false),
    TextRule::new("erp_code_override", false, 64, false),
];

/// `pcb_imei` of `create_product/<kind>`: the serial of an existing PCB.
pub const PCB_IMEI: TextRule = TextRule::new("pcb_imei", true, 15, true);

/// The longest battery serial number a product request takes.
pub const MAX_BATTERY_SERIAL: usize = 255;

/// A validated PCB request (the body of `create_*_pcb`).
#[derive(Debug, Clone)]
pub struct PcbRequest {
    pub imei: String,
    pub imsi: String,
    pub device_key: String,
    pub iccid: Option<String>,
    pub manufacturer: Option<String>,
    pub erp_code_override: Option<String>,
    pub pcb_part_type_id: i64,
    pub sim_part_type_id: i64,
}

impl PcbRequest {
    /// Validates a body; every problem is reported at once.
    pub fn parse(body: &Map<String, Json>, default_pcb_type: i64) -> Result<Self, ApiError> {
        let mut errors = Map::new();
        let [imei, imsi, device_key, iccid, erp_code_override] =
            PCB_TEXT_FIELDS.map(|rule| rule.read(body, &mut errors));
        let manufacturer = match super::str_field(body, "manufacturer") {
            Ok(m) => m,
            Err(_) => {
                errors.insert(
                    "manufacturer".into(),
                    json!("field 'manufacturer' must be a string"),
                );
                None
            }
        };
        let mut int = |name: &str, default: i64| match super::int_field(body, name) {
            Ok(v) => v.unwrap_or(default),
            Err(_) => {
                errors.insert(
                    name.into(),
                    json!(format!("field '{name}' must be an integer")),
                );
                default
            }
        };
        let pcb_part_type_id = int("pcb_part_type_id", default_pcb_type);
        let sim_part_type_id = int("sim_part_type_id", SIM_PART_TYPE);
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Self {
            imei: imei.unwrap_or_default(),
            imsi: imsi.unwrap_or_default(),
            device_key: device_key.unwrap_or_default(),
            iccid,
            manufacturer,
            erp_code_override,
            pcb_part_type_id,
            sim_part_type_id,
        })
    }
}

async fn exists(
    tx: &mut Tx,
    table: &str,
    pk: &str,
    id: sea_query::Value,
) -> Result<bool, ApiError> {
    let stmt = Query::select()
        .column(Alias::new(pk))
        .from(Alias::new(table))
        .and_where(eq(pk, id))
        .limit(1)
        .to_owned();
    let c = col(pk, crate::rows::table(table).primary_key().ty);
    Ok(tx.fetch_optional(&stmt, &[&c]).await?.is_some())
}

async fn part_by_serial(tx: &mut Tx, serial: &str) -> Result<Option<Row>, ApiError> {
    let mut stmt = select_all("part");
    stmt.and_where(eq("serial_number", serial));
    crate::rows::row(tx, "part", &stmt).await
}

async fn require_part_type(tx: &mut Tx, field: &str, id: i64) -> Result<(), ApiError> {
    if exists(tx, "part_type", "part_type_id", id.into()).await? {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("field '{field}' refers to part_type part_type_id {id}, which does not exist"),
        ))
    }
}

async fn require_new_part(tx: &mut Tx, field: &str, serial: &str) -> Result<(), ApiError> {
    if part_by_serial(tx, serial).await?.is_some() {
        Err(ApiError::field(
            field,
            format!("A part with serial_number '{serial}' already exists"),
        ))
    } else {
        Ok(())
    }
}

/// The parts a PCB request created.
#[derive(Debug, Clone)]
pub struct PcbParts {
    pub pcb: Row,
    pub sim: Row,
    pub properties: Json,
}

fn properties_of(part: &Row) -> Json {
    part.text("properties")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Json::Null)
}

/// The response shape of a part: its columns, `properties` as an object,
/// and the serial under both names the spec's examples use.
fn part_body(part: &Row) -> Json {
    let mut out = part.clone();
    if let Some(props) = part.text("properties") {
        let parsed = serde_json::from_str(props).unwrap_or(Json::String(props.to_string()));
        out.insert("properties".into(), parsed);
    }
    out.insert(
        "serial".into(),
        part.get("serial_number").cloned().unwrap_or(Json::Null),
    );
    Json::Object(out)
}

/// Creates a PCB part (serial = IMEI) and its SIM part (serial = ICCID if
/// given, else IMSI) and draws the product serial, inside `tx`.
pub async fn create_pcb(
    tx: &mut Tx,
    req: &PcbRequest,
    serial_prefix: &str,
    by: &str,
    now: NaiveDateTime,
) -> Result<PcbParts, ApiError> {
    require_part_type(tx, "pcb_part_type_id", req.pcb_part_type_id).await?;
    require_part_type(tx, "sim_part_type_id", req.sim_part_type_id).await?;
    let sim_serial = req.iccid.clone().unwrap_or_else(|| req.imsi.clone());
    let sim_field = if req.iccid.is_some() { "iccid" } else { "imsi" };
    require_new_part(tx, "imei", &req.imei).await?;
    require_new_part(tx, sim_field, &sim_serial).await?;
    if exists(tx, "product", "product_imei", req.imei.as_str().into()).await? {
        return Err(ApiError::field(
            "imei",
            format!("A product with product_imei '{}' already exists", req.imei),
        ));
    }
    let serial = next_serial(tx, serial_prefix, by, now).await?;
    let mut properties = Map::new();
    properties.insert("device_key".into(), json!(req.device_key));
    properties.insert("imei".into(), json!(req.imei));
    properties.insert("imsi".into(), json!(req.imsi));
    if let Some(iccid) = &req.iccid {
        properties.insert("iccid".into(), json!(iccid));
    }
    properties.insert("serial_number".into(), json!(serial));
    if let Some(erp) = &req.erp_code_override {
        properties.insert("erp_code_override".into(), json!(erp));
    }
    let properties = Json::Object(properties);
    let pcb = insert(
        tx,
        "part",
        vec![
            ("serial_number", req.imei.as_str().into()),
            ("part_type_id", req.pcb_part_type_id.into()),
            ("properties", properties.to_string().into()),
            ("manufacturer", req.manufacturer.clone().into()),
        ],
        by,
        now,
    )
    .await?;
    let sim = insert(
        tx,
        "part",
        vec![
            ("serial_number", sim_serial.into()),
            ("part_type_id", req.sim_part_type_id.into()),
        ],
        by,
        now,
    )
    .await?;
    Ok(PcbParts {
        pcb,
        sim,
        properties,
    })
}

fn pcb_data(parts: &PcbParts) -> Json {
    let mut sim = part_body(&parts.sim);
    if let (Json::Object(s), Some(imsi)) = (&mut sim, parts.properties.get("imsi")) {
        s.insert("imsi".into(), imsi.clone());
    }
    json!({"pcb": part_body(&parts.pcb), "sim": sim})
}

/// One `create_*_pcb` route: the router and the OpenAPI document both read
/// this table, so the status each answers with is stated once.
#[derive(Debug, Clone, Copy)]
pub struct PcbRoute {
    pub path: &'static str,
    /// The PCB's part type unless the body names one.
    pub part_type: i64,
    pub status: StatusCode,
    message: &'static str,
}

pub const PCB_ROUTES: [PcbRoute; 4] = [
    PcbRoute {
        path: "/parts/create_tiger_pcb",
        part_type: TIGER_PCB_PART_TYPE,
        status: StatusCode::OK,
        message: "new pcb part and sim successfully created",
    },
    PcbRoute {
        path: "/parts/create_hyena_pcb",
        part_type: HYENA_PCB_PART_TYPE,
        status: StatusCode::OK,
        message: "new pcb part and sim successfully created",
    },
    // The spec documents 201 for this one endpoint.
    PcbRoute {
        path: "/parts/create_koala_pcb",
        part_type: KOALA_PCB_PART_TYPE,
        status: StatusCode::CREATED,
        message: "new koala pcb successfully created.",
    },
    PcbRoute {
        path: "/parts/create_jackal_pcb",
        part_type: JACKAL_PCB_PART_TYPE,
        status: StatusCode::OK,
        message: "new jackal pcb successfully created.",
    },
];

async fn pcb_endpoint(
    state: AppState,
    user: AuthUser,
    body: Json,
    route: PcbRoute,
) -> Result<Response, ApiError> {
    user.require(Permission::Factory)?;
    let req = PcbRequest::parse(&object(body)?, route.part_type)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let parts = create_pcb(
        &mut tx,
        &req,
        &state.config.serial_prefix,
        &user.username,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(success(route.status, route.message, pcb_data(&parts)))
}

// ------------------------------------------------------------ products

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
                let part_type = super::int_field(b, "part_type_id").ok().flatten();
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
        .column(Alias::new("part_product_linker_id"))
        .from(Alias::new("part_product_linker"))
        .and_where(eq("part_id", pcb.int("part_id")))
        .and_where(sea_query::Expr::col(Alias::new("date_removed")).is_null())
        .to_owned();
    let c = col("part_product_linker_id", ColumnType::Int);
    if tx.fetch_optional(&linked, &[&c]).await?.is_some() {
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
    let bp20 = product_type_name(tx, product_type)
        .await?
        .is_some_and(|n| n.to_ascii_uppercase().contains("BP20"));
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
    super::state::record_state(
        tx,
        imei,
        super::state::NON_EXISTANT,
        super::state::NON_EXISTANT,
        by,
        now,
    )
    .await?;
    let history = insert(
        tx,
        "enable_history",
        vec![
            ("product_imei", imei.into()),
            ("prev_enable_state", "init".into()),
            ("current_enable_state", "disabled".into()),
            ("user", by.into()),
            ("date", now.into()),
        ],
        by,
        now,
    )
    .await?;
    crate::rows::update(
        tx,
        "product",
        vec![(
            "latest_enable_history_id",
            history.int("enable_history_id").into(),
        )],
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
    super::entity::link_entity(tx, imei, super::entity::UNKNOWN_ENTITY, by, now).await?;
    if let Some(watts) = req.solar_panel_wattage {
        let pt = super::parameter_type_id(tx, "solar_panel_wattage", "float", by, now).await?;
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
    let product = super::lock_product(tx, &crate::query::Visibility::Global, imei).await?;
    super::state::transition(tx, &product, super::state::STORED, by, now).await?;
    let product = super::visible_product(tx, &crate::query::Visibility::Global, imei).await?;
    Ok(CreatedProduct {
        product,
        pcb,
        sim,
        battery,
    })
}

async fn product_type_name(tx: &mut Tx, id: i64) -> Result<Option<String>, ApiError> {
    let stmt = Query::select()
        .column(Alias::new("name"))
        .from(Alias::new("product_type"))
        .and_where(eq("product_type_id", id))
        .to_owned();
    let c = col("name", ColumnType::String);
    Ok(tx
        .fetch_optional(&stmt, &[&c])
        .await?
        .and_then(|r| r.text("name").map(str::to_string)))
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

async fn create_product(
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

async fn create_hub2(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    pcb_and_product(state, user, body, ProductKind::Hub2).await
}

async fn create_enterprise(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    pcb_and_product(state, user, body, ProductKind::Enterprise).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_have_the_spec_shape_and_a_working_check_character() {
        let s = format_serial("HB000501", 84031);
        assert!(s.starts_with("HB000501-084031-"), "{s}");
        assert_eq!(s.len(), "HB000501-084031-B".len());
        assert!(is_valid_serial(&s));
        // Every single-character change is caught.
        let bytes: Vec<char> = s.chars().collect();
        for i in 0..bytes.len() {
            if bytes[i] == '-' {
                continue;
            }
            for c in ALPHABET.iter().map(|b| *b as char) {
                if c == bytes[i] {
                    continue;
                }
                let mut changed = bytes.clone();
                changed[i] = c;
                let changed: String = changed.into_iter().collect();
                assert!(!is_valid_serial(&changed), "{changed} passes");
            }
        }
        assert_eq!(
            format_serial("HB000501", 1234567).split('-').nth(1),
            Some("1234567")
        );
        assert!(!is_valid_serial("nonsense"));
    }
}
