//! [`UnitDirectoryDb`]: the gateway's unit directory over `product`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ::rtc::{UnitCredentials, UnitDirectory};
use async_trait::async_trait;
use dashmap::DashMap;
use sea_query::{Alias, Expr, Query};

use crate::actions::{col, RowExt};
use crate::catalogue::{Column, ColumnType};
use crate::db::Row;
use crate::http::AppState;

/// How long a found unit is remembered.
const HIT_TTL: Duration = Duration::from_secs(30);
/// How long "no such unit" is remembered (short: a unit built a moment ago connects
/// soon; long enough that a flood of unknown units does not reach the database).
const MISS_TTL: Duration = Duration::from_secs(5);
/// Most cached lookups; past it the cache starts over (a flood of unknown IMEIs
/// cannot grow memory without bound).
const MAX_ENTRIES: usize = 200_000;

/// The unit directory the gateway asks on every handshake and HTTP request.
///
/// - By IMEI: any product with a `device_key` (HTTP-only units are not RTC-enabled but
///   authenticate with their key too, see `rtc::UnitDirectory`).
/// - By network and address: products with `rtc_enabled_flag`, that
///   `rtc_network_name` and `ip_address`; an address shared by two products matches
///   neither (refused, logged).
///
/// Answers are cached for 30 s (misses for 5 s); a database error refuses the unit
/// for now and is not cached. A changed `device_key` takes effect within 30 s, or at
/// once after [`UnitDirectoryDb::invalidate`].
pub struct UnitDirectoryDb {
    state: AppState,
    by_imei: DashMap<String, (Instant, Option<UnitCredentials>)>,
    by_ip: DashMap<(String, IpAddr), (Instant, Option<UnitCredentials>)>,
}

impl UnitDirectoryDb {
    /// A directory over `state.db`.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            by_imei: DashMap::new(),
            by_ip: DashMap::new(),
        }
    }

    /// Forgets what is cached about `imei` (after its key or network changed).
    pub fn invalidate(&self, imei: &str) {
        self.by_imei.remove(imei);
        self.by_ip
            .retain(|_, (_, u)| u.as_ref().is_none_or(|u| u.imei != imei));
    }

    async fn query(
        &self,
        condition: sea_query::SimpleExpr,
    ) -> Result<Vec<Row>, crate::db::DbError> {
        let stmt = Query::select()
            .columns(
                [
                    "product_imei",
                    "device_key",
                    "rtc_network_name",
                    "ip_address",
                ]
                .map(Alias::new),
            )
            .from(Alias::new("product"))
            .and_where(condition)
            .and_where(Expr::col(Alias::new("device_key")).is_not_null())
            .limit(2)
            .to_owned();
        let cols = columns();
        let refs: Vec<&Column> = cols.iter().collect();
        self.state.db.fetch_all(&stmt, &refs).await
    }
}

fn columns() -> [Column; 4] {
    [
        col("product_imei", ColumnType::String),
        col("device_key", ColumnType::String),
        col("rtc_network_name", ColumnType::String),
        col("ip_address", ColumnType::String),
    ]
}

/// The credentials of a product row (`None` without a usable key).
pub(crate) fn credentials(row: &Row) -> Option<UnitCredentials> {
    let imei = row.text("product_imei")?;
    let key = row.text("device_key").filter(|k| !k.is_empty())?;
    let mut unit = UnitCredentials::new(imei, key);
    if let (Some(net), Some(ip)) = (
        row.text("rtc_network_name"),
        row.text("ip_address")
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok()),
    ) {
        unit = unit.with_ip(net, ip);
    }
    Some(unit)
}

fn cached<K: std::hash::Hash + Eq>(
    map: &DashMap<K, (Instant, Option<UnitCredentials>)>,
    key: &K,
) -> Option<Option<UnitCredentials>> {
    let entry = map.get(key)?;
    let (at, unit) = &*entry;
    let ttl = if unit.is_some() { HIT_TTL } else { MISS_TTL };
    (at.elapsed() < ttl).then(|| unit.clone())
}

fn remember<K: std::hash::Hash + Eq>(
    map: &DashMap<K, (Instant, Option<UnitCredentials>)>,
    key: K,
    unit: Option<UnitCredentials>,
) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, (Instant::now(), unit));
}

#[async_trait]
impl UnitDirectory for UnitDirectoryDb {
    async fn lookup_imei(&self, imei: &str) -> Option<UnitCredentials> {
        if let Some(hit) = cached(&self.by_imei, &imei.to_owned()) {
            return hit;
        }
        let rows = match self
            .query(Expr::col(Alias::new("product_imei")).eq(imei))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(imei, error = %e, "unit directory: lookup failed; unit refused");
                return None;
            }
        };
        let unit = rows.first().and_then(credentials);
        remember(&self.by_imei, imei.to_owned(), unit.clone());
        unit
    }

    async fn lookup_ip(&self, network: &str, ip: IpAddr) -> Option<UnitCredentials> {
        let key = (network.to_owned(), ip);
        if let Some(hit) = cached(&self.by_ip, &key) {
            return hit;
        }
        let rows = match self
            .query(
                Expr::col(Alias::new("rtc_network_name"))
                    .eq(network)
                    .and(Expr::col(Alias::new("ip_address")).eq(ip.to_string()))
                    .and(Expr::col(Alias::new("rtc_enabled_flag")).eq(true)),
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(network, %ip, error = %e, "unit directory: lookup failed; unit refused");
                return None;
            }
        };
        let unit = match rows.as_slice() {
            [one] => credentials(one),
            [] => None,
            _ => {
                tracing::error!(network, %ip, "two products share this network address; refused");
                None
            }
        };
        remember(&self.by_ip, key, unit.clone());
        unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: serde_json::Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn credentials_need_a_key_and_keep_the_private_apn_identity() {
        let u = credentials(&row(json!({"product_imei": "013777946874001",
            "device_key": "abcdefghijklmnopqrstuvwx", "rtc_network_name": "Aeris",
            "ip_address": "10.112.89.62"})))
        .unwrap();
        assert_eq!(u.imei, "013777946874001");
        assert_eq!(u.network.as_deref(), Some("Aeris"));
        assert_eq!(u.ip, Some("10.112.89.62".parse().unwrap()));
        assert!(credentials(&row(json!({"product_imei": "1", "device_key": null}))).is_none());
        assert!(credentials(&row(json!({"product_imei": "1", "device_key": ""}))).is_none());
        // An unparseable address is no IP identity, but the IMEI identity stands.
        let u = credentials(&row(json!({"product_imei": "1", "device_key": "k",
            "rtc_network_name": "Aeris", "ip_address": "not-an-ip"})))
        .unwrap();
        assert_eq!(u.ip, None);
    }
}
