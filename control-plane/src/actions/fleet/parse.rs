//! The fleet actions' pure parts: argument parsing, the connectivity
//! window and rate, the energy-limit bounds, the product flags.

use chrono::{Duration, NaiveDateTime};
use serde_json::{Map, Value as Json};

use crate::db::Row;
use crate::error::ApiError;
use crate::rows::RowExt;

/// A unit is expected to connect once every four hours (spec).
const EXPECTED_CONNECTION_SECS: i64 = 4 * 3600;

/// How far in the future `end` may be before it is refused, for clients
/// whose clock is slightly ahead (`end` is then read as now).
const CLOCK_SKEW_SECS: i64 = 60;

/// The optional timestamp argument `name` (absent, null or blank: none).
pub(super) fn parse_time_arg(
    args: &Map<String, Json>,
    name: &str,
) -> Result<Option<NaiveDateTime>, ApiError> {
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
pub(super) fn active_at(row: &Row, at: NaiveDateTime) -> bool {
    let added = row.time("date_added");
    let removed = row.time("date_removed");
    added.is_some_and(|a| a <= at) && removed.is_none_or(|r| r > at)
}

/// The `[start, end]` window of a connectivity rate from the optional
/// `start` and `end` arguments: the week up to now by default; an `end`
/// beyond the clock skew is refused, one within it is read as now.
pub(super) fn connectivity_window(
    args: &Map<String, Json>,
    now: NaiveDateTime,
) -> Result<(NaiveDateTime, NaiveDateTime), ApiError> {
    let end = parse_time_arg(args, "end")?;
    let start = parse_time_arg(args, "start")?;
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
    Ok((start, end))
}

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

/// The required `mcc` argument: a mobile country code.
pub(super) fn parse_mcc(args: &Map<String, Json>) -> Result<i64, ApiError> {
    match super::super::int_field(args, "mcc") {
        Ok(Some(m)) if (0..1000).contains(&m) => Ok(m),
        Ok(None) => Err(ApiError::BadRequest(
            "The mobile country code is required: ?mcc=<mcc>".into(),
        )),
        _ => Err(ApiError::BadRequest(
            "'mcc' must be a mobile country code (an integer from 0 to 999)".into(),
        )),
    }
}

/// The requested energy limit: a non-negative number, also as a string.
pub(super) fn parse_limit(v: Option<&Json>) -> Result<f64, ApiError> {
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

/// What an energy-limit suggestion became.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct EnergyLimit {
    pub(super) requested: f64,
    pub(super) applied: f64,
    /// The lower of the default maximum and the unit's cap.
    pub(super) max: Option<f64>,
    pub(super) min: Option<f64>,
    pub(super) cap: Option<f64>,
}

impl EnergyLimit {
    /// `requested` within the default bounds and the unit's cap.
    pub(super) fn bound(
        requested: f64,
        default_max: Option<f64>,
        min: Option<f64>,
        cap: Option<f64>,
    ) -> Self {
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
        Self {
            requested,
            applied,
            max,
            min,
            cap,
        }
    }

    pub(super) fn bounded(&self) -> bool {
        self.applied != self.requested
    }
}

/// A product flag a TECHNICAL user sets with `{"<field>": true|false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProductFlag {
    DcmEnabled,
    IsPayg,
}

impl ProductFlag {
    /// The flag the route `/products/{id}/set_is_payg` or
    /// `/products/{id}/set_dcm_enabled_flag` sets.
    pub(super) fn of_route(route: &str) -> Self {
        match route.rsplit('/').next() {
            Some("set_is_payg") => Self::IsPayg,
            _ => Self::DcmEnabled,
        }
    }

    /// The body's field.
    pub(super) fn field(self) -> &'static str {
        match self {
            Self::DcmEnabled => "enabled",
            Self::IsPayg => "is_payg",
        }
    }

    /// The `product` column.
    pub(super) fn column(self) -> &'static str {
        match self {
            Self::DcmEnabled => "dcm_enabled_flag",
            Self::IsPayg => "is_payg",
        }
    }

    /// The spec's success message.
    pub(super) fn message(self, imei: &str, value: bool) -> String {
        let value = super::super::py_bool(value);
        match self {
            Self::DcmEnabled => format!("Product {imei}. DCM Enabled Flag set to {value}"),
            Self::IsPayg => format!("is_payg for the Product {imei}, has been set to={value}"),
        }
    }
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

    #[test]
    fn each_flag_route_sets_its_flag() {
        let of = ProductFlag::of_route;
        assert_eq!(of("/v1/products/{id}/set_is_payg"), ProductFlag::IsPayg);
        assert_eq!(
            of("/products/{id}/set_dcm_enabled_flag"),
            ProductFlag::DcmEnabled
        );
    }

    #[test]
    fn the_limit_is_bounded_by_the_lower_maximum_then_the_minimum() {
        let l = EnergyLimit::bound(50.0, Some(40.0), Some(10.0), Some(30.0));
        assert_eq!((l.applied, l.max, l.bounded()), (30.0, Some(30.0), true));
        let l = EnergyLimit::bound(5.0, None, Some(10.0), None);
        assert_eq!((l.applied, l.max, l.bounded()), (10.0, None, true));
        assert!(!EnergyLimit::bound(20.0, Some(40.0), None, None).bounded());
    }
}
