//! Who may connect: the unit directory the control-plane implements over `product`
//! (`product_imei`, `device_key`, `rtc_enabled_flag`, `ip_address`, `rtc_network_name`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

/// A unit's identity and secret, as the gateway needs them.
#[derive(Clone, PartialEq, Eq)]
pub struct UnitCredentials {
    /// `product.product_imei` (1–15 digits).
    pub imei: String,
    /// `product.device_key`: the HMAC key of the handshake proof and the HTTP basic-auth password.
    pub device_key: String,
    /// `product.rtc_network_name` for private-APN SIMs.
    pub network: Option<String>,
    /// `product.ip_address` for private-APN SIMs.
    pub ip: Option<IpAddr>,
}

impl UnitCredentials {
    /// A unit identified by IMEI and device key only.
    pub fn new(imei: impl Into<String>, device_key: impl Into<String>) -> Self {
        Self {
            imei: imei.into(),
            device_key: device_key.into(),
            network: None,
            ip: None,
        }
    }

    /// Adds a private-APN identity (`Aeris`, `10.112.89.62`).
    pub fn with_ip(mut self, network: impl Into<String>, ip: IpAddr) -> Self {
        self.network = Some(network.into());
        self.ip = Some(ip);
        self
    }
}

/// Never prints the device key.
impl std::fmt::Debug for UnitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitCredentials")
            .field("imei", &self.imei)
            .field("network", &self.network)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// The units allowed to connect. Implemented by the control-plane over the database (with a
/// cache: every connection does one lookup), in memory for tests and the load test.
///
/// Both lookups must return `None` for units that are not RTC-enabled (`rtc_enabled_flag`),
/// except that HTTP-only units are looked up by IMEI too.
#[async_trait]
pub trait UnitDirectory: Send + Sync + 'static {
    /// The unit with this IMEI.
    async fn lookup_imei(&self, imei: &str) -> Option<UnitCredentials>;

    /// The unit whose SIM is on private network `network` (`rtc_network_name`) with address
    /// `ip` (`ip_address`).
    async fn lookup_ip(&self, network: &str, ip: IpAddr) -> Option<UnitCredentials>;

    /// Drops whatever is cached about unit `imei` (its credentials changed): the next lookup
    /// asks the source again. A directory without a cache has nothing to do.
    fn forget(&self, _imei: &str) {}
}

/// An in-memory directory.
#[derive(Debug, Default, Clone)]
pub struct MemoryDirectory {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    by_imei: HashMap<String, UnitCredentials>,
    by_ip: HashMap<(String, IpAddr), String>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a unit.
    pub fn insert(&self, unit: UnitCredentials) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let (Some(net), Some(ip)) = (&unit.network, unit.ip) {
            inner.by_ip.insert((net.clone(), ip), unit.imei.clone());
        }
        inner.by_imei.insert(unit.imei.clone(), unit);
    }

    /// Removes a unit.
    pub fn remove(&self, imei: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.by_imei.remove(imei);
        inner.by_ip.retain(|_, v| v != imei);
    }
}

#[async_trait]
impl UnitDirectory for MemoryDirectory {
    async fn lookup_imei(&self, imei: &str) -> Option<UnitCredentials> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_imei.get(imei).cloned()
    }

    async fn lookup_ip(&self, network: &str, ip: IpAddr) -> Option<UnitCredentials> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let imei = inner.by_ip.get(&(network.to_owned(), ip))?;
        inner.by_imei.get(imei).cloned()
    }
}
