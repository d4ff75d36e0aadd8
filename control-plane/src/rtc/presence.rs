//! [`PresenceDb`]: online/offline records (`rtc_connection_history`, the product's
//! `latest_rtc_connection_history_id`).

use std::time::Duration;

use ::rtc::{PresenceSink, StatusReason};
use async_trait::async_trait;
use chrono::NaiveDateTime;
use codec::Transport;
use ingest::sink::SinkError;
use tokio::sync::{mpsc, oneshot};

use super::{api_sink_error, datetime_ms, RTC_USER};
use crate::app::AppState;
use crate::db::Tx;
use crate::error::ApiError;
use crate::rows::{eq, insert_id, update};

/// Events waiting for the writer.
const QUEUE: usize = 16_384;
/// Most events written in one transaction.
const BATCH: usize = 256;
/// How long a batch is retried while the database is unreachable before it is
/// dropped (logged and counted): presence history must not stall the gateway.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Metric: presence events that waited because the writer's queue was full.
pub const METRIC_QUEUE_FULL: &str = "smartsolar_rtc_presence_queue_full_total";
/// Metric: presence events given up (database unreachable past the retry window, or
/// a row the database refused).
pub const METRIC_DROPPED: &str = "smartsolar_rtc_presence_dropped_total";
/// Metric: presence events written.
pub const METRIC_WRITTEN: &str = "smartsolar_rtc_presence_written_total";

#[derive(Debug)]
struct Event {
    imei: String,
    online: bool,
    reason: StatusReason,
    info: Option<String>,
    at_ms: i64,
}

enum Cmd {
    Event(Event),
    Flush(oneshot::Sender<()>),
}

/// Writes a unit's online/offline transitions: one `rtc_connection_history` row each
/// (`online`/`message-received` on admission; `offline` with the gateway's reason on
/// disconnect), and points the product's `latest_rtc_connection_history_id` at it.
///
/// The gateway calls it in order per unit; the calls only queue the event (a bounded
/// queue of 16 384) for one writer task, which writes up to 256 events per
/// transaction, in order. When the queue is full the call waits (counted in
/// [`METRIC_QUEUE_FULL`] and logged): nothing is dropped on the way in. A batch the
/// database cannot take for 30 s, or a row it refuses (a product deleted meanwhile),
/// is dropped, logged and counted in [`METRIC_DROPPED`].
///
/// Construct it inside a Tokio runtime (it spawns the writer). Call
/// [`PresenceDb::flush`] after the gateway stopped to wait for the last records.
#[derive(Clone)]
pub struct PresenceDb {
    tx: mpsc::Sender<Cmd>,
}

impl PresenceDb {
    /// A sink writing through `state.db`; spawns the writer task.
    pub fn new(state: AppState) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(state, rx));
        Self { tx }
    }

    /// Waits until every event queued before this call is written (or given up).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    async fn push(&self, event: Event) {
        match self.tx.try_send(Cmd::Event(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                metrics::counter!(METRIC_QUEUE_FULL).increment(1);
                tracing::warn!(
                    queue = QUEUE,
                    "presence writer queue full; the gateway waits for the database"
                );
                if self.tx.send(cmd).await.is_err() {
                    tracing::error!("presence writer gone; event not recorded");
                    metrics::counter!(METRIC_DROPPED).increment(1);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("presence writer gone; event not recorded");
                metrics::counter!(METRIC_DROPPED).increment(1);
            }
        }
    }
}

#[async_trait]
impl PresenceSink for PresenceDb {
    async fn connected(&self, imei: &str, _transport: Transport, at_ms: i64) {
        self.push(Event {
            imei: imei.to_owned(),
            online: true,
            reason: StatusReason::MessageReceived,
            info: None,
            at_ms,
        })
        .await;
    }

    async fn disconnected(
        &self,
        imei: &str,
        reason: StatusReason,
        info: Option<String>,
        at_ms: i64,
    ) {
        self.push(Event {
            imei: imei.to_owned(),
            online: false,
            reason,
            info,
            at_ms,
        })
        .await;
    }
}

/// Writes one `rtc_connection_history` row in `tx` and makes it the product's
/// latest; returns its id. `status` is `online` or `offline`.
pub async fn record_connection_status(
    tx: &mut Tx,
    imei: &str,
    online: bool,
    reason: StatusReason,
    info: Option<&str>,
    at: NaiveDateTime,
    by: &str,
) -> Result<i64, ApiError> {
    let id = insert_id(
        tx,
        "rtc_connection_history",
        vec![
            ("product_imei", imei.into()),
            (
                "connection_status",
                if online { "online" } else { "offline" }.into(),
            ),
            ("connection_status_time", at.into()),
            ("connection_status_reason", reason.as_str().into()),
            ("connection_status_info", info.map(str::to_owned).into()),
        ],
        by,
        at,
    )
    .await?;
    let changed = update(
        tx,
        "product",
        vec![("latest_rtc_connection_history_id", id.into())],
        eq("product_imei", imei),
        by,
        at,
    )
    .await?;
    if changed == 0 {
        return Err(ApiError::NotFound(format!(
            "No product with product_imei '{imei}'"
        )));
    }
    Ok(id)
}

async fn write_batch(state: &AppState, batch: &[Event]) -> Result<(), SinkError> {
    let mut tx = state
        .db
        .begin_background()
        .await
        .map_err(super::db_sink_error)?;
    for e in batch {
        record_connection_status(
            &mut tx,
            &e.imei,
            e.online,
            e.reason,
            e.info.as_deref(),
            datetime_ms(e.at_ms),
            RTC_USER,
        )
        .await
        .map_err(api_sink_error)?;
    }
    tx.commit().await.map_err(super::db_sink_error)
}

async fn writer(state: AppState, mut rx: mpsc::Receiver<Cmd>) {
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Event(e) => batch.push(e),
                Cmd::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write_with_retry(&state, &batch).await;
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write_with_retry(state: &AppState, batch: &[Event]) {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match write_batch(state, batch).await {
            Ok(()) => {
                metrics::counter!(METRIC_WRITTEN).increment(batch.len() as u64);
                return;
            }
            Err(SinkError::Transient(e)) if started.elapsed() < RETRY_FOR => {
                tracing::warn!(error = %e, events = batch.len(), "presence records not written yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(SinkError::Transient(e)) => {
                tracing::error!(error = %e, events = batch.len(), "presence records dropped: database unreachable");
                metrics::counter!(METRIC_DROPPED).increment(batch.len() as u64);
                return;
            }
            Err(SinkError::Permanent(e)) if batch.len() > 1 => {
                // One row is refused: write them one by one so the others stand.
                tracing::warn!(error = %e, "presence batch refused; writing one by one");
                for one in batch {
                    Box::pin(write_with_retry(state, std::slice::from_ref(one))).await;
                }
                return;
            }
            Err(SinkError::Permanent(e)) => {
                tracing::error!(error = %e, imei = %batch[0].imei, "presence record refused; dropped");
                metrics::counter!(METRIC_DROPPED).increment(1);
                return;
            }
        }
    }
}
