//! The delivery worker: outbox rows become signed HTTP POSTs.
//!
//! One round ([`Worker::run_once`]) is three steps, each its own short
//! transaction, so no transaction is open while a subscriber is called:
//! 1. **Fan-out**: notifications not yet fanned out become one
//!    `webhook_delivery` row per matching subscriber (subscribers of an
//!    entity only get notifications of products currently linked to it).
//!    On PostgreSQL one instance at a time does this (a transaction-scoped
//!    advisory lock), so deliveries are created in notification order.
//! 2. **Claim**: the due *head* of each subscriber's queue (its pending
//!    delivery with the lowest notification id) is leased by setting
//!    `locked_until`; on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so
//!    several instances never claim the same row. A subscriber's next
//!    delivery waits until its head is delivered or has failed for good,
//!    which keeps per-subscriber order by notification id.
//! 3. **Send and record**: the claimed deliveries are POSTed concurrently
//!    (at most one per subscriber) with a timeout; every attempt is written
//!    to `webhook_attempt`; a failure is retried after an exponential
//!    backoff with jitter, up to `webhook_max_attempts`, then the delivery
//!    is `failed` (it can be re-sent through the API).
//!
//! Delivery is at least once: an instance that dies between sending and
//! recording leaves a lease that expires, and the delivery is sent again.
//! Each request carries `X-SmartSolar-Notification-Id` so a receiver can
//! drop repeats.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use rand::Rng;
use sea_query::{Expr, Func, JoinType, LockBehavior, LockType, OnConflict, Order, Query};

use super::secrets::SecretBox;
use super::signing::{signature, SIGNATURE_HEADER};
use super::url_policy::UrlPolicy;
use crate::app::AppState;
use crate::catalogue::ColumnType;
use crate::db::{Db, DbError, Tx};
use crate::rows::{a, col, RowExt};
use crate::schema::Backend;

/// Delivery states (`webhook_delivery.status`).
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// The header that identifies the notification (for receivers' de-duplication).
pub const NOTIFICATION_ID_HEADER: &str = "X-SmartSolar-Notification-Id";

/// Key of the PostgreSQL advisory lock that serialises fan-out.
const FANOUT_LOCK: i64 = 0x5353_5748; // "SSWH"
/// Notifications fanned out per round.
const FANOUT_BATCH: u64 = 200;

/// The delay before retry number `attempts` (1 after the first failure):
/// `base * 2^(attempts-1)` capped at `max`, then a random point in its
/// upper half, so retries of many deliveries do not arrive in lockstep.
pub fn backoff(attempts: u32, base_ms: u64, max_ms: u64) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let full = base_ms.saturating_mul(1u64 << exp).min(max_ms).max(1);
    let jittered = full / 2 + rand::thread_rng().gen_range(0..=full - full / 2);
    Duration::from_millis(jittered)
}

/// A notification not yet fanned out to its subscribers' deliveries.
#[derive(Debug, sqlx::FromRow)]
struct Unfanned {
    notification_id: i64,
    channel: Option<String>,
    product_imei: Option<String>,
}

/// A delivery leased for sending (a row of the claim's join, by alias).
#[derive(Debug, Clone, sqlx::FromRow)]
struct Claimed {
    #[sqlx(rename = "webhook_delivery_id")]
    delivery_id: i64,
    notification_id: i64,
    subscriber_id: i64,
    attempts: i64,
    url: String,
    #[sqlx(rename = "key")]
    sealed_key: String,
    payload: String,
}

/// What one attempt came to.
#[derive(Debug)]
struct Outcome {
    started_at: NaiveDateTime,
    duration: Duration,
    status_code: Option<u16>,
    error: Option<String>,
}

impl Outcome {
    fn delivered(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// The deliveries waiting to be sent, as [`Worker::observe_backlog`] saw them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Pending deliveries, due or in backoff.
    pub deliveries: i64,
    /// Age of the oldest of them (0 when there is none).
    pub oldest_age_secs: f64,
}

/// Everything one worker needs; cheap to keep for the life of the task.
pub struct Worker {
    state: AppState,
    client: reqwest::Client,
    policy: UrlPolicy,
    secrets: SecretBox,
}

impl Worker {
    /// A worker over the state's database and configuration.
    pub fn new(state: AppState) -> anyhow::Result<Self> {
        let policy = UrlPolicy::from_config(&state.config)?;
        let timeout = Duration::from_millis(state.config.webhook_timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(policy.resolver())
            .user_agent(concat!("smartsolar-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let secrets = SecretBox::from_config(&state.config);
        Ok(Self {
            state,
            client,
            policy,
            secrets,
        })
    }

    fn db(&self) -> &Db {
        &self.state.db
    }

    fn now(&self) -> NaiveDateTime {
        self.state.clock.now()
    }

    /// One round: fan out, claim, send, record. Returns how many
    /// notifications were fanned out plus deliveries attempted (0: idle).
    pub async fn run_once(&self) -> Result<usize, DbError> {
        let fanned = self.fan_out().await?;
        let claimed = self.claim().await?;
        let sent = claimed.len();
        let results =
            futures_util::future::join_all(claimed.into_iter().map(|c| self.deliver(c))).await;
        for r in results {
            r?;
        }
        Ok(fanned + sent)
    }

    /// Sets the backlog gauges: deliveries waiting (`pending`, due or in
    /// backoff) and the age of the oldest. Shared by every worker instance,
    /// so each reports the same database-wide figure.
    pub async fn observe_backlog(&self) -> Result<Backlog, DbError> {
        let stmt = Query::select()
            .expr_as(Func::count(Expr::col(a("webhook_delivery_id"))), a("n"))
            .expr_as(Func::min(Expr::col(a("created_at"))), a("oldest"))
            .from(a("webhook_delivery"))
            .and_where(Expr::col(a("status")).eq(PENDING))
            .to_owned();
        let (n, oldest) = (
            col("n", ColumnType::Int),
            col("oldest", ColumnType::Datetime),
        );
        let row = self.db().fetch_optional(&stmt, &[&n, &oldest]).await?;
        let pending = row.as_ref().and_then(|r| r.int("n")).unwrap_or(0);
        let age = row
            .as_ref()
            .and_then(|r| r.string("oldest"))
            .and_then(|t| crate::values::parse_datetime(&t))
            .map_or(0.0, |t| {
                (self.now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
        metrics::gauge!("smartsolar_webhook_backlog_deliveries").set(pending as f64);
        metrics::gauge!("smartsolar_webhook_oldest_pending_age_seconds").set(age);
        Ok(Backlog {
            deliveries: pending,
            oldest_age_secs: age,
        })
    }

    async fn fan_out(&self) -> Result<usize, DbError> {
        let now = self.now();
        let mut tx = self.db().begin_background().await?;
        if tx.backend() == Backend::Postgres {
            let lock = Query::select()
                .expr_as(
                    Func::cust(a("pg_try_advisory_xact_lock")).arg(FANOUT_LOCK),
                    a("locked"),
                )
                .to_owned();
            let got: Option<(Option<bool>,)> = tx.fetch_typed_optional(&lock).await?;
            let got = got.and_then(|(locked,)| locked).unwrap_or(false);
            if !got {
                return Ok(0);
            }
        }
        let pending = Query::select()
            .columns(["notification_id", "channel", "product_imei"].map(a))
            .from(a("notification"))
            .and_where(Expr::col(a("fanned_out_at")).is_null())
            .order_by(a("notification_id"), Order::Asc)
            .limit(FANOUT_BATCH)
            .to_owned();
        let notifications: Vec<Unfanned> = tx.fetch_typed(&pending).await?;
        if notifications.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(notifications.len());
        for n in &notifications {
            let id = n.notification_id;
            ids.push(id);
            let channel = n.channel.as_deref().unwrap_or_default();
            let subscribers =
                matching_subscribers(&mut tx, channel, n.product_imei.clone()).await?;
            if subscribers.is_empty() {
                continue;
            }
            let mut insert = Query::insert();
            insert
                .into_table(a("webhook_delivery"))
                .columns(
                    [
                        "notification_id",
                        "subscriber_id",
                        "status",
                        "attempts",
                        "next_attempt_at",
                        "created_at",
                    ]
                    .map(a),
                )
                .on_conflict(
                    OnConflict::columns([a("notification_id"), a("subscriber_id")])
                        .do_nothing()
                        .to_owned(),
                );
            for s in subscribers {
                insert.values_panic([
                    id.into(),
                    s.into(),
                    PENDING.into(),
                    0i64.into(),
                    now.into(),
                    now.into(),
                ]);
            }
            tx.execute(&insert).await?;
        }
        let mark = Query::update()
            .table(a("notification"))
            .value(a("fanned_out_at"), now)
            .and_where(Expr::col(a("notification_id")).is_in(ids))
            .to_owned();
        tx.execute(&mark).await?;
        tx.commit().await?;
        Ok(notifications.len())
    }

    async fn claim(&self) -> Result<Vec<Claimed>, DbError> {
        let now = self.now();
        let lease = chrono::Duration::milliseconds(
            self.state.config.webhook_timeout_ms as i64 * 2 + 30_000,
        );
        let (d, e, s, n) = (a("d"), a("e"), a("s"), a("n"));
        let mut earlier = Query::select();
        earlier
            .expr(Expr::cust("1"))
            .from_as(a("webhook_delivery"), e.clone())
            .and_where(
                Expr::col((e.clone(), a("subscriber_id"))).equals((d.clone(), a("subscriber_id"))),
            )
            .and_where(Expr::col((e.clone(), a("status"))).eq(PENDING))
            .and_where(
                Expr::col((e.clone(), a("notification_id")))
                    .lt(Expr::col((d.clone(), a("notification_id")))),
            );
        let mut sel = Query::select();
        sel.expr_as(
            Expr::col((d.clone(), a("webhook_delivery_id"))),
            a("webhook_delivery_id"),
        )
        .expr_as(
            Expr::col((d.clone(), a("notification_id"))),
            a("notification_id"),
        )
        .expr_as(
            Expr::col((d.clone(), a("subscriber_id"))),
            a("subscriber_id"),
        )
        .expr_as(Expr::col((d.clone(), a("attempts"))), a("attempts"))
        .expr_as(Expr::col((s.clone(), a("url"))), a("url"))
        .expr_as(Expr::col((s.clone(), a("key"))), a("key"))
        .expr_as(Expr::col((n.clone(), a("payload"))), a("payload"))
        .from_as(a("webhook_delivery"), d.clone())
        .join_as(
            JoinType::InnerJoin,
            a("subscriber"),
            s.clone(),
            Expr::col((s.clone(), a("subscriber_id"))).equals((d.clone(), a("subscriber_id"))),
        )
        .join_as(
            JoinType::InnerJoin,
            a("notification"),
            n.clone(),
            Expr::col((n.clone(), a("notification_id"))).equals((d.clone(), a("notification_id"))),
        )
        .and_where(Expr::col((d.clone(), a("status"))).eq(PENDING))
        .and_where(Expr::col((d.clone(), a("next_attempt_at"))).lte(now))
        .and_where(
            Expr::col((d.clone(), a("locked_until")))
                .is_null()
                .or(Expr::col((d.clone(), a("locked_until"))).lt(now)),
        )
        .and_where(Expr::exists(earlier).not())
        .order_by((d.clone(), a("notification_id")), Order::Asc)
        .limit(u64::from(self.state.config.webhook_batch_size.max(1)))
        .lock_with_tables_behavior(LockType::Update, [d.clone()], LockBehavior::SkipLocked);
        let mut tx = self.db().begin_background().await?;
        let claimed: Vec<Claimed> = tx.fetch_typed(&sel).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let lease_stmt = Query::update()
            .table(a("webhook_delivery"))
            .value(a("locked_until"), now + lease)
            .and_where(
                Expr::col(a("webhook_delivery_id")).is_in(claimed.iter().map(|c| c.delivery_id)),
            )
            .to_owned();
        tx.execute(&lease_stmt).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn deliver(&self, c: Claimed) -> Result<(), DbError> {
        let outcome = self.send(&c).await;
        self.record(&c, &outcome).await
    }

    async fn send(&self, c: &Claimed) -> Outcome {
        let started_at = self.now();
        let clock = Instant::now();
        let fail = |error: String| Outcome {
            started_at,
            duration: clock.elapsed(),
            status_code: None,
            error: Some(error),
        };
        // Literal addresses bypass the resolver; check them here.
        if let Err(e) = self.policy.check(&c.url) {
            return fail(e.to_string());
        }
        let key = match self.secrets.open(&c.sealed_key) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(subscriber_id = c.subscriber_id, error = %e, "webhook key unusable");
                return fail(e.to_string());
            }
        };
        let sig = signature(&key, c.payload.as_bytes(), &c.url);
        let result = self
            .client
            .post(&c.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sig)
            .header(NOTIFICATION_ID_HEADER, c.notification_id.to_string())
            .body(c.payload.clone())
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status();
                Outcome {
                    started_at,
                    duration: clock.elapsed(),
                    status_code: Some(status.as_u16()),
                    error: (!status.is_success()).then(|| format!("HTTP {status}")),
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                // `without_url`: the URL may carry the subscriber's own secrets.
                fail(format!("{kind}: {}", e.without_url()))
            }
        }
    }

    async fn record(&self, c: &Claimed, outcome: &Outcome) -> Result<(), DbError> {
        let now = self.now();
        let config = &self.state.config;
        let mut tx = self.db().begin_background().await?;
        // Unsubscribed meanwhile (the row is gone) or re-leased: nothing to record.
        let mut current = Query::select();
        current
            .columns(["attempts", "status"].map(a))
            .from(a("webhook_delivery"))
            .and_where(Expr::col(a("webhook_delivery_id")).eq(c.delivery_id))
            .lock(LockType::Update);
        let Some((attempts, _status)): Option<(Option<i64>, Option<String>)> =
            tx.fetch_typed_optional(&current).await?
        else {
            return Ok(());
        };
        let attempt = attempts.unwrap_or(c.attempts) + 1;
        let delivered = outcome.delivered();
        let gave_up = !delivered && attempt >= i64::from(config.webhook_max_attempts.max(1));
        let result = if delivered {
            DELIVERED
        } else if gave_up {
            FAILED
        } else {
            "retry"
        };
        insert_attempt(&mut tx, c.delivery_id, attempt, outcome, result).await?;
        let mut update = Query::update();
        update
            .table(a("webhook_delivery"))
            .value(a("attempts"), attempt)
            .value(a("locked_until"), Option::<NaiveDateTime>::None)
            .value(a("last_status_code"), outcome.status_code.map(i64::from))
            .value(a("last_error"), outcome.error.clone())
            .value(a("modified_at"), now)
            .and_where(Expr::col(a("webhook_delivery_id")).eq(c.delivery_id));
        if delivered {
            update
                .value(a("status"), DELIVERED)
                .value(a("delivered_at"), now);
        } else if gave_up {
            update.value(a("status"), FAILED);
        } else {
            let delay = backoff(
                attempt as u32,
                config.webhook_backoff_base_ms,
                config.webhook_backoff_max_ms,
            );
            let next = now + chrono::Duration::milliseconds(delay.as_millis() as i64);
            update.value(a("next_attempt_at"), next);
        }
        tx.execute(&update).await?;
        tx.commit().await?;
        metrics::counter!("smartsolar_webhook_attempts_total", "outcome" => result).increment(1);
        metrics::histogram!("smartsolar_webhook_attempt_duration_seconds", "outcome" => result)
            .record(outcome.duration.as_secs_f64());
        if delivered {
            tracing::debug!(
                delivery_id = c.delivery_id,
                subscriber_id = c.subscriber_id,
                attempt,
                "webhook delivered"
            );
        } else {
            tracing::warn!(
                delivery_id = c.delivery_id,
                subscriber_id = c.subscriber_id,
                attempt,
                gave_up,
                error = outcome.error.as_deref().unwrap_or(""),
                "webhook attempt failed"
            );
        }
        Ok(())
    }
}

async fn insert_attempt(
    tx: &mut Tx,
    delivery_id: i64,
    attempt: i64,
    outcome: &Outcome,
    result: &str,
) -> Result<(), DbError> {
    let stmt = Query::insert()
        .into_table(a("webhook_attempt"))
        .columns(
            [
                "webhook_delivery_id",
                "attempt",
                "started_at",
                "duration_ms",
                "status_code",
                "error",
                "outcome",
            ]
            .map(a),
        )
        .values_panic([
            delivery_id.into(),
            attempt.into(),
            outcome.started_at.into(),
            (outcome.duration.as_millis() as i64).into(),
            outcome.status_code.map(i64::from).into(),
            outcome.error.clone().into(),
            result.into(),
        ])
        .to_owned();
    tx.execute(&stmt).await.map(drop)
}

/// The subscribers of `channel` that may see a notification about
/// `product_imei`: GLOBAL subscribers (no entity) always; an entity's
/// subscribers only for products currently linked to that entity.
async fn matching_subscribers(
    tx: &mut Tx,
    channel: &str,
    product_imei: Option<String>,
) -> Result<Vec<i64>, DbError> {
    let mut stmt = Query::select();
    stmt.column(a("subscriber_id"))
        .from(a("subscriber"))
        .and_where(Expr::col(a("channel_name")).eq(channel))
        .order_by(a("subscriber_id"), Order::Asc);
    match product_imei {
        Some(imei) => {
            let linked = Query::select()
                .column(a("entity_id"))
                .from(a("product_entity_linker"))
                .and_where(Expr::col(a("product_imei")).eq(imei))
                .and_where(Expr::col(a("date_removed")).is_null())
                .to_owned();
            stmt.and_where(
                Expr::col(a("entity_id"))
                    .is_null()
                    .or(Expr::col(a("entity_id")).in_subquery(linked)),
            );
        }
        None => {
            stmt.and_where(Expr::col(a("entity_id")).is_null());
        }
    }
    let ids: Vec<(Option<i64>,)> = tx.fetch_typed(&stmt).await?;
    Ok(ids.into_iter().filter_map(|(id,)| id).collect())
}

/// How often the worker refreshes the backlog gauges (one COUNT over the
/// pending deliveries): once per usual Prometheus scrape, no more.
const BACKLOG_PERIOD: Duration = Duration::from_secs(15);

/// Starts the delivery worker as a tokio task. It works until `shutdown`
/// resolves, then finishes the round in progress (bounded by the request
/// timeout) and stops; what it has not sent stays in the database for the
/// next start.
pub fn spawn_worker(
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let poll = Duration::from_millis(state.config.webhook_poll_interval_ms.max(10));
        let worker = match Worker::new(state) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "webhook worker not started: bad configuration");
                return;
            }
        };
        tokio::pin!(shutdown);
        let mut observed: Option<Instant> = None;
        loop {
            if observed.is_none_or(|t| t.elapsed() >= BACKLOG_PERIOD) {
                observed = Some(Instant::now());
                if let Err(e) = worker.observe_backlog().await {
                    tracing::warn!(error = %e, "reading the webhook backlog failed");
                }
            }
            let busy = match worker.run_once().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook worker round failed");
                    false
                }
            };
            let pause = if busy { Duration::ZERO } else { poll };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("webhook worker stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempt in 1..40 {
            let d = backoff(attempt, 1_000, 60_000).as_millis() as u64;
            let full = (1_000u64 << (attempt - 1).min(32)).min(60_000);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d} vs {full}"
            );
        }
        let samples: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(5, 1_000, 60_000)).collect();
        assert!(samples.len() > 1, "jitter");
    }
}
