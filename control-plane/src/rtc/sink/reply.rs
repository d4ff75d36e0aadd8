//! MT replies and command responses: what the unit says about an MT, written to that MT's
//! `rtc_message_history` row; a payment-commands MT the unit applied acknowledges its
//! commands.

use base64::Engine as _;
use chrono::NaiveDateTime;
use codec::mo::{CommandResponse, MtReply, ReplyResult};
use codec::{CorrelationId, MtMessage};
use ingest::sink::{MoContext, SinkError};
use sea_query::{Alias, Expr, Query, Value};

use super::balance::command_by_transaction;
use super::{commit, ControlPlaneSink, Step};
use crate::actions::unit::UNIT_USER;
use crate::db::Tx;
use crate::dcm;
use crate::rows::{eq, update};
use crate::rtc::{api_sink_error, db_sink_error, dcm_sink_error, RTC_USER};

/// Longest command output kept in `delivery_status_info`.
const MAX_OUTPUT: usize = 4000;

impl ControlPlaneSink {
    pub(super) async fn apply_mt_reply(
        &self,
        Step { mut tx, ctx, at }: Step<'_>,
        reply: &MtReply<'_>,
    ) -> Result<(), SinkError> {
        let row = answered_mt(&mut tx, ctx, reply.correlation_id).await?;
        let reported = reply.result.delivery_status();
        if let Some(status) = next_delivery_status(row.delivery_status.as_deref(), reported) {
            let values = vec![
                ("delivery_status", status.into()),
                ("delivery_status_time", at.into()),
                ("delivery_status_info", reply_info(reply).into()),
            ];
            update_mt_row(&mut tx, row.rtc_message_history_id, values, at).await?;
        }
        // Off the record of what the unit must still get: the unit answered (a busy unit
        // gets it again), or a status update was handed to a legacy HTTP unit, which cannot
        // answer. Payment commands handed over HTTP stay until a unit confirms them.
        let message = row.message();
        let decoded = message.as_deref().and_then(|m| codec::decode_mt(m).ok());
        let answered = if gateway_written(reply) {
            reply.result == ReplyResult::Ok
                && !matches!(decoded, Some(MtMessage::PaymentCommands(_)))
        } else {
            reply.result != ReplyResult::Busy
        };
        if answered {
            crate::rtc::pending::settle(&mut tx, row.rtc_message_history_id)
                .await
                .map_err(db_sink_error)?;
        }
        // The unit confirmed a payment-commands MT: its commands are acknowledged.
        let mut acknowledged = 0;
        if reply.result == ReplyResult::Ok && !gateway_written(reply) {
            if let Some(MtMessage::PaymentCommands(p)) = &decoded {
                for c in p.commands.iter() {
                    match command_by_transaction(&mut tx, ctx.imei, c.transaction_id).await? {
                        Some(command) => {
                            let done = dcm::acknowledge(
                                &mut tx,
                                &self.state.catalogue,
                                ctx.imei,
                                command.payment_command_id,
                                None,
                                UNIT_USER,
                                at,
                            )
                            .await
                            .map_err(dcm_sink_error)?;
                            // A repeated reply confirms nothing new.
                            acknowledged += u64::from(done.newly);
                        }
                        None => tracing::error!(
                            imei = ctx.imei,
                            transaction_id = c.transaction_id,
                            "acknowledged payment command not in the ledger"
                        ),
                    }
                }
            }
        }
        commit(tx).await?;
        dcm::count_events("acknowledged", acknowledged);
        Ok(())
    }

    pub(super) async fn apply_command_response(
        &self,
        mut step: Step<'_>,
        response: &CommandResponse<'_>,
    ) -> Result<(), SinkError> {
        let row = answered_mt(&mut step.tx, step.ctx, response.correlation_id).await?;
        let mut info = match response.status {
            Some(s) if s != 0 => format!("output (status {s}): {}", response.output),
            _ => format!("output: {}", response.output),
        };
        if info.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !info.is_char_boundary(cut) {
                cut -= 1;
            }
            info.truncate(cut);
        }
        let values = vec![("delivery_status_info", info.into())];
        update_mt_row(&mut step.tx, row.rtc_message_history_id, values, step.at).await?;
        step.commit().await
    }
}

/// `delivery_status_info` of a reply: its own text, else the result's name.
pub(crate) fn reply_info(reply: &MtReply<'_>) -> String {
    match reply.info {
        Some(i) if !i.is_empty() => i.to_owned(),
        _ => match reply.result {
            ReplyResult::Ok => "ok".into(),
            ReplyResult::Rejected => "rejected by the unit".into(),
            ReplyResult::Unsupported => "unsupported by the unit".into(),
            ReplyResult::Invalid => "invalid for the unit".into(),
            ReplyResult::Busy => "unit busy".into(),
            ReplyResult::Other(c) => format!("result {c}"),
        },
    }
}

/// A reply the gateway wrote itself (expiry, queue full, handed to an HTTP unit), not
/// the unit's confirmation.
pub(crate) fn gateway_written(reply: &MtReply<'_>) -> bool {
    reply.info.is_some_and(|i| i.starts_with("gateway:"))
}

/// The delivery status to store: `delivered` is final (a later gateway expiry or a
/// duplicate failure does not undo what the unit confirmed); a late confirmation
/// turns `failed` into `delivered`.
pub(crate) fn next_delivery_status(
    current: Option<&str>,
    reported: &'static str,
) -> Option<&'static str> {
    match (current, reported) {
        (Some("delivered"), _) => None,
        (_, s) => Some(s),
    }
}

/// An MT's `rtc_message_history` row, found by its correlation id.
#[derive(Debug, sqlx::FromRow)]
struct MtRow {
    rtc_message_history_id: i64,
    /// The MT's CBOR in base64.
    message_bin: Option<String>,
    delivery_status: Option<String>,
}

impl MtRow {
    /// The MT's CBOR (`None` when missing or not base64).
    fn message(&self) -> Option<Vec<u8>> {
        let text = self.message_bin.as_deref()?;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }
}

/// The row of the MT a reply or command response answers, by its correlation id.
async fn answered_mt(
    tx: &mut Tx,
    ctx: &MoContext<'_>,
    id: CorrelationId,
) -> Result<MtRow, SinkError> {
    let stmt = Query::select()
        .columns(["rtc_message_history_id", "message_bin", "delivery_status"].map(Alias::new))
        .from(Alias::new("rtc_message_history"))
        .and_where(Expr::col(Alias::new("message_reference")).eq(id.to_string()))
        .and_where(Expr::col(Alias::new("product_imei")).eq(ctx.imei))
        .order_by(Alias::new("rtc_message_history_id"), sea_query::Order::Desc)
        .limit(1)
        .to_owned();
    let row = tx
        .fetch_typed_optional(&stmt)
        .await
        .map_err(db_sink_error)?;
    row.ok_or_else(|| unmatched(ctx, id))
}

/// Writes `values` to the MT's `rtc_message_history` row `id`.
async fn update_mt_row(
    tx: &mut Tx,
    id: i64,
    values: Vec<(&str, Value)>,
    at: NaiveDateTime,
) -> Result<(), SinkError> {
    update(
        tx,
        "rtc_message_history",
        values,
        eq("rtc_message_history_id", id),
        RTC_USER,
        at,
    )
    .await
    .map_err(api_sink_error)?;
    Ok(())
}

/// A reply or command response whose MT is not in `rtc_message_history`: permanent at
/// once. `mt::send` commits the row before it enqueues the MT, so the row cannot be
/// "not there yet"; retrying would only hold every other unit of the engine shard
/// behind this one (issue 16). The dead letter can be replayed.
fn unmatched(ctx: &MoContext<'_>, id: CorrelationId) -> SinkError {
    SinkError::Permanent(format!(
        "no MT with correlation id {id} for unit {}",
        ctx.imei
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_map_to_delivery_status() {
        let ok = MtReply {
            correlation_id: CorrelationId([1; 16]),
            result: ReplyResult::Ok,
            info: None,
            balance: None,
            expected_expiry: None,
        };
        assert_eq!(reply_info(&ok), "ok");
        assert!(!gateway_written(&ok));
        let expired = MtReply {
            result: ReplyResult::Other(64),
            info: Some("gateway: expired"),
            ..ok
        };
        assert!(gateway_written(&expired));
        assert_eq!(reply_info(&expired), "gateway: expired");
        assert_eq!(next_delivery_status(None, "delivered"), Some("delivered"));
        assert_eq!(
            next_delivery_status(Some("failed"), "delivered"),
            Some("delivered")
        );
        assert_eq!(next_delivery_status(Some("delivered"), "failed"), None);
        assert_eq!(next_delivery_status(None, "failed"), Some("failed"));
    }
}
