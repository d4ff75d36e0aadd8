//! Cell reports: a `connection` row with the cells a unit sees and its position (its own,
//! or one a [`CellLocator`] resolves), and the product's latest connection.

use async_trait::async_trait;
use chrono::NaiveDateTime;
use codec::mo::CellReport;
use ingest::sink::{MoContext, SinkError};
use sea_query::Value;

use super::{commit, ControlPlaneSink, Step};
use crate::actions::unit::UNIT_USER;
use crate::rows::{eq, insert_id, update};
use crate::rtc::api_sink_error;

/// A resolved position of a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// Metres.
    pub error_radius: Option<u32>,
    /// A postal address, when the resolver knows one.
    pub address: Option<String>,
}

/// Resolves a unit's position from the cells it sees (a cell-location service).
/// Called before the database transaction, so it may be slow.
#[async_trait]
pub trait CellLocator: Send + Sync + 'static {
    /// The position for `report`, or `None` when the cells are unknown.
    async fn locate(&self, imei: &str, report: &CellReport<'_>) -> Option<Location>;
}

/// Resolves nothing: reports without coordinates of their own get
/// `location_failed_flag` set.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCellLocator;

#[async_trait]
impl CellLocator for NoCellLocator {
    async fn locate(&self, _: &str, _: &CellReport<'_>) -> Option<Location> {
        None
    }
}

impl ControlPlaneSink {
    /// The position of the unit: the report's own, else the locator's.
    pub(super) async fn locate(
        &self,
        ctx: &MoContext<'_>,
        report: &CellReport<'_>,
    ) -> Option<Location> {
        match reported_location(report) {
            Some(l) => Some(l),
            None => self
                .locator
                .locate(ctx.imei, report)
                .await
                .filter(|l| valid_position(l.latitude, l.longitude)),
        }
    }

    pub(super) async fn apply_cell_report(
        &self,
        Step { mut tx, ctx, at }: Step<'_>,
        report: &CellReport<'_>,
        location: Option<Location>,
    ) -> Result<(), SinkError> {
        crate::actions::lock_product(&mut tx, &crate::query::Visibility::Global, ctx.imei)
            .await
            .map_err(api_sink_error)?;
        let values = connection_values(
            ctx.imei,
            report,
            location.as_ref(),
            unit_time(report.time, at),
        );
        let id = insert_id(
            &mut tx,
            "connection",
            values
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
            UNIT_USER,
            at,
        )
        .await
        .map_err(api_sink_error)?;
        let mut product = vec![("latest_connection_id", id.into())];
        if location.is_some() {
            product.push(("latest_connection_location_id", id.into()));
        }
        update(
            &mut tx,
            "product",
            product,
            eq("product_imei", ctx.imei),
            UNIT_USER,
            at,
        )
        .await
        .map_err(api_sink_error)?;
        commit(tx).await
    }
}

/// A time a unit sent, when plausible (after 2001 and at most a day ahead of its
/// receipt); else the time the gateway received it.
pub(crate) fn unit_time(sent: Option<u64>, received: NaiveDateTime) -> NaiveDateTime {
    sent.and_then(|s| i64::try_from(s).ok())
        .filter(|s| *s > 978_307_200)
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.naive_utc())
        .filter(|t| *t <= received + chrono::Duration::days(1))
        .unwrap_or(received)
}

pub(crate) fn valid_position(lat: f64, lon: f64) -> bool {
    lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
}

/// The position a report carries itself (unless the unit says locating failed).
pub(crate) fn reported_location(r: &CellReport<'_>) -> Option<Location> {
    if r.location_failed == Some(true) {
        return None;
    }
    match (r.latitude, r.longitude) {
        (Some(lat), Some(lon)) if valid_position(lat, lon) => Some(Location {
            latitude: lat,
            longitude: lon,
            error_radius: r.error_radius,
            address: None,
        }),
        _ => None,
    }
}

/// `connection.latitude`/`longitude` are strings of at most 12 characters.
fn degrees(v: f64) -> String {
    format!("{v:.6}")
}

/// The `connection` row of a cell report.
pub(crate) fn connection_values(
    imei: &str,
    r: &CellReport<'_>,
    location: Option<&Location>,
    date: NaiveDateTime,
) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = vec![
        ("product_imei".into(), imei.into()),
        ("location_failed_flag".into(), location.is_none().into()),
        ("date".into(), date.into()),
        ("mcc".into(), r.mcc.map(i64::from).into()),
        ("mnc".into(), r.mnc.map(i64::from).into()),
        ("frequency".into(), r.frequency.map(i64::from).into()),
        (
            "timing_advance".into(),
            r.timing_advance.map(i64::from).into(),
        ),
        ("country_code".into(), r.country_code.map(i64::from).into()),
    ];
    for (i, cell) in r.cells.iter().take(codec::mo::MAX_CELLS).enumerate() {
        let n = i + 1;
        v.push((format!("cell_{n}_lac"), i64::from(cell.lac).into()));
        v.push((format!("cell_{n}_cid"), i64::from(cell.cid).into()));
        v.push((format!("cell_{n}_signal"), i64::from(cell.signal).into()));
        v.push((format!("cell_{n}_mcc"), cell.mcc.map(i64::from).into()));
        v.push((format!("cell_{n}_mnc"), cell.mnc.map(i64::from).into()));
    }
    if let Some(l) = location {
        v.push(("latitude".into(), degrees(l.latitude).into()));
        v.push(("longitude".into(), degrees(l.longitude).into()));
        v.push(("error_radius".into(), l.error_radius.map(i64::from).into()));
        v.push(("address".into(), l.address.clone().into()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::mo::Cell;
    use codec::Seq;

    fn t(s: &str) -> NaiveDateTime {
        crate::values::parse_datetime(s).unwrap()
    }

    #[test]
    fn unit_times_must_be_plausible() {
        let received = t("2024-05-01T10:00:00");
        assert_eq!(unit_time(None, received), received);
        assert_eq!(unit_time(Some(5), received), received); // unit clock not set
        assert_eq!(
            unit_time(Some(1_714_550_000), received),
            t("2024-05-01T07:53:20")
        );
        // Two days in the future: the unit's clock is wrong.
        assert_eq!(unit_time(Some(1_714_730_000), received), received);
    }

    #[test]
    fn a_cell_report_maps_to_a_connection_row() {
        let cells = [
            Cell {
                lac: 1,
                cid: 2,
                signal: -71,
                mcc: None,
                mnc: None,
            },
            Cell {
                lac: 3,
                cid: 4,
                signal: -90,
                mcc: Some(639),
                mnc: Some(7),
            },
        ];
        let r = CellReport {
            mcc: Some(639),
            mnc: Some(2),
            cells: Seq::new(&cells),
            latitude: Some(-1.292_066_123),
            longitude: Some(36.821_945),
            error_radius: Some(150),
            ..Default::default()
        };
        let loc = reported_location(&r).unwrap();
        let v = connection_values("013777946874001", &r, Some(&loc), t("2024-05-01T10:00:00"));
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("location_failed_flag"), Some(false.into()));
        assert_eq!(get("cell_1_signal"), Some((-71i64).into()));
        assert_eq!(get("cell_1_mcc"), Some(Option::<i64>::None.into()));
        assert_eq!(get("cell_2_mnc"), Some(Some(7i64).into()));
        assert_eq!(get("cell_3_lac"), None);
        assert_eq!(get("latitude"), Some("-1.292066".into()));
        assert_eq!(get("longitude"), Some("36.821945".into()));
        assert_eq!(get("error_radius"), Some(Some(150i64).into()));

        // No coordinates (or the unit says locating failed): the flag is set.
        let failed = CellReport {
            location_failed: Some(true),
            ..r
        };
        assert!(reported_location(&failed).is_none());
        let v = connection_values("1", &failed, None, t("2024-05-01T10:00:00"));
        assert!(v
            .iter()
            .any(|(n, v)| n == "location_failed_flag" && *v == true.into()));
        assert!(!v.iter().any(|(n, _)| n == "latitude"));
        // Impossible coordinates are no location.
        let bad = CellReport {
            latitude: Some(123.0),
            ..r
        };
        assert!(reported_location(&bad).is_none());
        assert!(degrees(-179.123_456_789).len() <= 12);
    }
}
