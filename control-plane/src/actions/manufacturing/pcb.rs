//! PCB parts: the `create_*_pcb` requests, and the PCB and SIM parts (with
//! the product serial) they create.

use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDateTime;
use sea_query::{Alias, Query};
use serde_json::{json, Map, Value as Json};

use super::serial::next_serial;
use super::TIGER_PCB_PART_TYPE;
use super::{HYENA_PCB_PART_TYPE, JACKAL_PCB_PART_TYPE, KOALA_PCB_PART_TYPE, SIM_PART_TYPE};
use crate::actions::object;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::Permission;
use crate::db::{Row, Tx};
use crate::error::ApiError;
use crate::rows::{eq, insert, select_all, RowExt};
use crate::web::success;

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

    pub(super) fn read(
        &self,
        body: &Map<String, Json>,
        errors: &mut Map<String, Json>,
    ) -> Option<String> {
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
        let manufacturer = match crate::actions::str_field(body, "manufacturer") {
            Ok(m) => m,
            Err(_) => {
                errors.insert(
                    "manufacturer".into(),
                    json!("field 'manufacturer' must be a string"),
                );
                None
            }
        };
        let mut int = |name: &str, default: i64| match crate::actions::int_field(body, name) {
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

pub(super) async fn exists(
    tx: &mut Tx,
    table: &str,
    pk: &str,
    id: sea_query::Value,
) -> Result<bool, ApiError> {
    let stmt = Query::select()
        .expr(sea_query::Expr::col(Alias::new(pk)).count())
        .from(Alias::new(table))
        .and_where(eq(pk, id))
        .to_owned();
    Ok(tx.fetch_i64(&stmt).await? > 0)
}

pub(super) async fn part_by_serial(tx: &mut Tx, serial: &str) -> Result<Option<Row>, ApiError> {
    let mut stmt = select_all("part");
    stmt.and_where(eq("serial_number", serial));
    crate::rows::row(tx, "part", &stmt).await
}

pub(super) async fn require_part_type(tx: &mut Tx, field: &str, id: i64) -> Result<(), ApiError> {
    if exists(tx, "part_type", "part_type_id", id.into()).await? {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("field '{field}' refers to part_type part_type_id {id}, which does not exist"),
        ))
    }
}

pub(super) async fn require_new_part(
    tx: &mut Tx,
    field: &str,
    serial: &str,
) -> Result<(), ApiError> {
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

pub(super) fn properties_of(part: &Row) -> Json {
    part.text("properties")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Json::Null)
}

/// The response shape of a part: its columns, `properties` as an object,
/// and the serial under both names the spec's examples use.
pub(super) fn part_body(part: &Row) -> Json {
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

pub(super) async fn pcb_endpoint(
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
