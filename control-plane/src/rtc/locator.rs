//! Cell locators: a unit's position from the cells its cell report lists, for
//! reports without coordinates of their own (`ControlPlaneSink::cell_report`).
//!
//! - [`CsvCellLocator`]: a CSV of cells read at start, in OpenCellID's export
//!   format (`radio,mcc,net,area,cell,unit,lon,lat,range,…`; only `mcc`,
//!   `net`/`mnc`, `area`/`lac`, `cell`/`cid`, `lat`, `lon` and an optional
//!   `range` are read, by header name).
//! - [`HttpCellLocator`]: an OpenCellID-compatible lookup,
//!   `GET <url>?key=<token>&mcc=…&mnc=…&lac=…&cellid=…&format=json`, answering
//!   `{"lat": …, "lon": …, "range": …}`.
//!
//! [`locator_from_config`] builds what the configuration asks for: the CSV
//! first, then the HTTP lookup, then nothing (`NoCellLocator`). The serving
//! cell is tried first, then the neighbours in report order; the first known
//! cell gives the position.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codec::mo::CellReport;
use serde::Deserialize;
use serde_json::Value as Json;

use super::sink::{CellLocator, Location, NoCellLocator};
use crate::config::ControlPlaneConfig;

/// A cell locator that cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum LocatorError {
    /// The CSV cannot be opened.
    #[error("cell locator CSV {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    /// A CSV record is not a cell (line numbers count the header as 1).
    #[error("cell locator CSV {path}, line {line}: {message}")]
    Record {
        path: String,
        line: u64,
        message: String,
    },
    /// The lookup URL is not an http(s) URL.
    #[error("cell locator URL '{0}' must start with http:// or https://")]
    Url(String),
}

/// A cell by its network and identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CellKey {
    mcc: u32,
    mnc: u32,
    lac: u32,
    cid: u32,
}

/// The cells of a report as lookup keys, serving cell first; a cell without
/// its own MCC/MNC takes the report's, and is skipped when neither has one.
fn cell_keys(report: &CellReport<'_>) -> Vec<CellKey> {
    report
        .cells
        .iter()
        .filter_map(|cell| {
            Some(CellKey {
                mcc: cell.mcc.or(report.mcc)?,
                mnc: cell.mnc.or(report.mnc)?,
                lac: cell.lac,
                cid: cell.cid,
            })
        })
        .collect()
}

/// One CSV record; the aliases are OpenCellID's column names.
#[derive(Debug, Deserialize)]
struct CsvCell {
    mcc: u32,
    #[serde(alias = "net")]
    mnc: u32,
    #[serde(alias = "area")]
    lac: u32,
    #[serde(alias = "cell")]
    cid: u32,
    lat: f64,
    lon: f64,
    #[serde(default)]
    range: Option<f64>,
}

/// Cells from a CSV, held in memory (filter OpenCellID's world export to the
/// operator's countries: one country is a few hundred thousand cells).
#[derive(Debug, Default)]
pub struct CsvCellLocator {
    cells: HashMap<CellKey, Location>,
}

impl CsvCellLocator {
    /// Reads the CSV at `path`; any record that is not a cell with a valid
    /// position fails the whole load, naming its line.
    pub fn load(path: &str) -> Result<Self, LocatorError> {
        let file = std::fs::File::open(path).map_err(|source| LocatorError::Open {
            path: path.to_string(),
            source,
        })?;
        Self::from_reader(path, file)
    }

    /// Reads cells from CSV text (`name` is used in errors).
    pub fn from_reader(name: &str, reader: impl Read) -> Result<Self, LocatorError> {
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        let mut cells = HashMap::new();
        for record in csv.deserialize::<CsvCell>() {
            let cell = record.map_err(|e| LocatorError::Record {
                path: name.to_string(),
                line: e.position().map_or(0, csv::Position::line),
                message: e.to_string(),
            })?;
            if !super::sink::valid_position(cell.lat, cell.lon) {
                return Err(LocatorError::Record {
                    path: name.to_string(),
                    line: cells.len() as u64 + 2,
                    message: format!("({}, {}) is not a position", cell.lat, cell.lon),
                });
            }
            let key = CellKey {
                mcc: cell.mcc,
                mnc: cell.mnc,
                lac: cell.lac,
                cid: cell.cid,
            };
            cells.insert(
                key,
                Location {
                    latitude: cell.lat,
                    longitude: cell.lon,
                    error_radius: cell.range.map(|r| r.clamp(0.0, f64::from(u32::MAX)) as u32),
                    address: None,
                },
            );
        }
        Ok(Self { cells })
    }

    /// How many cells were read.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// `true` when the CSV had no cells.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

#[async_trait]
impl CellLocator for CsvCellLocator {
    async fn locate(&self, _imei: &str, report: &CellReport<'_>) -> Option<Location> {
        cell_keys(report)
            .iter()
            .find_map(|key| self.cells.get(key).cloned())
    }
}

/// An OpenCellID-compatible HTTP lookup (see the module documentation). A
/// cell the service does not know (an error status, or an answer without
/// `lat`/`lon`) moves on to the next cell; a service that cannot be reached
/// locates nothing for this report (logged), and the connection is recorded
/// with `location_failed_flag`.
#[derive(Debug, Clone)]
pub struct HttpCellLocator {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl HttpCellLocator {
    /// A lookup at `url` (`http(s)://…`), with `key=<token>` when given.
    pub fn new(url: String, token: Option<String>) -> Result<Self, LocatorError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(LocatorError::Url(url));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Ok(Self { client, url, token })
    }

    async fn lookup(&self, key: &CellKey) -> Result<Option<Location>, reqwest::Error> {
        let mut query = vec![
            ("mcc", key.mcc.to_string()),
            ("mnc", key.mnc.to_string()),
            ("lac", key.lac.to_string()),
            ("cellid", key.cid.to_string()),
            ("format", "json".to_string()),
        ];
        if let Some(token) = &self.token {
            query.push(("key", token.clone()));
        }
        let resp = self.client.get(&self.url).query(&query).send().await?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let body: Json = match resp.json().await {
            Ok(body) => body,
            Err(_) => return Ok(None),
        };
        let (Some(lat), Some(lon)) = (
            body.get("lat").and_then(Json::as_f64),
            body.get("lon").and_then(Json::as_f64),
        ) else {
            return Ok(None);
        };
        if !super::sink::valid_position(lat, lon) {
            return Ok(None);
        }
        Ok(Some(Location {
            latitude: lat,
            longitude: lon,
            error_radius: body
                .get("range")
                .and_then(Json::as_f64)
                .map(|r| r.clamp(0.0, f64::from(u32::MAX)) as u32),
            address: body
                .get("address")
                .and_then(Json::as_str)
                .map(str::to_string),
        }))
    }
}

#[async_trait]
impl CellLocator for HttpCellLocator {
    async fn locate(&self, imei: &str, report: &CellReport<'_>) -> Option<Location> {
        for key in cell_keys(report) {
            match self.lookup(&key).await {
                Ok(Some(location)) => return Some(location),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(imei, url = %self.url, error = %e, "cell lookup failed");
                    return None;
                }
            }
        }
        None
    }
}

/// Asks each locator in turn (the CSV, then the HTTP lookup).
struct Chain(Vec<Arc<dyn CellLocator>>);

#[async_trait]
impl CellLocator for Chain {
    async fn locate(&self, imei: &str, report: &CellReport<'_>) -> Option<Location> {
        for locator in &self.0 {
            if let Some(location) = locator.locate(imei, report).await {
                return Some(location);
            }
        }
        None
    }
}

/// The locator the configuration asks for (see the module documentation).
pub fn locator_from_config(
    config: &ControlPlaneConfig,
) -> Result<Arc<dyn CellLocator>, LocatorError> {
    let mut chain: Vec<Arc<dyn CellLocator>> = Vec::new();
    if let Some(path) = &config.cell_locator_csv {
        let csv = CsvCellLocator::load(path)?;
        tracing::info!(path, cells = csv.len(), "cell locator CSV loaded");
        chain.push(Arc::new(csv));
    }
    if let Some(url) = &config.cell_locator_url {
        chain.push(Arc::new(HttpCellLocator::new(
            url.clone(),
            config.cell_locator_token.clone(),
        )?));
    }
    Ok(match chain.len() {
        0 => Arc::new(NoCellLocator),
        1 => chain.remove(0),
        _ => Arc::new(Chain(chain)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENCELLID: &str = "radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal
GSM,635,14,2010,31311,0,30.0619,-1.9441,1200,5,1,1459692939,1459692939,0
UMTS,635,10,4,5001,0,29.7390,-2.6030,,3,1,1459692939,1459692939,0
";

    fn report<'a>(cells: &'a [codec::mo::Cell]) -> CellReport<'a> {
        CellReport {
            mcc: Some(635),
            mnc: Some(14),
            cells: codec::Seq::new(cells),
            ..Default::default()
        }
    }

    fn cell(lac: u32, cid: u32, mnc: Option<u32>) -> codec::mo::Cell {
        codec::mo::Cell {
            lac,
            cid,
            signal: -70,
            mcc: None,
            mnc,
        }
    }

    #[tokio::test]
    async fn the_first_known_cell_locates_the_unit() {
        let csv = CsvCellLocator::from_reader("t.csv", OPENCELLID.as_bytes()).unwrap();
        assert_eq!(csv.len(), 2);
        // Serving cell unknown, first neighbour known (its own MNC).
        let cells = [
            cell(1, 1, None),
            cell(4, 5001, Some(10)),
            cell(2010, 31311, None),
        ];
        let at = csv.locate("1", &report(&cells)).await.unwrap();
        assert_eq!(
            (at.latitude, at.longitude, at.error_radius),
            (-2.603, 29.739, None)
        );
        let cells = [cell(2010, 31311, None)];
        let at = csv.locate("1", &report(&cells)).await.unwrap();
        assert_eq!(
            (at.latitude, at.longitude, at.error_radius),
            (-1.9441, 30.0619, Some(1200))
        );
        // Same cell id on another network: unknown.
        let cells = [cell(2010, 31311, Some(10))];
        assert_eq!(csv.locate("1", &report(&cells)).await, None);
    }

    #[test]
    fn a_bad_record_names_its_line() {
        let text = "mcc,mnc,lac,cid,lat,lon\n635,14,1,1,-1.9,30.0\n635,14,1,2,north,30.0\n";
        let err = CsvCellLocator::from_reader("t.csv", text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let text = "mcc,mnc,lac,cid,lat,lon\n635,14,1,1,95.0,30.0\n";
        let err = CsvCellLocator::from_reader("t.csv", text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not a position"), "{err}");
    }
}
