//! Control messages: the control consumer (`consumer::run`, `Feed::Control`) reads every
//! message of the control topic (`RTC-Gateway.Control`, a consumer group per node, see
//! `rtc::control`) and hands it to [`handle`].
//!
//! `CredentialsChanged`: the directory forgets the unit, and its live session on this node, if
//! any, is closed unless the directory (asked afresh) still holds the key it was admitted with.
//! Asking again instead of trusting the message is what makes duplicates, late messages and a
//! new group's replay of old ones harmless.

use std::sync::atomic::Ordering;

use rtc::GatewayControl;

use super::session::CLOSE_CREDENTIALS;
use super::Ctx;
use crate::metrics as m;

pub(super) async fn handle(ctx: &Ctx, payload: &[u8]) {
    match GatewayControl::decode(payload) {
        Err(e) => {
            // A newer control-plane may send kinds this gateway does not know: skip them.
            metrics::counter!(m::CONTROL_MESSAGES, "kind" => "invalid").increment(1);
            tracing::warn!(error = %e, "control message not understood; skipped");
        }
        Ok(GatewayControl::CredentialsChanged { imei }) => {
            metrics::counter!(m::CONTROL_MESSAGES, "kind" => "credentials_changed").increment(1);
            // Forget first, then count: a handshake that read the count before this point may
            // hold the old key, and sees the count move (see `Ctx::credential_changes`).
            ctx.deps.directory.forget(&imei);
            ctx.credential_changes.fetch_add(1, Ordering::SeqCst);
            recheck(ctx, &imei).await;
        }
    }
}

/// Closes unit `imei`'s session on this node if the directory no longer holds the key the
/// session was admitted with (a changed key, no key, no unit, or a directory that cannot
/// answer: a credential change fails closed).
pub(crate) async fn recheck(ctx: &Ctx, imei: &str) {
    let Some(held) = ctx.sessions.get(imei).map(|h| h.value().clone()) else {
        return;
    };
    let current = ctx.deps.directory.lookup_imei(imei).await;
    if current.is_some_and(|c| c.device_key == held.credentials.device_key) {
        return;
    }
    tracing::info!(imei, "credentials changed: closing the unit's session");
    held.close(CLOSE_CREDENTIALS);
}
