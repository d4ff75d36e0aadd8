//! Webhook notifications (spec: "Notifications (Web Hooks)"): channels,
//! subscriptions, signed delivery from the durable outbox.
//!
//! # Layout
//! - [`subscriptions`]: subscribe / unsubscribe, a subscriber's delivery
//!   log, re-sending a delivery.
//! - [`signing`]: `X-BBOXX-Signature` and new secret keys.
//! - [`secrets`]: subscriber keys encrypted at rest under the server key.
//! - [`url_policy`]: which URLs may be subscribed and called.
//! - [`worker`]: outbox → deliveries → signed POSTs, with retries.
//!
//! The outbox itself ([`crate::outbox`]) is written by whoever makes the
//! change, inside their transaction; nothing here runs in that path.

pub mod secrets;
pub mod signing;
pub mod subscriptions;
pub mod url_policy;
pub mod worker;

pub use worker::{spawn_worker, Worker};

/// Checks the webhook settings (deny list) at start, so a bad value fails
/// the start instead of every subscription.
pub fn check_config(config: &crate::ControlPlaneConfig) -> anyhow::Result<()> {
    url_policy::UrlPolicy::from_config(config).map(drop)
}
