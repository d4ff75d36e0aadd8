//! The MT consumers: the shared MT topic (group `rtc-gateway`: each command reaches one
//! gateway) and this node's own topic (commands forwarded by other gateways). Both hand every
//! command to the unit's shard, which delivers, parks or forwards it. The control consumer
//! (`control.rs`) runs on the same loop.

use std::sync::Arc;

use bus::Consumer;
use bytes::Bytes;
use codec::mo::ReplyResult;
use codec::{decode_bus_envelope, decode_mt};
use tokio_util::sync::CancellationToken;

use super::shard::expires_at;
use super::{Ctx, ShardMsg};
use crate::metrics as m;
use crate::mt::outcome_envelope;
use crate::proto::mt::MtCommand;

/// What a consumer reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Feed {
    /// MT commands.
    Mt,
    /// Control messages (`control::handle`).
    Control,
}

pub(crate) async fn run(
    ctx: Arc<Ctx>,
    mut consumer: Box<dyn Consumer>,
    stop: CancellationToken,
    feed: Feed,
) {
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return,
            d = consumer.recv() => d,
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, ?feed, "consumer stopped");
                return;
            }
        };
        match feed {
            Feed::Mt => handle(&ctx, &delivery.payload).await,
            Feed::Control => super::control::handle(&ctx, &delivery.payload).await,
        }
        // MT: committed once the shard has the command: from here on the gateway owns it (and
        // hands it back to the bus at shutdown). Control: once acted on.
        if let Err(e) = consumer.commit(&delivery).await {
            tracing::warn!(error = %e, ?feed, "commit failed");
        }
    }
}

async fn handle(ctx: &Ctx, payload: &[u8]) {
    let env = match decode_bus_envelope(payload) {
        Ok(env) => env,
        Err(e) => {
            metrics::counter!(m::DECODE_ERRORS, "kind" => "mt_envelope").increment(1);
            tracing::error!(error = %e, "undecodable MT envelope dropped");
            return;
        }
    };
    let decoded = decode_mt(env.message);
    let ty = decoded
        .as_ref()
        .map_or("invalid", |mt| mt.message_type().as_str());
    metrics::counter!(m::MT_MESSAGES, "type" => ty).increment(1);
    if let Err(e) = decoded {
        metrics::counter!(m::DECODE_ERRORS, "kind" => "mt").increment(1);
        metrics::counter!(m::MT_EVENTS, "event" => "invalid").increment(1);
        let out = outcome_envelope(
            env.imei,
            env.correlation_id,
            env.transport,
            ReplyResult::Invalid,
            &format!("MT message not sent: {e}"),
        );
        let _ = ctx
            .deps
            .bus
            .publish(&ctx.config.topics.mt_reply, env.imei.as_bytes(), &out)
            .await;
        return;
    }
    let imei: Arc<str> = Arc::from(env.imei);
    let command = MtCommand {
        correlation_id: env.correlation_id,
        message: Bytes::copy_from_slice(env.message),
        created_at_ms: env.received_at_ms,
        expires_at: expires_at(env.received_at_ms, ctx.config.mt.ttl_ms).into_std(),
    };
    ctx.to_shard(&imei.clone(), ShardMsg::Route { imei, command })
        .await;
}
