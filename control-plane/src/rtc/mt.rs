//! MT from the control-plane: [`send`] (record, then enqueue for the gateways) and the push
//! of what a unit must get ([`record_pending_in`] in the transaction of the change, then
//! [`enqueue_after_commit`]: its desired state and pending payment commands, which also become
//! its record of pending commands, `super::pending`).
//!
//! Every MT gets an `rtc_message_history` row **committed before** it is enqueued, so
//! the unit's reply always finds it: `message_reference` = the correlation id (32 hex),
//! `message_bin` = the CBOR message in base64, `message_json` = a JSON rendering,
//! `message_sent_time` = now, `delivery_status` NULL until the reply (`delivered` /
//! `failed`, written by [`super::ControlPlaneSink`]). A bus that refuses the command
//! marks the row `failed` ("not queued: …") and the caller gets a 503.

use std::sync::Arc;

use ::rtc::MtClient;
use base64::Engine as _;
use chrono::NaiveDateTime;
use codec::mt::{
    CommandRequest, Parameter, PaymentCategory, PaymentCommand as MtPaymentCommand,
    PaymentCommands, StatusUpdate, SyncRequest,
};
use codec::{mt_to_vec, CorrelationId, MtMessage, Seq};
use sea_query::{Alias, Expr, Query};
use serde_json::{json, Map, Value as Json};

use super::RTC_USER;
use crate::app::AppState;
use crate::db::Tx;
use crate::dcm::{self, Category};
use crate::error::ApiError;
use crate::rows::{eq, insert_id, update};

/// Payment commands per MT message (a transaction id is at most 255 bytes, so 32
/// commands stay well inside the 16 KiB frame limit).
pub const PAYMENT_COMMANDS_PER_MESSAGE: usize = 32;

/// Longest wait for the bus to accept an MT command.
pub const ENQUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An MT command recorded in `rtc_message_history`; enqueued already, or (when
/// recorded inside the caller's transaction) to be enqueued after that commits.
#[derive(Debug)]
#[must_use = "an MT recorded in the caller's transaction must be enqueued after commit"]
pub struct Sent {
    /// The `rtc_message_history` row.
    pub rtc_message_history_id: i64,
    /// The MT's correlation id (`message_reference`).
    pub correlation_id: CorrelationId,
    /// The MT type (`status_update`, `sync`, ...).
    pub message_type: &'static str,
    imei: String,
    cbor: Vec<u8>,
    enqueued: bool,
    /// How many payment commands it carries (for the DCM lifecycle metric).
    payment_commands: u64,
}

impl Sent {
    /// Whether the gateways have it.
    pub fn is_enqueued(&self) -> bool {
        self.enqueued
    }

    /// The recorded command as the gateway takes it from the record of pending commands
    /// (instead of from the bus).
    pub fn into_pending(self) -> ::rtc::PendingCommand {
        ::rtc::PendingCommand {
            correlation_id: self.correlation_id,
            message: self.cbor,
        }
    }

    /// Hands the command to the gateways (after the transaction that recorded it
    /// committed). A bus failure marks the row `failed` and answers 503. Enqueuing
    /// twice does nothing the second time.
    pub async fn enqueue(&mut self, state: &AppState) -> Result<(), ApiError> {
        if self.enqueued {
            return Ok(());
        }
        // Straight to the holder's gateway when the registry knows it (see `with_registry`).
        let client = MtClient::new(state.bus.clone(), state.topics.clone())
            .with_registry(Arc::new(super::DbPresenceRegistry::new(state.clone())));
        let created_ms = chrono::Utc::now().timestamp_millis();
        let enqueue = client.enqueue_raw(&self.imei, self.correlation_id, &self.cbor, created_ms);
        // A bus that cannot take the command within the limit (no gateway consuming,
        // broker down) must not hold the API request.
        let result = match tokio::time::timeout(ENQUEUE_TIMEOUT, enqueue).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("bus did not accept it within {ENQUEUE_TIMEOUT:?}")),
        };
        match result {
            Ok(()) => {
                self.enqueued = true;
                metrics::counter!("smartsolar_rtc_mt_sent_total", "type" => self.message_type)
                    .increment(1);
                crate::dcm::count_events("sent", self.payment_commands);
                Ok(())
            }
            Err(e) => {
                tracing::error!(imei = %self.imei, correlation_id = %self.correlation_id, error = %e, "MT not queued");
                let now = state.clock.now();
                let mut tx = state.db.begin().await?;
                update(
                    &mut tx,
                    "rtc_message_history",
                    vec![
                        ("delivery_status", "failed".into()),
                        ("delivery_status_time", now.into()),
                        ("delivery_status_info", format!("not queued: {e}").into()),
                    ],
                    eq("rtc_message_history_id", self.rtc_message_history_id),
                    RTC_USER,
                    now,
                )
                .await?;
                tx.commit().await?;
                Err(ApiError::Unavailable(format!(
                    "The message could not be queued for the unit: {e}"
                )))
            }
        }
    }
}

/// A fresh correlation id for an MT message.
pub fn new_correlation_id() -> CorrelationId {
    ::rtc::mt::new_correlation_id()
}

/// Sends `message` to unit `imei`: writes its `rtc_message_history` row (by `user`)
/// and enqueues it with `rtc::MtClient` on `state.bus`.
///
/// - `tx: None`: the row is written and committed, then the command is enqueued; the
///   returned [`Sent`] is enqueued.
/// - `tx: Some(tx)`: the row is written in the caller's transaction and **not**
///   enqueued: call [`Sent::enqueue`] after the commit (never before: the unit's reply
///   could otherwise arrive before the row exists, and a rollback would leave a
///   command without a record).
///
/// A status update also sets the product's `latest_rtc_mt_status_update_time`.
pub async fn send(
    state: &AppState,
    tx: Option<&mut Tx>,
    imei: &str,
    message: &MtMessage<'_>,
    user: &str,
) -> Result<Sent, ApiError> {
    let now = state.clock.now();
    match tx {
        Some(tx) => record(tx, imei, message, user, now).await,
        None => {
            let mut tx = state.db.begin().await?;
            let mut sent = record(&mut tx, imei, message, user, now).await?;
            tx.commit().await?;
            sent.enqueue(state).await?;
            Ok(sent)
        }
    }
}

async fn record(
    tx: &mut Tx,
    imei: &str,
    message: &MtMessage<'_>,
    user: &str,
    now: NaiveDateTime,
) -> Result<Sent, ApiError> {
    let cbor = mt_to_vec(message);
    let correlation_id = message.correlation_id();
    let rtc_message_history_id = insert_id(
        tx,
        "rtc_message_history",
        vec![
            ("product_imei", imei.into()),
            ("message_reference", correlation_id.to_string().into()),
            (
                "message_bin",
                base64::engine::general_purpose::STANDARD
                    .encode(&cbor)
                    .into(),
            ),
            ("message_sent_time", now.into()),
            ("message_json", mt_json(message).to_string().into()),
        ],
        user,
        now,
    )
    .await?;
    if matches!(message, MtMessage::StatusUpdate(_)) {
        update(
            tx,
            "product",
            vec![("latest_rtc_mt_status_update_time", now.into())],
            eq("product_imei", imei),
            user,
            now,
        )
        .await?;
    }
    Ok(Sent {
        rtc_message_history_id,
        correlation_id,
        message_type: message.message_type().as_str(),
        imei: imei.to_owned(),
        cbor,
        enqueued: false,
        payment_commands: match message {
            MtMessage::PaymentCommands(p) => p.commands.len() as u64,
            _ => 0,
        },
    })
}

/// `rtc_message_history.message_json`: the MT as JSON (`type`, `correlation_id` and
/// the message's fields by name).
pub fn mt_json(message: &MtMessage<'_>) -> Json {
    let mut m = Map::new();
    m.insert("type".into(), json!(message.message_type().as_str()));
    m.insert(
        "correlation_id".into(),
        json!(message.correlation_id().to_string()),
    );
    match message {
        MtMessage::StatusUpdate(s) => {
            let mut put = |k: &str, v: Json| {
                if !v.is_null() {
                    m.insert(k.into(), v);
                }
            };
            put("enabled", json!(s.enabled));
            put("tamper_enabled", json!(s.tamper_enabled));
            put("energy_limit", json!(s.energy_limit));
            put("capacity_limit", json!(s.capacity_limit));
            if let Some(p) = &s.parameters {
                let params: Map<String, Json> = p
                    .iter()
                    .map(|p| (p.name.to_owned(), json!(p.value)))
                    .collect();
                put("parameters", Json::Object(params));
            }
            put("server_time", json!(s.server_time));
        }
        MtMessage::Sync(_) => {}
        MtMessage::CommandRequest(c) => {
            m.insert("command".into(), json!(c.command));
        }
        MtMessage::PaymentCommands(p) => {
            let commands: Vec<Json> = p
                .commands
                .iter()
                .map(|c| {
                    json!({"category": c.category.as_str(), "value": c.value,
                           "transaction_id": c.transaction_id})
                })
                .collect();
            m.insert("commands".into(), Json::Array(commands));
        }
        MtMessage::SoftwareUpdate(s) => {
            m.insert("version".into(), json!(s.version));
            if let Some(u) = s.url {
                m.insert("url".into(), json!(u));
            }
            if let Some(h) = s.sha256 {
                m.insert("sha256".into(), json!(hex::encode(h)));
            }
            if let Some(n) = s.size {
                m.insert("size".into(), json!(n));
            }
        }
    }
    Json::Object(m)
}

/// How a ledger command travels to the unit. A force-reset travels as a zero-command
/// (value 0) so the unit zeroes its balance: the credit it held was returned by the
/// force-reset answer (see `docs/decisions.md`, "RTC glue").
pub fn mt_category(category: Category) -> PaymentCategory {
    match category {
        Category::Payment => PaymentCategory::Payment,
        Category::BadPayment => PaymentCategory::BadPayment,
        Category::ZeroCommand | Category::ForceReset => PaymentCategory::ZeroCommand,
    }
}

/// What a status update tells the unit, read from the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    /// `desired_enable_flag`.
    pub enabled: bool,
    /// `desired_tamper_flag`.
    pub tamper_enabled: bool,
    /// The pending `energy_limit` parameter, else the active one.
    pub energy_limit: Option<f64>,
    /// The active `capacity_limit` parameter.
    pub capacity_limit: Option<f64>,
    /// Other active `product_parameter` values whose type is a setting, by name.
    pub parameters: Vec<(String, String)>,
}

impl DesiredState {
    /// Reads the unit's desired state in `tx` (`actions::unit::unit_instructions` and
    /// its parameters). 404 for an unknown product.
    pub async fn load(tx: &mut Tx, imei: &str) -> Result<Self, ApiError> {
        let instructions = crate::actions::unit::unit_instructions(tx, imei).await?;
        let params = parameters(tx, imei).await?;
        let number = |name: &str, status: &str| {
            params
                .iter()
                .find(|(n, s, _)| n == name && s == status)
                .and_then(|(_, _, v)| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
        };
        let energy_limit =
            number("energy_limit", "pending").or_else(|| number("energy_limit", "active"));
        let capacity_limit = number("capacity_limit", "active");
        let parameters = params
            .iter()
            .filter(|(n, s, _)| s == "active" && n != "energy_limit" && n != "capacity_limit")
            .map(|(n, _, v)| (n.clone(), v.clone()))
            .collect();
        Ok(Self {
            enabled: instructions.desired_enable_flag,
            tamper_enabled: instructions.desired_tamper_flag,
            energy_limit,
            capacity_limit,
            parameters,
        })
    }

    /// Sends it as a status update (type 16) in `tx` (see [`send`]).
    pub async fn send(
        &self,
        state: &AppState,
        tx: Option<&mut Tx>,
        imei: &str,
        user: &str,
    ) -> Result<Sent, ApiError> {
        let params: Vec<Parameter<'_>> = self
            .parameters
            .iter()
            .map(|(name, value)| Parameter { name, value })
            .collect();
        let msg = MtMessage::StatusUpdate(StatusUpdate {
            correlation_id: new_correlation_id(),
            enabled: Some(self.enabled),
            tamper_enabled: Some(self.tamper_enabled),
            energy_limit: self.energy_limit,
            capacity_limit: self.capacity_limit,
            parameters: Some(Seq::new(&params)),
            server_time: u64::try_from(chrono::Utc::now().timestamp()).ok(),
        });
        send(state, tx, imei, &msg, user).await
    }
}

/// Active and pending setting parameters of a product: `(name, status, value)`,
/// newest first.
async fn parameters(tx: &mut Tx, imei: &str) -> Result<Vec<(String, String, String)>, ApiError> {
    let pp = || Alias::new("product_parameter");
    let pt = || Alias::new("parameter_type");
    let stmt = Query::select()
        .expr(Expr::col((pt(), Alias::new("name"))))
        .expr(Expr::col((pp(), Alias::new("status"))))
        .expr(Expr::col((pp(), Alias::new("value"))))
        .from(pp())
        .inner_join(
            pt(),
            Expr::col((pt(), Alias::new("parameter_type_id")))
                .equals((pp(), Alias::new("parameter_type_id"))),
        )
        .and_where(Expr::col((pp(), Alias::new("product_imei"))).eq(imei))
        .and_where(Expr::col((pp(), Alias::new("status"))).is_in(["active", "pending"]))
        .and_where(Expr::col((pt(), Alias::new("setting"))).eq(true))
        .order_by(
            (pp(), Alias::new("product_parameter_id")),
            sea_query::Order::Desc,
        )
        .to_owned();
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = tx.fetch_typed(&stmt).await?;
    let mut seen = std::collections::HashSet::new();
    Ok(rows
        .into_iter()
        .filter_map(|(name, status, value)| Some((name?, status?, value?)))
        // The newest row per (name, status).
        .filter(|(n, s, _)| seen.insert((n.clone(), s.clone())))
        .collect())
}

/// The product's `rtc_enabled_flag` and `dcm_enabled_flag`; 404 when unknown.
pub(crate) async fn rtc_flags(tx: &mut Tx, imei: &str) -> Result<(bool, bool), ApiError> {
    let stmt = Query::select()
        .columns(["rtc_enabled_flag", "dcm_enabled_flag"].map(Alias::new))
        .from(Alias::new("product"))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .to_owned();
    let (rtc, dcm): (Option<bool>, Option<bool>) = tx
        .fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| crate::actions::product_not_found(imei))?;
    Ok((rtc.unwrap_or(false), dcm.unwrap_or(false)))
}

/// Records what an RTC unit must get now, in one committed transaction, without enqueuing
/// it: a status update with its desired state and, for DCM units, every pending payment
/// command (`dcm::pending_commands`, oldest first, in messages of at most
/// [`PAYMENT_COMMANDS_PER_MESSAGE`]). They become the unit's record of pending commands
/// (`rtc_mt_pending`, replacing the previous one; see [`super::pending`]), which gateways
/// read when the unit connects. Nothing for a unit whose `rtc_enabled_flag` is false.
pub async fn record_pending(state: &AppState, imei: &str) -> Result<Vec<Sent>, ApiError> {
    commit_with_pending(state, state.db.begin().await?, imei).await
}

/// Commits a change to what a unit must get together with its record
/// ([`record_pending_in`] in `tx`, then commit): the change and the MT that carries it
/// stand or fall together. Enqueue the result with [`enqueue_after_commit`].
pub async fn commit_with_pending(
    state: &AppState,
    mut tx: Tx,
    imei: &str,
) -> Result<Vec<Sent>, ApiError> {
    let sent = record_pending_in(state, &mut tx, imei).await?;
    tx.commit().await?;
    Ok(sent)
}

/// [`record_pending`] in the caller's transaction, for a change that must never be committed
/// without the MT that carries it to the unit (a payment command, a force-reset): enqueue the
/// result with [`enqueue_after_commit`] once `tx` committed.
pub async fn record_pending_in(
    state: &AppState,
    tx: &mut Tx,
    imei: &str,
) -> Result<Vec<Sent>, ApiError> {
    let (rtc, dcm_unit) = rtc_flags(tx, imei).await?;
    if !rtc {
        return Ok(Vec::new());
    }
    let desired = DesiredState::load(tx, imei).await?;
    let mut sent = vec![desired.send(state, Some(&mut *tx), imei, RTC_USER).await?];
    if dcm_unit {
        let pending = dcm::pending_commands(tx, imei).await?;
        for chunk in pending.chunks(PAYMENT_COMMANDS_PER_MESSAGE) {
            let commands: Vec<MtPaymentCommand<'_>> = chunk
                .iter()
                .map(|c| MtPaymentCommand {
                    category: mt_category(c.category),
                    value: if c.category == Category::ForceReset {
                        0
                    } else {
                        c.value
                    },
                    transaction_id: &c.transaction_id,
                })
                .collect();
            let msg = MtMessage::PaymentCommands(PaymentCommands {
                correlation_id: new_correlation_id(),
                commands: Seq::new(&commands),
            });
            sent.push(send(state, Some(&mut *tx), imei, &msg, RTC_USER).await?);
        }
    }
    super::pending::replace(tx, imei, &sent).await?;
    Ok(sent)
}

/// Enqueues MT commands recorded in a transaction that has committed ([`record_pending_in`]),
/// in order, never failing the request: the change stands, and the unit gets the commands
/// from the record when it next connects (a failure is logged, its MT row says `failed`).
pub async fn enqueue_after_commit(state: &AppState, imei: &str, mut sent: Vec<Sent>) {
    for s in &mut sent {
        if let Err(e) = s.enqueue(state).await {
            tracing::error!(imei, error = %e, "RTC: recorded changes not queued for the unit");
            return;
        }
    }
}

/// A sync request (type 17).
pub fn sync_message() -> MtMessage<'static> {
    MtMessage::Sync(SyncRequest {
        correlation_id: new_correlation_id(),
    })
}

/// A command request (type 18).
pub fn command_message(command: &str) -> MtMessage<'_> {
    MtMessage::CommandRequest(CommandRequest {
        correlation_id: new_correlation_id(),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_travel_as_the_protocol_knows_them() {
        assert_eq!(mt_category(Category::Payment), PaymentCategory::Payment);
        assert_eq!(
            mt_category(Category::BadPayment),
            PaymentCategory::BadPayment
        );
        assert_eq!(
            mt_category(Category::ZeroCommand),
            PaymentCategory::ZeroCommand
        );
        assert_eq!(
            mt_category(Category::ForceReset),
            PaymentCategory::ZeroCommand
        );
    }

    #[test]
    fn mt_messages_render_as_json() {
        let params = [Parameter {
            name: "lvd_voltage",
            value: "11.8",
        }];
        let id = CorrelationId([0xab; 16]);
        let su = MtMessage::StatusUpdate(StatusUpdate {
            correlation_id: id,
            enabled: Some(true),
            tamper_enabled: Some(false),
            energy_limit: Some(120.5),
            capacity_limit: None,
            parameters: Some(Seq::new(&params)),
            server_time: Some(1_518_543_700),
        });
        assert_eq!(
            mt_json(&su),
            json!({"type": "status_update", "correlation_id": "ab".repeat(16),
                   "enabled": true, "tamper_enabled": false, "energy_limit": 120.5,
                   "parameters": {"lvd_voltage": "11.8"}, "server_time": 1_518_543_700})
        );
        let cmds = [MtPaymentCommand {
            category: PaymentCategory::Payment,
            value: 2_592_000,
            transaction_id: "tx-1",
        }];
        let pc = MtMessage::PaymentCommands(PaymentCommands {
            correlation_id: id,
            commands: Seq::new(&cmds),
        });
        assert_eq!(
            mt_json(&pc)["commands"],
            json!([{"category": "payment", "value": 2_592_000, "transaction_id": "tx-1"}])
        );
        assert_eq!(mt_json(&command_message("AT+CSQ"))["command"], "AT+CSQ");
        assert_eq!(mt_json(&sync_message())["type"], "sync");
    }
}
