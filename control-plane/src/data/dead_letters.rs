//! RTC dead letters (spec: "RTC Dead Letter Actions"): messages ingest could
//! not process, parked on the dead-letter topics of the bus.
//!
//! - `POST /rtc_import_mo_dead_letters`, `POST /rtc_import_mt_reply_dead_letters`
//!   (TECHNICAL): consume what is waiting on the dead-letter topic as
//!   consumer group [`GROUP`], insert each letter into `rtc_dead_letter`,
//!   then commit the bus offsets. At most [`MAX_PER_CALL`] letters per call;
//!   the call returns once the topic has been idle for a moment.
//!   Idempotent: a letter already imported (same queue and payload, by
//!   `dedupe_key`) is not inserted again, so a redelivery after a crash
//!   between insert and commit changes nothing. A letter that comes back
//!   after a replay (the replayed message failed again) reopens its row.
//! - `PUT /rtc_dead_letters/<id>/replay` (TECHNICAL): re-publish the message
//!   onto its original topic (MO or MT reply), keyed by the unit's IMEI.
//! - `PUT /rtc_dead_letters/<id>/discard` (TECHNICAL).
//! - `GET /rtc_dead_letters/<id>/decode` (OVERVIEW): the CBOR message in
//!   readable form, e.g. `Decoded message: [4, [[1517927343, "Connected"]]]`.
//!
//! Import, replay and discard also need GLOBAL visibility: a dead letter
//! can belong to any entity's unit (or to none that is known).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use bus::{BusError, Consumer, Delivery};
use codec::envelope::{decode_mo_queue_envelope, IdentType, MoQueueEnvelope};
use codec::{
    decode_dead_letter, encode_bus_envelope, render_cbor, BusEnvelope, Ident, QueueName, Transport,
};
use sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::catalogue::{Column, ColumnType, Permission};
use crate::db::Row;
use crate::error::ApiError;
use crate::query::{self, Visibility};
use crate::values::now;
use crate::web::route_table;
use crate::web::success;

/// The consumer group the control-plane reads dead-letter topics as.
pub const GROUP: &str = "control-plane-dead-letters";
/// Most letters one import call takes off the topic.
pub const MAX_PER_CALL: usize = 1000;
/// How long an import waits for the first letter (a Kafka consumer that has
/// just joined its group needs a moment to be assigned partitions).
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// How long an import waits for each further letter before it stops.
const NEXT_WAIT: Duration = Duration::from_millis(100);
/// How long a replay waits for the bus to accept the message.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

const TABLE: &str = "rtc_dead_letter";
const ID: &str = "rtc_dead_letter_id";

/// The dead-letter consumers, kept between import calls so each call does
/// not rejoin the group (a Kafka rebalance). A consumer is dropped after a
/// failed import, which hands its uncommitted letters back to the group.
#[derive(Default)]
pub struct Importers {
    mo: Mutex<Option<Box<dyn Consumer>>>,
    mt_reply: Mutex<Option<Box<dyn Consumer>>>,
    /// Replays run one at a time, so two requests cannot both publish a
    /// letter before either marks it replayed.
    replay: Mutex<()>,
}

pub(super) fn router() -> Router<AppState> {
    route_table([
        ("/rtc_import_mo_dead_letters", post(import_mo)),
        ("/rtc_import_mt_reply_dead_letters", post(import_mt_reply)),
        ("/rtc_dead_letters/{id}/replay", put(replay)),
        ("/rtc_dead_letters/{id}/discard", put(discard)),
        ("/rtc_dead_letters/{id}/decode", get(decode)),
    ])
}

fn require_global(user: &AuthUser) -> Result<(), ApiError> {
    match user.visibility {
        Visibility::Global => Ok(()),
        Visibility::Entity(_) => Err(ApiError::Forbidden(
            "Dead-letter actions need GLOBAL product visibility: a dead letter may belong to any entity's unit".into(),
        )),
    }
}

fn bus_error(err: BusError) -> ApiError {
    tracing::warn!(error = %err, "bus unavailable for a dead-letter action");
    ApiError::Unavailable(format!("The message bus is unavailable: {err}"))
}

// ---------------------------------------------------------------- import

async fn import_mo(State(state): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    import(state, user, QueueName::Mo).await
}

async fn import_mt_reply(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Response, ApiError> {
    import(state, user, QueueName::MtReply).await
}

/// What one import call did.
#[derive(Debug, Default)]
struct Imported {
    /// New rows.
    inserted: Vec<i64>,
    /// Rows of letters that came back after a replay, open again.
    reopened: Vec<i64>,
    /// Letters that were already imported (redeliveries).
    duplicates: usize,
}

async fn import(state: AppState, user: AuthUser, queue: QueueName) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    require_global(&user)?;
    let (topic, slot, message) = match queue {
        QueueName::Mo => (
            state.topics.mo_dead_letter.clone(),
            &state.dead_letters.mo,
            "MO dead letters imported",
        ),
        QueueName::MtReply => (
            state.topics.mt_reply_dead_letter.clone(),
            &state.dead_letters.mt_reply,
            "MT Reply dead letters imported",
        ),
    };
    let mut consumer = slot.lock().await;
    let result = import_from(&state, &user, queue, &topic, &mut consumer).await;
    if result.is_err() {
        // Whatever was received but not committed goes back to the group.
        *consumer = None;
    }
    let (done, more) = result?;
    metrics::counter!("smartsolar_dead_letters_imported_total", "queue" => queue.as_str())
        .increment(done.inserted.len() as u64);
    Ok(success(
        StatusCode::OK,
        message,
        json!({
            "imported": done.inserted.len(),
            "reopened": done.reopened.len(),
            "already_imported": done.duplicates,
            "rtc_dead_letter_ids": done.inserted.iter().chain(&done.reopened).collect::<Vec<_>>(),
            "more_waiting": more,
        }),
    ))
}

/// Drains up to [`MAX_PER_CALL`] letters, stores them in one transaction,
/// then commits their offsets. Returns what was stored and whether the call
/// stopped at the bound (more may be waiting).
async fn import_from(
    state: &AppState,
    user: &AuthUser,
    queue: QueueName,
    topic: &str,
    slot: &mut Option<Box<dyn Consumer>>,
) -> Result<(Imported, bool), ApiError> {
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
    let more = deliveries.len() == MAX_PER_CALL;
    let mut done = Imported::default();
    if deliveries.is_empty() {
        return Ok((done, more));
    }
    let mut tx = state.db.begin().await?;
    for d in &deliveries {
        let letter = Letter::from_delivery(d, queue);
        store(&mut tx, user, &letter, &mut done).await?;
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
    Ok((done, more))
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

fn int_col(name: &str) -> Column {
    Column::computed(name, ColumnType::Int)
}

fn text_col(name: &str) -> Column {
    Column::computed(name, ColumnType::Text)
}

async fn store(
    tx: &mut crate::db::Tx,
    user: &AuthUser,
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
            user.username.clone().into(),
        ])
        .on_conflict(
            OnConflict::column(Alias::new("dedupe_key"))
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().column(Alias::new(ID)))
        .to_owned();
    let id_col = int_col(ID);
    if let Some(row) = tx.fetch_optional(&insert, &[&id_col]).await? {
        done.inserted.push(row[ID].as_i64().unwrap_or_default());
        return Ok(());
    }
    let existing = Query::select()
        .column(Alias::new(ID))
        .column(Alias::new("status"))
        .from(Alias::new(TABLE))
        .and_where(Expr::col(Alias::new("dedupe_key")).eq(letter.dedupe_key.clone()))
        .to_owned();
    let status_col = text_col("status");
    let row = tx
        .fetch_optional(&existing, &[&id_col, &status_col])
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("dead letter vanished on conflict")))?;
    let id = row[ID].as_i64().unwrap_or_default();
    if row["status"].as_str() == Some("replayed") {
        let reopen = Query::update()
            .table(Alias::new(TABLE))
            .value(
                Alias::new("status"),
                SimpleExpr::Value(sea_query::Value::String(None)),
            )
            .value(Alias::new("status_time"), now)
            .value(Alias::new("reason"), letter.reason.clone())
            .value(Alias::new("modified_at"), now)
            .value(Alias::new("modified_by"), user.username.clone())
            .and_where(Expr::col(Alias::new(ID)).eq(id))
            .to_owned();
        tx.execute(&reopen).await?;
        done.reopened.push(id);
    } else {
        done.duplicates += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------- one letter

/// The row's fields this module needs.
struct Stored {
    id: i64,
    queue_name: String,
    payload: String,
    status: Option<String>,
    replay_status: Option<String>,
    reason: Option<String>,
}

/// The letter `id`, if the user may see it (404 otherwise, as the generic GET).
async fn load(state: &AppState, user: &AuthUser, id: &str) -> Result<Stored, ApiError> {
    let missing = || ApiError::NotFound(format!("No {TABLE} with {ID} '{id}'"));
    let key: i64 = id.parse().map_err(|_| missing())?;
    let table = state
        .catalogue
        .table(TABLE)
        .expect("the catalogue has rtc_dead_letter");
    let names = [
        ID,
        "queue_name",
        "payload",
        "status",
        "replay_status",
        "reason",
    ];
    let mut stmt = Query::select();
    for n in names {
        stmt.column((Alias::new(TABLE), Alias::new(n)));
    }
    stmt.from(Alias::new(TABLE))
        .and_where(Expr::col((Alias::new(TABLE), Alias::new(ID))).eq(key));
    if let Some(scope) = query::scope_condition(&state.catalogue, table, &user.visibility) {
        stmt.and_where(scope);
    }
    let id_col = int_col(ID);
    let texts: Vec<Column> = names[1..].iter().map(|n| text_col(n)).collect();
    let mut columns = vec![&id_col];
    columns.extend(texts.iter());
    let row: Row = state
        .db
        .fetch_optional(&stmt, &columns)
        .await?
        .ok_or_else(missing)?;
    let text = |k: &str| row.get(k).and_then(Json::as_str).map(str::to_owned);
    Ok(Stored {
        id: key,
        queue_name: text("queue_name").unwrap_or_default(),
        payload: text("payload").unwrap_or_default(),
        status: text("status"),
        replay_status: text("replay_status"),
        reason: text("reason"),
    })
}

/// Sets columns of one letter, with the modification meta data.
async fn update(
    state: &AppState,
    user: &AuthUser,
    id: i64,
    values: Vec<(&str, sea_query::Value)>,
) -> Result<(), ApiError> {
    let mut stmt = Query::update();
    stmt.table(Alias::new(TABLE));
    for (k, v) in values {
        stmt.value(Alias::new(k), SimpleExpr::Value(v));
    }
    stmt.value(Alias::new("modified_at"), now())
        .value(Alias::new("modified_by"), user.username.clone())
        .and_where(Expr::col(Alias::new(ID)).eq(id));
    let mut tx = state.db.begin().await?;
    tx.execute(&stmt).await?;
    tx.commit().await?;
    Ok(())
}

fn text(s: impl Into<String>) -> sea_query::Value {
    sea_query::Value::String(Some(Box::new(s.into())))
}

async fn replay(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    require_global(&user)?;
    let _one_at_a_time = state.dead_letters.replay.lock().await;
    let letter = load(&state, &user, &id).await?;
    match (letter.status.as_deref(), letter.replay_status.as_deref()) {
        (Some("discarded"), _) => {
            return Err(ApiError::Conflict(format!(
                "Dead letter {} was discarded; it is not replayed",
                letter.id
            )))
        }
        (Some("replayed"), Some("success")) => {
            return Err(ApiError::Conflict(format!(
                "Dead letter {} was already replayed",
                letter.id
            )))
        }
        _ => {}
    }
    let outcome = match prepare(&state, &letter).await? {
        Err(problem) => Err(ApiError::Conflict(format!(
            "Dead letter message could not be replayed: {problem}"
        ))),
        Ok(message) => {
            let published = tokio::time::timeout(
                PUBLISH_WAIT,
                state
                    .bus
                    .publish(message.topic, message.key.as_bytes(), &message.payload),
            )
            .await;
            match published {
                Ok(Ok(())) => Ok(format!(
                    "re-published to {} for unit {}",
                    message.topic, message.key
                )),
                Ok(Err(e)) => Err(bus_error(e)),
                Err(_) => Err(ApiError::Unavailable(format!(
                    "The message bus did not accept the message within {} s",
                    PUBLISH_WAIT.as_secs()
                ))),
            }
        }
    };
    let at = sea_query::Value::ChronoDateTime(Some(Box::new(now())));
    match outcome {
        Ok(detail) => {
            update(
                &state,
                &user,
                letter.id,
                vec![
                    ("status", text("replayed")),
                    ("status_time", at.clone()),
                    ("replay_status", text("success")),
                    ("replay_status_text", text(detail)),
                    ("replay_status_time", at),
                ],
            )
            .await?;
            metrics::counter!("smartsolar_dead_letters_replayed_total", "result" => "success")
                .increment(1);
            Ok(success(
                StatusCode::OK,
                "Dead letter message replayed",
                Json::Null,
            ))
        }
        Err(err) => {
            update(
                &state,
                &user,
                letter.id,
                vec![
                    ("replay_status", text("failure")),
                    ("replay_status_text", text(err.to_string())),
                    ("replay_status_time", at),
                ],
            )
            .await?;
            metrics::counter!("smartsolar_dead_letters_replayed_total", "result" => "failure")
                .increment(1);
            Err(err)
        }
    }
}

/// A message ready to publish.
struct Replay<'a> {
    topic: &'a str,
    /// The unit's IMEI (the partitioning key).
    key: String,
    payload: Vec<u8>,
}

/// The stored payload → the bus message it came from. The inner `Err` is
/// why the letter cannot be replayed (recorded as the replay's failure).
async fn prepare<'s>(
    state: &'s AppState,
    letter: &Stored,
) -> Result<Result<Replay<'s>, String>, ApiError> {
    let topic = match letter.queue_name.as_str() {
        q if q == QueueName::Mo.as_str() => state.topics.mo.as_str(),
        q if q == QueueName::MtReply.as_str() => state.topics.mt_reply.as_str(),
        other => return Ok(Err(format!("unknown queue_name '{other}'"))),
    };
    let env = match decode_mo_queue_envelope(letter.payload.as_bytes()) {
        Ok(env) => env,
        Err(e) => return Ok(Err(format!("the payload is not an MO queue envelope: {e}"))),
    };
    let (message, received_at_ms) = match (env.message_bytes(), env.received_at_ms()) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(format!("the payload is damaged: {e}"))),
    };
    let imei = match env.ident_type {
        IdentType::Imei => env.ident.to_string(),
        IdentType::Ip => match imei_for_ident(state, &env).await? {
            Ok(imei) => imei,
            Err(problem) => return Ok(Err(problem)),
        },
    };
    let ident = match env.ident_type {
        IdentType::Ip => Some(env.ident.as_ref()),
        IdentType::Imei => None,
    };
    let payload = encode_bus_envelope(&BusEnvelope {
        imei: &imei,
        correlation_id: env.correlation_id,
        received_at_ms,
        // The legacy envelope does not record the transport.
        transport: Transport::Tcp,
        ident,
        message: &message,
    });
    Ok(Ok(Replay {
        topic,
        key: imei,
        payload,
    }))
}

/// The IMEI of the unit with network identity `Aeris/10.112.89.62`
/// (`product.rtc_network_name` and `product.ip_address`).
async fn imei_for_ident(
    state: &AppState,
    env: &MoQueueEnvelope<'_>,
) -> Result<Result<String, String>, ApiError> {
    let ident = match Ident::parse(&env.ident) {
        Ok(i) => i,
        Err(e) => return Ok(Err(format!("bad ident: {e}"))),
    };
    let stmt = Query::select()
        .column(Alias::new("product_imei"))
        .from(Alias::new("product"))
        .and_where(Expr::col(Alias::new("rtc_network_name")).eq(ident.network))
        .and_where(Expr::col(Alias::new("ip_address")).eq(ident.ip.to_string()))
        .limit(2)
        .to_owned();
    let rows = state
        .db
        .fetch_all(&stmt, &[&text_col("product_imei")])
        .await?;
    Ok(match rows.as_slice() {
        [one] => Ok(one["product_imei"].as_str().unwrap_or_default().to_owned()),
        [] => Err(format!("no product has the network identity {ident}")),
        _ => Err(format!(
            "several products have the network identity {ident}"
        )),
    })
}

async fn discard(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Technical)?;
    require_global(&user)?;
    let letter = load(&state, &user, &id).await?;
    let at = sea_query::Value::ChronoDateTime(Some(Box::new(now())));
    update(
        &state,
        &user,
        letter.id,
        vec![("status", text("discarded")), ("status_time", at)],
    )
    .await?;
    Ok(success(
        StatusCode::OK,
        "Dead letter message discarded",
        Json::Null,
    ))
}

async fn decode(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    user.require(Permission::Overview)?;
    let letter = load(&state, &user, &id).await?;
    let (message, data) = match readable(&letter.payload) {
        Ok(text) => (
            "Dead letter message decoded",
            format!("Decoded message: {text}"),
        ),
        Err(problem) => (
            "Dead letter message could not be decoded",
            format!("Undecodable message: {problem}"),
        ),
    };
    // `reason` is an addition to the spec's envelope: why ingest gave up.
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "status": "success",
            "message": message,
            "data": data,
            "reason": letter.reason,
        })),
    )
        .into_response())
}

/// The payload's CBOR message in diagnostic notation.
pub fn readable(payload: &str) -> Result<String, String> {
    let env = decode_mo_queue_envelope(payload.as_bytes())
        .map_err(|e| format!("the payload is not an MO queue envelope ({e})"))?;
    let bytes = env
        .message_bytes()
        .map_err(|e| format!("the message is not base64 ({e})"))?;
    render_cbor(&bytes).map_err(|e| format!("{e}; bytes h'{}'", hex::encode(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example payload (`rtc_dead_letter` GET).
    pub(crate) const SPEC_PAYLOAD: &str = "{\"ident\": \"Aeris/10.112.89.62\", \"message\": \"ggSfghpaebuvaUNvbm5lY3RlZP8=\", \"correlation_id\": \"d478ea0eeadc47e8aead97502235ccac\", \"timestamp\": \"2018-02-06T14:29:14.349698\", \"ident_type\": \"IP\"}";

    #[test]
    fn the_spec_payload_reads_as_its_event_log() {
        assert_eq!(
            readable(SPEC_PAYLOAD).unwrap(),
            "[4, [[1517927343, \"Connected\"]]]"
        );
        assert!(readable("not json")
            .unwrap_err()
            .contains("not an MO queue envelope"));
        let truncated = SPEC_PAYLOAD.replace("ggSfghpaebuvaUNvbm5lY3RlZP8=", "ggSf");
        assert!(readable(&truncated).unwrap_err().contains("h'"));
    }

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
