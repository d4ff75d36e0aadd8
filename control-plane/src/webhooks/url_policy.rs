//! Which URLs a subscriber may register and the worker may call: `http` or
//! `https` only, and no address inside a configured deny list (private and
//! link-local ranges by default), so a subscription cannot turn the server
//! into a proxy into its own network.
//!
//! The check runs twice: on subscribe (the host is resolved and every
//! address must be allowed), and on every delivery, where the HTTP client
//! resolves names through [`PolicyResolver`] and so never connects to a
//! denied address even if DNS changed since (a literal IP host is checked
//! by [`UrlPolicy::check`] before sending). Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;

use crate::config::ControlPlaneConfig;

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("'{0}' is not a valid URL")]
    Invalid(String),
    /// A scheme other than http/https.
    #[error("only http and https URLs can be subscribed, got '{0}'")]
    Scheme(String),
    /// The host resolves to a denied address.
    #[error("the URL's host {host} resolves to {addr}, which is in a denied address range")]
    Denied { host: String, addr: IpAddr },
    /// The host cannot be resolved.
    #[error("the URL's host {0} cannot be resolved")]
    Unresolvable(String),
}

/// The deny list, parsed.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    deny: Arc<Vec<IpNet>>,
}

impl UrlPolicy {
    /// From `webhook_deny_cidrs`; an entry that is not a CIDR (or a single
    /// address) is an error naming it.
    pub fn from_config(config: &ControlPlaneConfig) -> anyhow::Result<Self> {
        let deny = config
            .webhook_deny_cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| anyhow::anyhow!("webhook_deny_cidrs: '{c}' is not a CIDR range"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            deny: Arc::new(deny),
        })
    }

    /// `true` when `addr` may be connected to.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            // An IPv4-mapped IPv6 address is the IPv4 address.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        !self.deny.iter().any(|net| net.contains(&addr))
    }

    /// Parses `url` and checks its scheme and, when the host is an IP
    /// literal, its address. Names are checked when resolved.
    pub fn check(&self, url: &str) -> Result<Url, UrlError> {
        let parsed = Url::parse(url).map_err(|_| UrlError::Invalid(url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(parsed.scheme().into()));
        }
        match parsed.host() {
            None => return Err(UrlError::Invalid(url.into())),
            Some(url::Host::Ipv4(v4)) => self.check_addr(&v4.to_string(), IpAddr::V4(v4))?,
            Some(url::Host::Ipv6(v6)) => self.check_addr(&v6.to_string(), IpAddr::V6(v6))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(parsed)
    }

    fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), UrlError> {
        if self.allows(addr) {
            Ok(())
        } else {
            Err(UrlError::Denied {
                host: host.into(),
                addr,
            })
        }
    }

    /// [`check`](Self::check), then resolves a host name and requires every
    /// address to be allowed (for subscribing).
    pub async fn check_resolved(&self, url: &str) -> Result<Url, UrlError> {
        let parsed = self.check(url)?;
        if let Some(url::Host::Domain(host)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(80);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| UrlError::Unresolvable(host.into()))?
                .collect();
            if addrs.is_empty() {
                return Err(UrlError::Unresolvable(host.into()));
            }
            for a in addrs {
                self.check_addr(host, a.ip())?;
            }
        }
        Ok(parsed)
    }

    /// The resolver the delivery client uses.
    pub fn resolver(&self) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver {
            policy: self.clone(),
        })
    }
}

/// A DNS resolver for reqwest that drops denied addresses and fails when
/// none is left.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: UrlPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if addrs.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("no allowed address for {host}").into();
                return Err(err);
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy::from_config(&ControlPlaneConfig::default()).unwrap()
    }

    #[test]
    fn schemes_and_literal_addresses() {
        let p = policy();
        assert!(
            matches!(
                p.check("http://127.0.0.1:9000/hook"),
                Err(UrlError::Denied { .. })
            ),
            "loopback denied by default"
        );
        assert!(matches!(
            p.check("https://[::1]/hook"),
            Err(UrlError::Denied { .. })
        ));
        assert!(matches!(
            p.check("http://[::ffff:127.0.0.1]/hook"),
            Err(UrlError::Denied { .. })
        ));
        assert!(p.check("https://example.com/x").is_ok());
        assert!(matches!(
            p.check("ftp://example.com/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            p.check("file:///etc/passwd"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(p.check("not a url"), Err(UrlError::Invalid(_))));
        for denied in [
            "http://10.1.2.3/",
            "http://192.168.0.10/",
            "http://172.20.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://0.0.0.0/",
        ] {
            assert!(
                matches!(p.check(denied), Err(UrlError::Denied { .. })),
                "{denied}"
            );
        }
    }

    #[test]
    fn loopback_is_allowed_only_by_configuration_and_bad_entries_are_errors() {
        let config = ControlPlaneConfig {
            webhook_deny_cidrs: crate::config::webhook_deny_cidrs_allowing_loopback(),
            ..ControlPlaneConfig::default()
        };
        let p = UrlPolicy::from_config(&config).unwrap();
        assert!(p.check("http://127.0.0.1/").is_ok());
        assert!(p.check("http://[::1]/").is_ok());
        assert!(
            p.check("http://10.0.0.1/").is_err(),
            "private ranges stay denied"
        );
        assert!(p.check("http://169.254.169.254/").is_err());
        let bad = ControlPlaneConfig {
            webhook_deny_cidrs: vec!["nonsense".into()],
            ..ControlPlaneConfig::default()
        };
        assert!(UrlPolicy::from_config(&bad)
            .unwrap_err()
            .to_string()
            .contains("nonsense"));
    }

    #[tokio::test]
    async fn names_are_resolved_on_subscribe() {
        let allow_loopback = UrlPolicy::from_config(&ControlPlaneConfig {
            webhook_deny_cidrs: crate::config::webhook_deny_cidrs_allowing_loopback(),
            ..ControlPlaneConfig::default()
        })
        .unwrap();
        assert!(allow_loopback
            .check_resolved("http://localhost:1/x")
            .await
            .is_ok());
        assert!(matches!(
            policy().check_resolved("http://localhost:1/x").await,
            Err(UrlError::Denied { .. })
        ));
    }
}
