//! [`UnitDirectoryDb`]: the gateway's unit directory over `product`; its cache
//! ([`DirectoryCache`]); and [`credentials_changed`], what every write that changes a unit's
//! credentials calls after its commit.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::rtc::{GatewayControl, UnitCredentials, UnitDirectory};
use async_trait::async_trait;
use dashmap::DashMap;
use sea_query::{Alias, Expr, Query};

use crate::app::AppState;

/// How long a found unit is remembered.
const HIT_TTL: Duration = Duration::from_secs(30);
/// How long "no such unit" is remembered (short: a unit built a moment ago connects
/// soon; long enough that a flood of unknown units does not reach the database).
const MISS_TTL: Duration = Duration::from_secs(5);
/// Most cached lookups; past it the cache starts over (a flood of unknown IMEIs
/// cannot grow memory without bound).
const MAX_ENTRIES: usize = 200_000;

/// The `product` columns a unit is identified by: a write that changes one of them is a
/// credential change ([`credentials_changed`]).
pub const IDENTITY_COLUMNS: [&str; 4] = [
    "device_key",
    "ip_address",
    "rtc_network_name",
    "rtc_enabled_flag",
];

/// Counter: credential changes told to the gateways, label `result` (`published`, `failed`).
pub const METRIC_CREDENTIAL_NOTICES: &str = "smartsolar_rtc_credential_notices_total";

type Cached = (Instant, Option<UnitCredentials>);

/// What the unit directory remembers. One per [`AppState`] (`AppState::directory_cache`), so
/// the API's writes in the same process drop entries at once ([`credentials_changed`]), and
/// gateways in other processes drop theirs on the control message (`rtc::control`).
#[derive(Default)]
pub struct DirectoryCache {
    by_imei: DashMap<String, Cached>,
    by_ip: DashMap<(String, IpAddr), Cached>,
    /// Moved by every [`Self::forget`]. A lookup notes it before asking the database and
    /// caches its answer only if it has not moved: an answer read before a change was
    /// committed must not be cached after the change dropped the entry.
    generation: AtomicU64,
}

impl DirectoryCache {
    /// Forgets what is cached about `imei` (its key or network changed, or it was deleted).
    pub fn forget(&self, imei: &str) {
        // Move the generation first: a lookup that checks it after this point caches
        // nothing, and one that checked it before holds the entry's lock until it has
        // inserted, so the removals below come after its insert.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.by_imei.remove(imei);
        self.by_ip
            .retain(|_, (_, u)| u.as_ref().is_none_or(|u| u.imei != imei));
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn remember<K: std::hash::Hash + Eq>(
        &self,
        map: &DashMap<K, Cached>,
        since: u64,
        key: K,
        unit: Option<UnitCredentials>,
    ) {
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        // The entry holds its shard's lock until the insert, so a `forget` cannot remove
        // between the generation check and the insert.
        let entry = map.entry(key);
        if self.generation() == since {
            entry.insert((Instant::now(), unit));
        }
    }
}

/// The unit directory the gateway asks on every handshake and HTTP request.
///
/// - By IMEI: any product with a `device_key` (HTTP-only units are not RTC-enabled but
///   authenticate with their key too, see `rtc::UnitDirectory`).
/// - By network and address: products with `rtc_enabled_flag`, that
///   `rtc_network_name` and `ip_address`; an address shared by two products matches
///   neither (refused, logged).
///
/// Answers are cached for 30 s (misses for 5 s) in `state.directory_cache`; a database
/// error refuses the unit for now and is not cached. A `device_key` changed through the
/// API is forgotten at once ([`credentials_changed`]); one changed in the database by
/// anything else takes effect when the entry expires, within 30 s.
pub struct UnitDirectoryDb {
    state: AppState,
}

impl UnitDirectoryDb {
    /// A directory over `state.db`, caching in `state.directory_cache`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Forgets what is cached about `imei` (after its key or network changed).
    pub fn invalidate(&self, imei: &str) {
        self.state.directory_cache.forget(imei);
    }

    async fn query(
        &self,
        condition: sea_query::SimpleExpr,
    ) -> Result<Vec<UnitIdentityRow>, crate::db::DbError> {
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
        self.state.db.fetch_typed(&stmt).await
    }
}

/// The `product` columns a unit's credentials are made of.
#[derive(sqlx::FromRow)]
pub(crate) struct UnitIdentityRow {
    product_imei: Option<String>,
    device_key: Option<String>,
    rtc_network_name: Option<String>,
    ip_address: Option<String>,
}

/// The credentials of a product row (`None` without a usable key).
pub(crate) fn credentials(row: &UnitIdentityRow) -> Option<UnitCredentials> {
    let imei = row.product_imei.as_deref()?;
    let key = row.device_key.as_deref().filter(|k| !k.is_empty())?;
    let mut unit = UnitCredentials::new(imei, key);
    if let (Some(net), Some(ip)) = (
        row.rtc_network_name.as_deref(),
        row.ip_address
            .as_deref()
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok()),
    ) {
        unit = unit.with_ip(net, ip);
    }
    Some(unit)
}

fn cached<K: std::hash::Hash + Eq>(
    map: &DashMap<K, Cached>,
    key: &K,
) -> Option<Option<UnitCredentials>> {
    let entry = map.get(key)?;
    let (at, unit) = &*entry;
    let ttl = if unit.is_some() { HIT_TTL } else { MISS_TTL };
    (at.elapsed() < ttl).then(|| unit.clone())
}

/// Call after committing a change to unit `imei`'s credentials ([`IDENTITY_COLUMNS`]) or
/// deleting it: this process's directory cache forgets the unit at once, and every gateway is
/// told on the control topic (`rtc::GatewayControl::CredentialsChanged`), which forgets it too
/// and closes the unit's live session if it was admitted with another key.
///
/// Never fails the caller: the change is committed. A bus that does not take the message
/// within [`super::mt::ENQUEUE_TIMEOUT`] is logged and counted; gateways in other processes
/// then drop the old key when their cache entry expires (≤ 30 s) and a live session stays
/// open until it ends (`docs/security.md`).
pub async fn credentials_changed(state: &AppState, imei: &str) {
    state.directory_cache.forget(imei);
    let notice = GatewayControl::CredentialsChanged {
        imei: imei.to_owned(),
    };
    let publish = notice.publish(state.bus.as_ref(), &state.topics);
    let result = match tokio::time::timeout(super::mt::ENQUEUE_TIMEOUT, publish).await {
        Ok(Ok(())) => "published",
        Ok(Err(e)) => {
            tracing::error!(imei, error = %e, "credential change not told to the gateways");
            "failed"
        }
        Err(_) => {
            tracing::error!(
                imei,
                "credential change not told to the gateways: the bus did not take it in time"
            );
            "failed"
        }
    };
    metrics::counter!(METRIC_CREDENTIAL_NOTICES, "result" => result).increment(1);
}

#[async_trait]
impl UnitDirectory for UnitDirectoryDb {
    async fn lookup_imei(&self, imei: &str) -> Option<UnitCredentials> {
        let cache = &self.state.directory_cache;
        if let Some(hit) = cached(&cache.by_imei, &imei.to_owned()) {
            return hit;
        }
        let since = cache.generation();
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
        cache.remember(&cache.by_imei, since, imei.to_owned(), unit.clone());
        unit
    }

    async fn lookup_ip(&self, network: &str, ip: IpAddr) -> Option<UnitCredentials> {
        let cache = &self.state.directory_cache;
        let key = (network.to_owned(), ip);
        if let Some(hit) = cached(&cache.by_ip, &key) {
            return hit;
        }
        let since = cache.generation();
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
        cache.remember(&cache.by_ip, since, key, unit.clone());
        unit
    }

    fn forget(&self, imei: &str) {
        self.invalidate(imei);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(imei: &str, key: Option<&str>, net: Option<&str>, ip: Option<&str>) -> UnitIdentityRow {
        UnitIdentityRow {
            product_imei: Some(imei.to_owned()),
            device_key: key.map(str::to_owned),
            rtc_network_name: net.map(str::to_owned),
            ip_address: ip.map(str::to_owned),
        }
    }

    #[test]
    fn an_answer_read_before_a_forget_is_not_cached() {
        let cache = DirectoryCache::default();
        let unit = || Some(UnitCredentials::new("1", "old-key"));
        let since = cache.generation();
        cache.remember(&cache.by_imei, since, "1".to_owned(), unit());
        assert!(cached(&cache.by_imei, &"1".to_owned()).is_some());
        cache.forget("1");
        assert!(cached(&cache.by_imei, &"1".to_owned()).is_none());
        // A lookup that asked the database before the change committed answers late.
        cache.remember(&cache.by_imei, since, "1".to_owned(), unit());
        assert!(cached(&cache.by_imei, &"1".to_owned()).is_none());
        // One that started after the forget is cached again.
        cache.remember(&cache.by_imei, cache.generation(), "1".to_owned(), unit());
        assert!(cached(&cache.by_imei, &"1".to_owned()).is_some());
    }

    #[test]
    fn credentials_need_a_key_and_keep_the_private_apn_identity() {
        let u = credentials(&row(
            "013777946874001",
            Some("abcdefghijklmnopqrstuvwx"),
            Some("Aeris"),
            Some("10.112.89.62"),
        ))
        .unwrap();
        assert_eq!(u.imei, "013777946874001");
        assert_eq!(u.network.as_deref(), Some("Aeris"));
        assert_eq!(u.ip, Some("10.112.89.62".parse().unwrap()));
        assert!(credentials(&row("1", None, None, None)).is_none());
        assert!(credentials(&row("1", Some(""), None, None)).is_none());
        // An unparseable address is no IP identity, but the IMEI identity stands.
        let u = credentials(&row("1", Some("k"), Some("Aeris"), Some("not-an-ip"))).unwrap();
        assert_eq!(u.ip, None);
    }
}
