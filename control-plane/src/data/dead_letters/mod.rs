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
//!
//! Layout: `handlers` (the routes), `import` (bus → table), `letter` (one
//! stored letter: load, status updates), `replay` (table → bus), `decode`
//! (the payload in readable form, pure).

mod decode;
mod handlers;
mod import;
mod letter;
mod replay;

use bus::{BusError, Consumer};
use tokio::sync::Mutex;

use crate::error::ApiError;

pub use decode::readable;
pub(super) use handlers::router;

/// The consumer group the control-plane reads dead-letter topics as.
pub const GROUP: &str = "control-plane-dead-letters";
/// Most letters one import call takes off the topic.
pub const MAX_PER_CALL: usize = 1000;

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

fn bus_error(err: BusError) -> ApiError {
    tracing::warn!(error = %err, "bus unavailable for a dead-letter action");
    ApiError::Unavailable(format!("The message bus is unavailable: {err}"))
}
