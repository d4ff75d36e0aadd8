//! [`PendingMtDb`] (`rtc::PendingMt`): the record of what a unit must still get, in
//! `rtc_mt_pending`, which the gateway reads when a unit connects or polls.
//!
//! The record is the MT commands of the unit's latest push ([`super::mt::record_pending_in`]:
//! its desired state as a status update, and its pending payment commands) that the unit has
//! not answered:
//! - written in the transaction that records those MT commands, replacing the unit's previous
//!   record (the new push carries the whole desired state and every pending payment command);
//! - a row leaves when the unit answers its MT itself ([`settle`]; any result but `busy`), or,
//!   for a status update, when the gateway handed it to a legacy HTTP unit (which has no way
//!   to answer). A gateway expiry keeps it: the command goes again on the next connect.
//!
//! A resend is the recorded MT byte for byte (same correlation id, same transaction ids), so
//! the gateway's queue drops what it already holds and the unit recognises what it applied.

use std::collections::HashSet;
use std::sync::Arc;

use ::rtc::{PendingCommand, PendingMt};
use async_trait::async_trait;
use base64::Engine as _;
use codec::MtMessage;
use sea_query::{Alias, Expr, Order, Query};
use tokio::sync::Semaphore;

use super::mt::{self, Sent};
use crate::app::AppState;
use crate::db::{DbError, Tx};
use crate::dcm;
use crate::error::ApiError;

/// Reads of the record in flight at once: a connect storm (every unit after a restart) must
/// not take every database connection from the API.
const CONCURRENT_READS: usize = 16;

/// Metric: MT commands the gateway read from the record, label `outcome` (`found`: recorded
/// commands returned; `recorded`: a fresh push recorded because a pending payment command had
/// no recorded MT; `failed`: the record could not be read).
pub const METRIC_PENDING: &str = "smartsolar_rtc_pending_mt_total";

const TABLE: &str = "rtc_mt_pending";

/// The database-backed record of pending MT commands, for the gateway.
#[derive(Clone)]
pub struct PendingMtDb {
    state: AppState,
    readers: Arc<Semaphore>,
}

impl PendingMtDb {
    /// A record read through `state.db`.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            readers: Arc::new(Semaphore::new(CONCURRENT_READS)),
        }
    }
}

#[async_trait]
impl PendingMt for PendingMtDb {
    async fn pending(&self, imei: &str) -> Vec<PendingCommand> {
        // Never closed, so `acquire` cannot fail; without a permit the read still runs.
        let _permit = self.readers.acquire().await.ok();
        match pending_for(&self.state, imei).await {
            Ok((commands, fresh)) => {
                let outcome = if fresh { "recorded" } else { "found" };
                metrics::counter!(METRIC_PENDING, "outcome" => outcome)
                    .increment(commands.len() as u64);
                commands
            }
            Err(e) => {
                metrics::counter!(METRIC_PENDING, "outcome" => "failed").increment(1);
                tracing::warn!(imei, error = %e, "pending MT commands not read; read on the next connect");
                Vec::new()
            }
        }
    }
}

/// What `imei` must still get, oldest first, and whether it was recorded just now.
///
/// The recorded MT commands of the unit, minus payment-command messages whose commands are
/// all acknowledged or void by now. If a pending payment command is carried by none of them
/// (recorded before this table existed, refused by the unit, or sent while the unit was not
/// RTC enabled), a fresh push is recorded ([`mt::record_pending`]) and returned instead.
/// Nothing for an unknown unit or one whose `rtc_enabled_flag` is false (as the push).
pub async fn pending_for(
    state: &AppState,
    imei: &str,
) -> Result<(Vec<PendingCommand>, bool), ApiError> {
    let mut tx = state.db.begin_read().await?;
    let (rtc, dcm_unit) = match mt::rtc_flags(&mut tx, imei).await {
        Ok(flags) => flags,
        Err(ApiError::NotFound(_)) => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    if !rtc {
        return Ok((Vec::new(), false));
    }
    let recorded = recorded(&mut tx, imei).await?;
    let waiting: HashSet<String> = if dcm_unit {
        dcm::pending_commands(&mut tx, imei)
            .await?
            .into_iter()
            .map(|c| c.transaction_id)
            .collect()
    } else {
        HashSet::new()
    };
    drop(tx);

    let mut covered: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(recorded.len());
    for cbor in recorded {
        let correlation_id = match codec::decode_mt(&cbor) {
            Ok(MtMessage::PaymentCommands(p)) => {
                let open: Vec<String> = p
                    .commands
                    .iter()
                    .map(|c| c.transaction_id)
                    .filter(|t| waiting.contains(*t))
                    .map(str::to_owned)
                    .collect();
                if open.is_empty() {
                    continue; // every command it carries is acknowledged or void
                }
                covered.extend(open);
                p.correlation_id
            }
            Ok(other) => other.correlation_id(),
            Err(e) => {
                tracing::error!(imei, error = %e, "a recorded MT command does not decode; skipped");
                continue;
            }
        };
        out.push(PendingCommand {
            correlation_id,
            message: cbor,
        });
    }
    if waiting.iter().any(|t| !covered.contains(t)) {
        let sent = mt::record_pending(state, imei).await?;
        return Ok((sent.into_iter().map(Sent::into_pending).collect(), true));
    }
    Ok((out, false))
}

/// The CBOR of the unit's recorded MT commands, oldest first.
async fn recorded(tx: &mut Tx, imei: &str) -> Result<Vec<Vec<u8>>, DbError> {
    let h = || Alias::new("rtc_message_history");
    let p = || Alias::new(TABLE);
    let id = || Alias::new("rtc_message_history_id");
    let stmt = Query::select()
        .expr(Expr::col((h(), Alias::new("message_bin"))))
        .from(p())
        .inner_join(h(), Expr::col((h(), id())).equals((p(), id())))
        .and_where(Expr::col((p(), Alias::new("product_imei"))).eq(imei))
        .order_by((p(), id()), Order::Asc)
        .to_owned();
    let rows: Vec<(Option<String>,)> = tx.fetch_typed(&stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(bin,)| base64::engine::general_purpose::STANDARD.decode(bin?).ok())
        .collect())
}

/// Makes `sent` (just recorded in `tx`) the unit's whole record.
pub(crate) async fn replace(tx: &mut Tx, imei: &str, sent: &[Sent]) -> Result<(), DbError> {
    let stmt = Query::delete()
        .from_table(Alias::new(TABLE))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .to_owned();
    tx.execute(&stmt).await?;
    if sent.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(TABLE))
        .columns(["rtc_message_history_id", "product_imei"].map(Alias::new));
    for s in sent {
        insert.values_panic([s.rtc_message_history_id.into(), imei.into()]);
    }
    tx.execute(&insert).await.map(drop)
}

/// The MT recorded as `rtc_message_history_id` no longer has to be sent.
pub(crate) async fn settle(tx: &mut Tx, rtc_message_history_id: i64) -> Result<(), DbError> {
    let stmt = Query::delete()
        .from_table(Alias::new(TABLE))
        .and_where(Expr::col(Alias::new("rtc_message_history_id")).eq(rtc_message_history_id))
        .to_owned();
    tx.execute(&stmt).await.map(drop)
}
