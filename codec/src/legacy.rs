//! JSON bodies of the legacy HTTP units (protocol §6): `POST /rm_data` (telemetry up),
//! `POST /rc_data` (status up) and `GET /rc_data` (settings down), plus their
//! `Authorization: Basic base64(imei:device_key)` header.
//!
//! These units connect every four hours, so the bodies favour a plain serde model over
//! zero-copy; strings still borrow from the body when they contain no escapes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::mo::{Cell, StatusReport};
use crate::{DecodeError, Number};

/// `POST /rm_data`: stored telemetry, per field a list of `[unix_time, value]`, like the spec's
/// influx write structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RmData<'a> {
    /// The unit (must match the authenticated one).
    #[serde(borrow)]
    pub imei: Cow<'a, str>,
    /// Field name → samples.
    #[serde(borrow)]
    pub fields: BTreeMap<Cow<'a, str>, Vec<(u64, Number)>>,
}

/// `POST /rc_data`: the unit's status, as an MO status report plus an optional connection
/// report. All but `imei` optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RcStatus<'a> {
    /// The unit (must match the authenticated one).
    #[serde(borrow)]
    pub imei: Cow<'a, str>,
    /// Unit clock, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    /// Current enable state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Tamper switch armed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_enabled: Option<bool>,
    /// Tamper switch tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_triggered: Option<bool>,
    /// Software version name.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<Cow<'a, str>>,
    /// Energy limit (Wh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_limit: Option<f64>,
    /// Capacity limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_limit: Option<f64>,
    /// DCM balance, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// DCM expected expiry, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_expiry: Option<u64>,
    /// Cells and location (`connection` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<LegacyConnection>,
}

impl RcStatus<'_> {
    /// The same content as an MO status report, so ingest handles both paths alike.
    pub fn status_report(&self) -> StatusReport<'_> {
        StatusReport {
            time: self.time,
            enabled: self.enabled,
            tamper_enabled: self.tamper_enabled,
            tamper_triggered: self.tamper_triggered,
            software_version: self.software_version.as_deref(),
            energy_limit: self.energy_limit,
            capacity_limit: self.capacity_limit,
            balance: self.balance,
            expected_expiry: self.expected_expiry,
        }
    }
}

/// The cell report of `POST /rc_data`, keys as in protocol §4.2 type 3.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // field names are the `connection` table's columns
pub struct LegacyConnection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnc: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<LegacyCell>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_advance: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_radius: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_failed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<u32>,
}

/// One cell of a [`LegacyConnection`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct LegacyCell {
    pub lac: u32,
    pub cid: u32,
    pub signal: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnc: Option<u32>,
}

impl From<LegacyCell> for Cell {
    fn from(c: LegacyCell) -> Self {
        Self {
            lac: c.lac,
            cid: c.cid,
            signal: c.signal,
            mcc: c.mcc,
            mnc: c.mnc,
        }
    }
}

/// `GET /rc_data` response: what the unit should change. Absent keys mean "no change".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RcSettings<'a> {
    /// Desired enable state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Desired tamper switch state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_enabled: Option<bool>,
    /// Energy limit (Wh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_limit: Option<f64>,
    /// Capacity limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_limit: Option<f64>,
    /// Parameter name → value.
    #[serde(borrow, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    /// Outstanding DCM payment commands, in order.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub payment_commands: Vec<LegacyPaymentCommand<'a>>,
    /// Software to install.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub software: Option<LegacySoftware<'a>>,
    /// Server clock, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<u64>,
}

/// A payment command of [`RcSettings`]; `category` spelled as in the `payment_command` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyPaymentCommand<'a> {
    /// `payment`, `bad-payment` or `zero-command`.
    #[serde(borrow)]
    pub category: Cow<'a, str>,
    /// Seconds of credit.
    pub value: i64,
    /// Unique per command.
    #[serde(borrow)]
    pub transaction_id: Cow<'a, str>,
}

/// Software of [`RcSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacySoftware<'a> {
    /// Version name.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// Download location.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Cow<'a, str>>,
    /// 64 hex digits.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Cow<'a, str>>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Decode a `POST /rm_data` body.
pub fn decode_rm_data(body: &[u8]) -> Result<RmData<'_>, DecodeError> {
    Ok(serde_json::from_slice(body)?)
}

/// Decode a `POST /rc_data` body.
pub fn decode_rc_status(body: &[u8]) -> Result<RcStatus<'_>, DecodeError> {
    Ok(serde_json::from_slice(body)?)
}

/// Decode a `GET /rc_data` response (the unit simulator's side).
pub fn decode_rc_settings(body: &[u8]) -> Result<RcSettings<'_>, DecodeError> {
    Ok(serde_json::from_slice(body)?)
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    match serde_json::to_vec(v) {
        Ok(v) => v,
        // These types have string keys and infallible `Serialize` impls.
        Err(e) => unreachable!("JSON encoding of a legacy body failed: {e}"),
    }
}

/// Encode a `POST /rm_data` body.
pub fn encode_rm_data(body: &RmData<'_>) -> Vec<u8> {
    to_json(body)
}

/// Encode a `POST /rc_data` body.
pub fn encode_rc_status(body: &RcStatus<'_>) -> Vec<u8> {
    to_json(body)
}

/// Encode a `GET /rc_data` response.
pub fn encode_rc_settings(body: &RcSettings<'_>) -> Vec<u8> {
    to_json(body)
}

/// Parse `Authorization: Basic base64(imei:device_key)` into `(imei, device_key)`.
pub fn parse_basic_auth(header: &str) -> Result<(String, String), DecodeError> {
    let encoded = header
        .strip_prefix("Basic ")
        .ok_or(DecodeError::InvalidAuthorization(
            "expected the Basic scheme",
        ))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded.trim())?;
    let text =
        String::from_utf8(raw).map_err(|_| DecodeError::InvalidAuthorization("not UTF-8"))?;
    let (imei, key) = text
        .split_once(':')
        .ok_or(DecodeError::InvalidAuthorization(
            "expected imei:device_key",
        ))?;
    Ok((imei.to_owned(), key.to_owned()))
}

/// Build the `Authorization` header value (the simulator's side).
pub fn basic_auth(imei: &str, device_key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{imei}:{device_key}"))
    )
}
