//! Import: the letters waiting on a dead-letter topic into `rtc_dead_letter`,
//! then their bus offsets committed.

use std::collections::HashMap;
use std::time::Duration;

use bus::{Consumer, Delivery};
use codec::{decode_dead_letter, QueueName};
use sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr};
use sha2::{Digest, Sha256};

use super::{bus_error, GROUP, ID, MAX_PER_CALL, TABLE};
use crate::app::AppState;
use crate::db::Tx;
use crate::error::ApiError;
use crate::values::now;

/// How long an import waits for the first letter (a Kafka consumer that has
/// just joined its group needs a moment to be assigned partitions).
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// How long an import waits for each further letter before it stops.
const NEXT_WAIT: Duration = Duration::from_millis(100);

/// What one import call did.
#[derive(Debug, Default)]
pub(super) struct Imported {
    /// New rows.
    pub(super) inserted: Vec<i64>,
    /// Rows of letters that came back after a replay, open again.
    pub(super) reopened: Vec<i64>,
    /// Letters that were already imported (redeliveries).
    pub(super) duplicates: usize,
    /// The call stopped at [`MAX_PER_CALL`]: more may be waiting.
    pub(super) more: bool,
}

/// Imports what waits on `queue`'s dead-letter topic, as user `by`, with
/// the consumer kept for that topic (dropped on failure, so whatever was
/// received but not committed goes back to the group).
pub(super) async fn import(
    state: &AppState,
    by: &str,
    queue: QueueName,
) -> Result<Imported, ApiError> {
    let (topic, slot) = match queue {
        QueueName::Mo => (&state.topics.mo_dead_letter, &state.dead_letters.mo),
        QueueName::MtReply => (
            &state.topics.mt_reply_dead_letter,
            &state.dead_letters.mt_reply,
        ),
    };
    let mut consumer = slot.lock().await;
    let result = import_from(state, by, queue, topic, &mut consumer).await;
    if result.is_err() {
        *consumer = None;
    }
    let done = result?;
    metrics::counter!("smartsolar_dead_letters_imported_total", "queue" => queue.as_str())
        .increment(done.inserted.len() as u64);
    Ok(done)
}

/// Drains up to [`MAX_PER_CALL`] letters, stores them in one transaction,
/// then commits their offsets.
async fn import_from(
    state: &AppState,
    by: &str,
    queue: QueueName,
    topic: &str,
    slot: &mut Option<Box<dyn Consumer>>,
) -> Result<Imported, ApiError> {
    if slot.is_none() {
        *slot = Some(
            state
                .bus
                .subscribe(&[topic], GROUP)
                .await
                .map_err(bus_error)?,
        );
    }
    let consumer = slot.as_mut().expect("subscribed above");
    let mut deliveries: Vec<Delivery> = Vec::new();
    while deliveries.len() < MAX_PER_CALL {
        let wait = if deliveries.is_empty() {
            FIRST_WAIT
        } else {
            NEXT_WAIT
        };
        // `recv` is cancel-safe: a timed-out wait loses nothing.
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(Ok(d)) => deliveries.push(d),
            Ok(Err(e)) => return Err(bus_error(e)),
        }
    }
    let mut done = Imported {
        more: deliveries.len() == MAX_PER_CALL,
        ..Imported::default()
    };
    if deliveries.is_empty() {
        return Ok(done);
    }
    let mut tx = state.db.begin().await?;
    for d in &deliveries {
        let letter = Letter::from_delivery(d, queue);
        store(&mut tx, by, &letter, &mut done).await?;
    }
    tx.commit().await?;
    // Committing the last delivery of a partition commits everything before it.
    let mut last: HashMap<(&str, u32), &Delivery> = HashMap::new();
    for d in &deliveries {
        last.insert((d.topic.as_str(), d.partition), d);
    }
    for d in last.values() {
        consumer.commit(d).await.map_err(bus_error)?;
    }
    Ok(done)
}

/// One letter as stored.
struct Letter {
    queue_name: &'static str,
    payload: String,
    reason: String,
    dedupe_key: String,
}

impl Letter {
    /// A bus message from a dead-letter topic. One that is not a dead-letter
    /// envelope is still stored (raw, with the decode error as its reason)
    /// rather than dropped: it is exactly what someone needs to look at.
    fn from_delivery(d: &Delivery, topic_queue: QueueName) -> Self {
        let (queue, payload, reason) = match decode_dead_letter(&d.payload) {
            Ok(dl) => (
                dl.queue_name,
                dl.payload.into_owned(),
                dl.reason.into_owned(),
            ),
            Err(e) => (
                topic_queue,
                String::from_utf8_lossy(&d.payload).into_owned(),
                format!("not a dead-letter envelope: {e}"),
            ),
        };
        let mut h = Sha256::new();
        h.update(queue.as_str().as_bytes());
        h.update([0u8]);
        h.update(payload.as_bytes());
        Self {
            queue_name: queue.as_str(),
            payload,
            reason,
            dedupe_key: hex::encode(h.finalize()),
        }
    }
}

/// The id of a stored letter, and its status when it is already there.
#[derive(Debug, sqlx::FromRow)]
struct StoredLetter {
    rtc_dead_letter_id: i64,
    #[sqlx(default)]
    status: Option<String>,
}

/// Inserts the letter, or counts it as a redelivery, or reopens its row
/// when it came back after a replay.
async fn store(
    tx: &mut Tx,
    by: &str,
    letter: &Letter,
    done: &mut Imported,
) -> Result<(), ApiError> {
    let now = now();
    let insert = Query::insert()
        .into_table(Alias::new(TABLE))
        .columns(
            [
                "queue_name",
                "payload",
                "reason",
                "dedupe_key",
                "created_at",
                "created_by",
            ]
            .map(Alias::new),
        )
        .values_panic([
            letter.queue_name.into(),
            letter.payload.clone().into(),
            letter.reason.clone().into(),
            letter.dedupe_key.clone().into(),
            now.into(),
            by.into(),
        ])
        .on_conflict(
            OnConflict::column(Alias::new("dedupe_key"))
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().column(Alias::new(ID)))
        .to_owned();
    if let Some(row) = tx.fetch_typed_optional::<StoredLetter>(&insert).await? {
        done.inserted.push(row.rtc_dead_letter_id);
        return Ok(());
    }
    let existing = Query::select()
        .column(Alias::new(ID))
        .column(Alias::new("status"))
        .from(Alias::new(TABLE))
        .and_where(Expr::col(Alias::new("dedupe_key")).eq(letter.dedupe_key.clone()))
        .to_owned();
    let row: StoredLetter = tx
        .fetch_typed_optional(&existing)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("dead letter vanished on conflict")))?;
    let id = row.rtc_dead_letter_id;
    if row.status.as_deref() == Some("replayed") {
        let reopen = Query::update()
            .table(Alias::new(TABLE))
            .value(
                Alias::new("status"),
                SimpleExpr::Value(sea_query::Value::String(None)),
            )
            .value(Alias::new("status_time"), now)
            .value(Alias::new("reason"), letter.reason.clone())
            .value(Alias::new("modified_at"), now)
            .value(Alias::new("modified_by"), by)
            .and_where(Expr::col(Alias::new(ID)).eq(id))
            .to_owned();
        tx.execute(&reopen).await?;
        done.reopened.push(id);
    } else {
        done.duplicates += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::decode::tests::SPEC_PAYLOAD;
    use super::*;

    #[test]
    fn the_same_letter_has_the_same_key() {
        let dl = codec::DeadLetter {
            queue_name: QueueName::Mo,
            reason: "unknown MO message type 99".into(),
            payload: SPEC_PAYLOAD.into(),
        };
        let d = |payload: Vec<u8>| Delivery {
            topic: "RTC-MO.Dead-Letter".into(),
            key: Default::default(),
            payload: payload.into(),
            partition: 0,
            offset: 0,
        };
        let a = Letter::from_delivery(&d(codec::encode_dead_letter(&dl)), QueueName::Mo);
        let other_reason = codec::DeadLetter {
            reason: "something else".into(),
            ..dl.clone()
        };
        let b = Letter::from_delivery(&d(codec::encode_dead_letter(&other_reason)), QueueName::Mo);
        assert_eq!(a.dedupe_key, b.dedupe_key);
        assert_eq!(a.payload, SPEC_PAYLOAD);
        let mt = codec::DeadLetter {
            queue_name: QueueName::MtReply,
            ..dl
        };
        let c = Letter::from_delivery(&d(codec::encode_dead_letter(&mt)), QueueName::Mo);
        assert_ne!(a.dedupe_key, c.dedupe_key);
        let raw = Letter::from_delivery(&d(b"garbage".to_vec()), QueueName::MtReply);
        assert_eq!(raw.queue_name, "RTC-MT.Reply");
        assert!(raw.reason.contains("not a dead-letter envelope"));
    }
}
