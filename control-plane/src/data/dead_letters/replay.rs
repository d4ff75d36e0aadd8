//! Replay: a stored letter's message re-published onto its original topic,
//! keyed by the unit's IMEI, and the outcome recorded on the letter.

use std::time::Duration;

use codec::envelope::{decode_mo_queue_envelope, IdentType, MoQueueEnvelope};
use codec::{encode_bus_envelope, BusEnvelope, Ident, QueueName, Transport};
use sea_query::{Alias, Expr, Query};

use super::bus_error;
use super::letter::{self, Stored};
use crate::app::AppState;
use crate::error::ApiError;
use crate::query::Visibility;

/// How long a replay waits for the bus to accept the message.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// Replays letter `id` as user `by`. A discarded letter, or one already
/// replayed successfully, is a conflict; a failed replay is recorded on
/// the letter and then returned.
pub(super) async fn replay(
    state: &AppState,
    visibility: &Visibility,
    by: &str,
    id: &str,
) -> Result<(), ApiError> {
    let _one_at_a_time = state.dead_letters.replay.lock().await;
    let letter = letter::load(state, visibility, id).await?;
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
    let outcome = publish(state, &letter).await?;
    let at = letter::stamp();
    let (changes, result) = match outcome {
        Ok(detail) => (
            [
                letter::status("replayed", &at),
                letter::replay_status("success", detail, &at),
            ]
            .concat(),
            Ok(()),
        ),
        Err(err) => (
            letter::replay_status("failure", err.to_string(), &at),
            Err(err),
        ),
    };
    letter::update(state, by, letter.id, changes).await?;
    let label = if result.is_ok() { "success" } else { "failure" };
    metrics::counter!("smartsolar_dead_letters_replayed_total", "result" => label).increment(1);
    result
}

/// Publishes the letter's message. The outer `Err` is a database failure
/// (nothing is recorded); the inner one why the replay failed.
async fn publish(state: &AppState, letter: &Stored) -> Result<Result<String, ApiError>, ApiError> {
    Ok(match prepare(state, letter).await? {
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
    })
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
        // The legacy envelope does not record it either: a replay is deduplicated by its
        // correlation id alone, never refused by the unit's pruned mark (it was never
        // applied, so it must be applied now).
        mo_number: None,
    });
    Ok(Ok(Replay {
        topic,
        key: imei,
        payload,
    }))
}

/// A product's IMEI.
#[derive(Debug, sqlx::FromRow)]
struct ProductImei {
    product_imei: Option<String>,
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
    let rows: Vec<ProductImei> = state.db.fetch_typed(&stmt).await?;
    Ok(match rows.as_slice() {
        [one] => Ok(one.product_imei.clone().unwrap_or_default()),
        [] => Err(format!("no product has the network identity {ident}")),
        _ => Err(format!(
            "several products have the network identity {ident}"
        )),
    })
}
