//! The RTC glue: what connects the relational database to the gateway and the
//! ingest engine (see `docs/architecture.md`, "Gateway", and `docs/decisions.md`,
//! "RTC glue").
//!
//! # Into the database (units → control-plane)
//! - [`UnitDirectoryDb`] (`rtc::UnitDirectory`): who may connect, from `product`,
//!   with a short in-memory cache (every handshake asks); [`credentials_changed`], called
//!   after every write that changes a unit's key, drops it and tells the gateways.
//! - [`PresenceDb`] (`rtc::PresenceSink`): `rtc_connection_history` rows and the
//!   product's `latest_rtc_connection_history_id`, written by a background writer so
//!   the gateway never waits on the database.
//! - [`FallbackSms`] (`rtc::Fallback`): a WAKEUP SMS (the `actions::sms` path) and an
//!   `rtc_fallback_message_history` row when a unit stays unreachable.
//! - [`ControlPlaneSink`] (`ingest::sink::MoSink`): status reports, cell reports,
//!   balances, final balances, MT replies, command responses and the
//!   `rtc_mo_message_history` rows. Run the ingest engine twice with it: once on the
//!   MO topic and once on the MT-reply topic ([`reply_topics`], group [`REPLY_GROUP`]).
//!
//! # Out to the units (control-plane → units)
//! - [`mt::send`]: an `rtc_message_history` row, then `rtc::MtClient::enqueue`.
//! - [`mt::record_pending_in`] / [`mt::enqueue_after_commit`]: the unit's desired state
//!   and pending payment commands, recorded in the transaction of the enable/disable/tamper
//!   and DCM handlers and queued after commit; they become the unit's record of pending
//!   commands ([`pending`]).
//! - [`PendingMtDb`] (`rtc::PendingMt`): the record of the MT commands each unit must
//!   still get (`rtc_mt_pending`), read by the gateway when a unit connects or polls, so
//!   the gateways' queues are only a cache of it.
//! - The endpoints `command_request`, `sync`, `status_update`, `rtc_online_status`,
//!   `force_connection` (`http.rs`).
//!
//! # Idempotence
//! The bus delivers at least once. Every sink step that changes the database inserts
//! `(MO correlation id, step)` into `rtc_mo_applied` in the same transaction as its
//! effects; a redelivered MO finds the row and changes nothing.

mod directory;
mod fallback;
mod http;
mod locator;
pub mod mt;
pub mod pending;
mod presence;
mod registry;
mod sink;

use bus::Topics;
use chrono::NaiveDateTime;
use codec::ack::MoNumber;
use codec::CorrelationId;
use ingest::sink::SinkError;
use sea_query::{Alias, Cond, Expr, OnConflict, Order, Query, SelectStatement, SimpleExpr};

use crate::db::{DbError, Tx};
use crate::dcm::DcmError;
use crate::error::ApiError;
use crate::schema::Backend;

pub use directory::{
    credentials_changed, DirectoryCache, UnitDirectoryDb, IDENTITY_COLUMNS,
    METRIC_CREDENTIAL_NOTICES,
};
pub use fallback::{FallbackSms, SMS_WINDOW_SECS};
pub use locator::{locator_from_config, CsvCellLocator, HttpCellLocator, LocatorError};
pub use pending::PendingMtDb;
pub use presence::{
    record_connection_status, PresenceDb, METRIC_DROPPED, METRIC_QUEUE_FULL, METRIC_WRITTEN,
};
pub use registry::DbPresenceRegistry;
pub use sink::{CellLocator, ControlPlaneSink, Location, NoCellLocator, METRIC_MO_DUPLICATES};

pub(crate) use http::router;

/// `created_by`/`modified_by` of rows the RTC glue writes on its own (presence,
/// fallback, MT outcomes). Rows caused by a unit's own report use
/// [`crate::actions::unit::UNIT_USER`].
pub const RTC_USER: &str = "rtc";

/// Consumer group of the ingest engine that runs on the MT-reply topic.
pub const REPLY_GROUP: &str = "ingest-mt-reply";

/// The topics for the ingest engine that applies MT replies, command responses and
/// final balances: it reads `RTC-MT.Reply` (as its "MO" topic) and dead-letters to
/// `RTC-MT.Reply.Dead-Letter`. The engine writes the dead letter's `queue_name` as
/// `RTC-MT.Reply`, so a replay re-publishes to the reply topic.
pub fn reply_topics(topics: &Topics) -> Topics {
    Topics {
        mo: topics.mt_reply.clone(),
        mo_dead_letter: topics.mt_reply_dead_letter.clone(),
        ..topics.clone()
    }
}

/// Unix milliseconds as the database's UTC timestamp.
pub(crate) fn datetime_ms(ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.naive_utc())
        .unwrap_or_default()
}

/// Counter, labelled by step: sink steps of version-2 MO refused because the MO is numbered at
/// or below its unit's pruned mark (a resend whose dedupe row was pruned; see
/// [`prune_applied`]), so nothing was applied twice.
pub const METRIC_MO_PRUNED_REPEATS: &str = "smartsolar_rtc_mo_pruned_repeats_total";

/// A version-2 MO's number as the database stores it (`BIGINT`). `None` for a seq beyond
/// `i64::MAX`, which no unit reaches: such an MO is deduplicated by its correlation id alone.
fn stored_number(number: MoNumber) -> Option<(i64, i64)> {
    Some((i64::from(number.boot), i64::try_from(number.seq).ok()?))
}

/// Records that step `step` of MO `correlation_id` is applied in `tx`. `false` when it
/// already was (a redelivery, or a version-2 unit's resend): the caller then changes nothing.
///
/// A version-2 MO (`number` is its `(boot, seq)`) is recorded with its number. Its dedupe row
/// may have been pruned long before a resend ([`prune_applied`]); then the unit's pruned mark
/// still knows it: an MO numbered at or below the highest pruned seq of its boot was applied
/// before (`docs/decisions.md`, "Issue 16: the pruned mark"). One index probe of
/// `rtc_mo_pruned_mark` per claim of a numbered MO, none for a version-1 MO.
pub(crate) async fn claim_step(
    tx: &mut Tx,
    correlation_id: CorrelationId,
    step: &str,
    imei: &str,
    number: Option<MoNumber>,
    at: NaiveDateTime,
) -> Result<bool, DbError> {
    let number = number.and_then(stored_number);
    let id = correlation_id.to_string();
    let row: [SimpleExpr; 6] = [
        id.as_str().into(),
        step.into(),
        imei.into(),
        at.into(),
        number.map(|(boot, _)| boot).into(),
        number.map(|(_, seq)| seq).into(),
    ];
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new("rtc_mo_applied"))
        .columns(
            [
                "correlation_id",
                "step",
                "product_imei",
                "applied_at",
                "boot",
                "seq",
            ]
            .map(Alias::new),
        )
        .on_conflict(
            OnConflict::columns([Alias::new("correlation_id"), Alias::new("step")])
                .do_nothing()
                .to_owned(),
        );
    let Some((boot, seq)) = number else {
        insert.values_panic(row);
        return Ok(tx.execute(&insert).await? == 1);
    };
    let repeat = match tx.backend() {
        // One writer: no prune runs between this statement's read of the mark and its insert,
        // so both go in one statement (one trip to the writer on the hot path).
        Backend::Sqlite => {
            let mark = covering_mark(imei, boot, seq, Expr::val(1).into());
            let unmarked = Query::select()
                .exprs(row)
                .and_where(Expr::exists(mark).not())
                .to_owned();
            if let Err(e) = insert.select_from(unmarked) {
                unreachable!("the claim's columns and values disagree: {e}");
            }
            if tx.execute(&insert).await? == 1 {
                return Ok(true);
            }
            // Refused: by the row (the usual repeat) or by the mark (counted below).
            let stmt = Query::select()
                .expr(Expr::cust("COUNT(*)"))
                .from(Alias::new("rtc_mo_applied"))
                .and_where(claimed(&id, step))
                .to_owned();
            tx.fetch_i64(&stmt).await? == 0
        }
        // Concurrent writers: the mark is read in a statement of its own, after the insert.
        // An insert that meets the very row a prune is deleting waits for that prune to
        // commit, and the read that follows (a new snapshot under READ COMMITTED) sees the
        // mark the prune raised; read within the insert, it would not.
        Backend::Postgres => {
            insert.values_panic(row);
            if tx.execute(&insert).await? == 0 {
                return Ok(false);
            }
            let marked = covering_mark(imei, boot, seq, Expr::cust("COUNT(*)"));
            if tx.fetch_i64(&marked).await? == 0 {
                return Ok(true);
            }
            // Take the row back, so the claim changes nothing whatever the caller then does
            // with the transaction.
            let undo = Query::delete()
                .from_table(Alias::new("rtc_mo_applied"))
                .and_where(claimed(&id, step))
                .to_owned();
            tx.execute(&undo).await?;
            true
        }
    };
    if repeat {
        metrics::counter!(METRIC_MO_PRUNED_REPEATS, "step" => step.to_owned()).increment(1);
    }
    Ok(false)
}

/// The `rtc_mo_applied` row of step `step` of MO `correlation_id` (32 hex digits).
fn claimed(correlation_id: &str, step: &str) -> SimpleExpr {
    Expr::col(Alias::new("correlation_id"))
        .eq(correlation_id)
        .and(Expr::col(Alias::new("step")).eq(step))
}

/// `SELECT <what>` of unit `imei`'s pruned mark of boot `boot` if it covers `seq`: an index
/// probe of the key `(product_imei, boot)`.
fn covering_mark(imei: &str, boot: i64, seq: i64, what: SimpleExpr) -> SelectStatement {
    Query::select()
        .expr(what)
        .from(Alias::new("rtc_mo_pruned_mark"))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .and_where(Expr::col(Alias::new("boot")).eq(boot))
        .and_where(Expr::col(Alias::new("pruned_through_seq")).gte(seq))
        .to_owned()
}

/// When step `step` of MO `correlation_id` was first applied, unix milliseconds (the
/// `received_at_ms` of the first copy of the MO). A resent MO (protocol §8.5) has a new
/// `received_at_ms`; its telemetry point must use the first one, or it would land at a second
/// time and count twice.
pub(crate) async fn first_applied_ms(
    tx: &mut Tx,
    correlation_id: CorrelationId,
    step: &str,
) -> Result<Option<i64>, DbError> {
    let stmt = Query::select()
        .column(Alias::new("applied_at"))
        .from(Alias::new("rtc_mo_applied"))
        .and_where(claimed(&correlation_id.to_string(), step))
        .to_owned();
    let column = crate::rows::col("applied_at", crate::catalogue::ColumnType::Datetime);
    let row = tx.fetch_optional(&stmt, &[&column]).await?;
    Ok(row
        .as_ref()
        .and_then(|r| crate::rows::RowExt::text(r, "applied_at"))
        .and_then(crate::values::parse_datetime)
        .map(|t| t.and_utc().timestamp_millis()))
}

/// Deletes `rtc_mo_applied` rows older than `before` (a bus redelivery older than that is
/// no longer expected); returns how many. For the scheduler.
///
/// Version-2 rows are first folded into their unit's pruned mark (`rtc_mo_pruned_mark`: per
/// unit and boot id, the highest seq pruned), in the same transaction, so a resend after any
/// time offline is still recognised ([`claim_step`]). A mark is deleted once the same unit
/// has a newer mark of another boot: the unit has started its numbering again since, and the
/// old boot's window can no longer be resent. Ingest writes meanwhile: on PostgreSQL
/// a row committed between the fold and the delete could be deleted without being folded,
/// so the delete takes a numbered row only when the mark (as this transaction sees it,
/// its own fold included) covers its seq; any other is left for the next prune. On SQLite
/// the two statements run under the single writer, with nothing in between.
pub async fn prune_applied(db: &crate::db::Db, before: NaiveDateTime) -> Result<u64, DbError> {
    let applied = || Alias::new("rtc_mo_applied");
    let mark = || Alias::new("rtc_mo_pruned_mark");
    let col = |name: &str| Alias::new(name);
    let mut tx = db.begin_background().await?;
    let pruned = Query::select()
        .columns([col("product_imei"), col("boot")])
        .expr(Expr::col(col("seq")).max())
        .expr(Expr::col(col("applied_at")).max())
        .from(applied())
        .and_where(Expr::col(col("applied_at")).lt(before))
        .and_where(Expr::col(col("boot")).is_not_null())
        .and_where(Expr::col(col("seq")).is_not_null())
        .group_by_columns([col("product_imei"), col("boot")])
        // One lock order for every pruner: two control-plane processes prune at once.
        .order_by(col("product_imei"), Order::Asc)
        .order_by(col("boot"), Order::Asc)
        .to_owned();
    let mut fold = Query::insert();
    fold.into_table(mark()).columns([
        col("product_imei"),
        col("boot"),
        col("pruned_through_seq"),
        col("last_applied_at"),
    ]);
    if let Err(e) = fold.select_from(pruned) {
        // sea-query refuses only a select whose width is not the column list's (4 and 4).
        unreachable!("the pruned-mark fold's columns and select disagree: {e}");
    }
    fold.on_conflict(
        OnConflict::columns([col("product_imei"), col("boot")])
            .update_columns([col("pruned_through_seq"), col("last_applied_at")])
            // The mark only rises.
            .action_and_where(
                Expr::col((Alias::new("excluded"), col("pruned_through_seq")))
                    .gt(Expr::col((mark(), col("pruned_through_seq")))),
            )
            .to_owned(),
    );
    tx.execute(&fold).await?;
    let covered = Query::select()
        .expr(Expr::val(1))
        .from(mark())
        .and_where(
            Expr::col((mark(), col("product_imei"))).equals((applied(), col("product_imei"))),
        )
        .and_where(Expr::col((mark(), col("boot"))).equals((applied(), col("boot"))))
        .and_where(
            Expr::col((mark(), col("pruned_through_seq"))).gte(Expr::col((applied(), col("seq")))),
        )
        .to_owned();
    let delete = Query::delete()
        .from_table(applied())
        .cond_where(
            Cond::all()
                .add(Expr::col(col("applied_at")).lt(before))
                .add(
                    Cond::any()
                        .add(Expr::col(col("seq")).is_null())
                        .add(Expr::exists(covered)),
                ),
        )
        .to_owned();
    let n = tx.execute(&delete).await?;
    // Marks of boots a unit has left: a newer mark of another boot of the same unit means the
    // unit started its numbering again since, so the older boot's window is gone from the
    // unit and nothing of it can be resent (protocol §8.1). Without this the table grows by
    // one row per unit per reboot, forever. Evidence is taken from the marks only (indexed
    // by their key), not from `rtc_mo_applied`, which has no index by unit.
    let newer = Alias::new("newer");
    let newer_boot = Query::select()
        .expr(Expr::val(1))
        .from_as(mark(), newer.clone())
        .and_where(
            Expr::col((newer.clone(), col("product_imei"))).equals((mark(), col("product_imei"))),
        )
        .and_where(Expr::col((newer.clone(), col("boot"))).ne(Expr::col((mark(), col("boot")))))
        .and_where(
            Expr::col((newer, col("last_applied_at")))
                .gt(Expr::col((mark(), col("last_applied_at")))),
        )
        .to_owned();
    let left = Query::delete()
        .from_table(mark())
        .cond_where(Expr::exists(newer_boot))
        .to_owned();
    tx.execute(&left).await?;
    tx.commit().await?;
    Ok(n)
}

// ------------------------------------------------------------ error mapping

/// Whether a driver error is worth retrying: the connection, the pool, or a
/// serialisation/lock conflict (the same statement can succeed later).
pub(crate) fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: serialization failure, deadlock, lock not available,
            // connection exceptions (08xxx), insufficient resources (53xxx),
            // operator intervention (57xxx: shutdown, cannot connect now).
            // SQLite: SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes.
            matches!(code.as_ref(), "40001" | "40P01" | "55P03")
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57")
                || code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                || db.message().contains("database is locked")
        }
        _ => false,
    }
}

/// A database error as the ingest engine needs it: connection trouble is retried,
/// constraint violations and everything else are dead-lettered.
pub fn db_sink_error(e: DbError) -> SinkError {
    match &e {
        DbError::Other(inner) if is_transient_sqlx(inner) => SinkError::Transient(e.to_string()),
        _ => SinkError::Permanent(e.to_string()),
    }
}

/// An error of an `actions` service as the ingest engine needs it. A missing
/// product (unknown IMEI) or a refused value is permanent; a database outage hidden
/// in an internal error is transient.
pub fn api_sink_error(e: ApiError) -> SinkError {
    match e {
        ApiError::Internal(inner) => match inner.downcast::<DbError>() {
            Ok(db) => db_sink_error(db),
            Err(other) => SinkError::Permanent(format!("{other:#}")),
        },
        ApiError::Unavailable(m) => SinkError::Transient(m),
        ApiError::Validation(fields) => {
            SinkError::Permanent(serde_json::Value::Object(fields).to_string())
        }
        other => SinkError::Permanent(other.to_string()),
    }
}

/// A DCM error as the ingest engine needs it.
pub fn dcm_sink_error(e: DcmError) -> SinkError {
    match e {
        DcmError::Db(db) => db_sink_error(db),
        other => SinkError::Permanent(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_constraints_are_permanent() {
        let io = DbError::Other(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(matches!(db_sink_error(io), SinkError::Transient(_)));
        assert!(matches!(
            db_sink_error(DbError::Other(sqlx::Error::PoolTimedOut)),
            SinkError::Transient(_)
        ));
        assert!(matches!(
            db_sink_error(DbError::Unique {
                field: Some("x".into())
            }),
            SinkError::Permanent(_)
        ));
        assert!(matches!(
            db_sink_error(DbError::ForeignKey { field: None }),
            SinkError::Permanent(_)
        ));
        assert!(matches!(
            db_sink_error(DbError::Other(sqlx::Error::RowNotFound)),
            SinkError::Permanent(_)
        ));
    }

    #[test]
    fn api_errors_map_by_kind() {
        assert!(matches!(
            api_sink_error(ApiError::NotFound("No product".into())),
            SinkError::Permanent(m) if m.contains("No product")
        ));
        let hidden = ApiError::from(DbError::Other(sqlx::Error::PoolClosed));
        assert!(matches!(api_sink_error(hidden), SinkError::Transient(_)));
        let constraint = ApiError::from(DbError::NotNull {
            field: Some("date".into()),
        });
        assert!(matches!(
            api_sink_error(constraint),
            SinkError::Permanent(_)
        ));
        assert!(matches!(
            api_sink_error(ApiError::Unavailable("bus".into())),
            SinkError::Transient(_)
        ));
        assert!(matches!(
            dcm_sink_error(DcmError::NegativeBalance(-1)),
            SinkError::Permanent(_)
        ));
        assert!(matches!(
            dcm_sink_error(DcmError::Db(DbError::Other(sqlx::Error::PoolTimedOut))),
            SinkError::Transient(_)
        ));
    }

    #[test]
    fn reply_topics_read_the_reply_topic() {
        let t = reply_topics(&Topics::default());
        assert_eq!(t.mo, "RTC-MT.Reply");
        assert_eq!(t.mo_dead_letter, "RTC-MT.Reply.Dead-Letter");
        assert_eq!(t.mt, "RTC-MT");
    }

    #[test]
    fn milliseconds_to_datetime() {
        assert_eq!(
            crate::values::format_datetime(&datetime_ms(1_517_927_343_250)),
            "2018-02-06T14:29:03.250000"
        );
    }
}
