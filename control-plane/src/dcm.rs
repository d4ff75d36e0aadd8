//! Device credit management (DCM): the payment-command ledger of each unit,
//! its reported balance and the final balances of zero-commands.
//!
//! Every function here takes the caller's [`Tx`] and starts by locking the
//! product row (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the single
//! writer connection already serialises write transactions). Every read
//! that decides whether a command is accepted runs after that lock, inside
//! the same transaction, so two requests for one unit are decided one after
//! the other and never from the same stale snapshot. `transaction_id` is
//! also `UNIQUE` in the schema, which settles races between two units.
//!
//! # The ledger
//! A unit's *cycle* is the set of its commands that are not `void`. A
//! zero-command's final balance, or a force-reset, closes the cycle: every
//! earlier command becomes `void`. Within a cycle:
//! - `added` is the sum of the `payment` values, `removed` the sum of the
//!   magnitudes of the `bad-payment` values, and `removed <= added` always
//!   ("you may not remove more credit than has ever been added");
//! - at most one `zero-command` is unacknowledged, and while one is, no
//!   command is accepted.
//!
//! # Status
//! A command is created `pending`; the gateway sets it to `acknowledged`
//! when the unit confirms it ([`acknowledge`]). [`pending_commands`] is what
//! still has to be delivered to the unit: commands that are neither void
//! nor acknowledged, oldest first.
//!
//! # Service functions for the gateway
//! [`pending_commands`], [`acknowledge`], [`record_balance`] and
//! [`record_final_balance`] take `&mut Tx` so the gateway composes them with
//! its own writes; the caller commits.

use chrono::{Duration, NaiveDateTime};
use sea_query::{Expr, LockType, Order, Query, Value};
use serde_json::{json, Value as Json};

use crate::catalogue::{Catalogue, Column, ColumnType};
use crate::db::{Db, DbError, Row, Tx};
use crate::error::ApiError;
use crate::outbox;
use crate::query::{self, Visibility};
use crate::rows::{a, names, to_columns, RowExt};
use crate::values::format_datetime;

/// Counts payment-command lifecycle events after the API request:
/// `sent` (on the bus for the gateways), `acknowledged` (confirmed by the
/// unit), `voided` (by a force-reset or a closed zero-command cycle). Callers
/// count after their transaction commits, so a rollback is never counted.
pub fn count_events(event: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("smartsolar_dcm_payment_command_events_total", "event" => event)
            .increment(n);
    }
}

/// The most credit, in seconds, a unit can hold, and so the largest
/// magnitude of one payment command and the largest balance or final
/// balance a unit may report: `i32::MAX` (about 68 years). The RTC protocol
/// carries credit as CBOR integers of seconds (`docs/rtc-protocol.md`,
/// messages 3, 7 and 19) and states this bound, so a firmware can keep its
/// balance in a signed 32-bit register. Checking it at the API keeps every
/// ledger sum, and `at + balance` for the expected expiry, far inside `i64`
/// and chrono's range; the ledger arithmetic is checked as well.
pub const MAX_CREDIT_SECONDS: i64 = i32::MAX as i64;

/// A credit value within [`MAX_CREDIT_SECONDS`] either way, or the error
/// that names the bound.
pub fn check_credit(what: &'static str, value: i64) -> Result<i64, DcmError> {
    if value.checked_abs().is_some_and(|v| v <= MAX_CREDIT_SECONDS) {
        Ok(value)
    } else {
        Err(DcmError::OutOfRange { what, value })
    }
}

/// `status` of a command not yet confirmed by the unit.
pub const STATUS_PENDING: &str = "pending";
/// `status` of a command the unit has confirmed.
pub const STATUS_ACKNOWLEDGED: &str = "acknowledged";
/// `status` of a final balance that closed its cycle and was published.
pub const FINAL_BALANCE_RECEIVED: &str = "received";
/// `status` of a final balance whose zero-command had already been voided
/// by a force-reset: stored for the record, not published (the force-reset
/// response already returned the unit's credit).
pub const FINAL_BALANCE_SUPERSEDED: &str = "superseded";

/// The category of a payment command (`payment_command.category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Adds credit: `value > 0`.
    Payment,
    /// Removes credit: `value < 0`.
    BadPayment,
    /// Zeroes the unit, which answers with its final balance: `value == 0`.
    ZeroCommand,
    /// Written by [`force_reset`] only: `value == 0`.
    ForceReset,
}

impl Category {
    /// Every category (the OpenAPI document lists them).
    pub const ALL: [Self; 4] = [
        Self::Payment,
        Self::BadPayment,
        Self::ZeroCommand,
        Self::ForceReset,
    ];

    /// The spelling in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::BadPayment => "bad-payment",
            Self::ZeroCommand => "zero-command",
            Self::ForceReset => "force-reset",
        }
    }

    /// Parses the API spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "payment" => Some(Self::Payment),
            "bad-payment" => Some(Self::BadPayment),
            "zero-command" => Some(Self::ZeroCommand),
            "force-reset" => Some(Self::ForceReset),
            _ => None,
        }
    }
}

impl TryFrom<String> for Category {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or_else(|| format!("no payment-command category '{text}'"))
    }
}

/// Why a DCM operation was refused. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum DcmError {
    /// 404: no such product, or not visible to the user.
    #[error("No product with product_imei '{0}'")]
    UnknownProduct(String),
    /// 400: the product's `dcm_enabled_flag` is false.
    #[error(
        "Product {0} is not DCM enabled; payment commands are only accepted for DCM enabled units"
    )]
    NotDcmEnabled(String),
    /// 400 (field `transaction_id`): the id was used before.
    #[error("transaction_id '{0}' has already been used; the duplicate was rejected and nothing was changed")]
    DuplicateTransaction(String),
    /// 400 (field `value`): the value's sign does not fit the category.
    #[error("a {category} payment_command must have value {rule}, got {value}")]
    BadValue {
        category: &'static str,
        rule: &'static str,
        value: i64,
    },
    /// 400 (field `category`): force-reset has its own endpoint.
    #[error("category 'force-reset' cannot be added as a payment_command; use /products/<imei>/force_reset")]
    ForceResetCategory,
    /// 400: a zero-command has not been acknowledged yet.
    #[error("Product {imei} has an unacknowledged zero-command (payment_command_id {zero_command_id}); no payment_commands are accepted until the unit acknowledges it or the unit is force-reset")]
    ZeroCommandPending { imei: String, zero_command_id: i64 },
    /// 400 (field `value`): a bad-payment would remove more than was added.
    #[error("this bad-payment would remove {requested} but only {available} of the {added} added since the last reset is left to remove; you may not remove more credit than has ever been added")]
    RemovesMoreThanAdded {
        requested: i64,
        added: i64,
        available: i64,
    },
    /// 404 (gateway): no such command for this unit.
    #[error("No payment_command {id} for product {imei}")]
    UnknownCommand { imei: String, id: i64 },
    /// 400 (gateway): a final balance names a command that is not a zero-command.
    #[error("payment_command {0} is not a zero-command")]
    NotZeroCommand(i64),
    /// 400 (gateway): a unit reported a negative balance.
    #[error("a balance can never be negative, got {0}")]
    NegativeBalance(i64),
    /// 400 (field `value`, or `balance` from a unit): beyond what a unit can hold.
    #[error("{what} must be between -{max} and {max} seconds (the most credit a unit can hold, MAX_CREDIT_SECONDS), got {value}", max = MAX_CREDIT_SECONDS)]
    OutOfRange { what: &'static str, value: i64 },
    /// 400: the cycle's sums would leave the range of the ledger (only
    /// reachable with data written around the API's bounds).
    #[error("the ledger of product {0} would overflow; force-reset the unit")]
    LedgerOverflow(String),
    /// The database failed (or a constraint fired that is not one of the above).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<DcmError> for ApiError {
    fn from(err: DcmError) -> Self {
        match err {
            DcmError::UnknownProduct(_) | DcmError::UnknownCommand { .. } => {
                Self::NotFound(err.to_string())
            }
            DcmError::DuplicateTransaction(_) => Self::field("transaction_id", err.to_string()),
            DcmError::BadValue { .. }
            | DcmError::RemovesMoreThanAdded { .. }
            | DcmError::OutOfRange { .. } => Self::field("value", err.to_string()),
            DcmError::LedgerOverflow(_) => Self::BadRequest(err.to_string()),
            DcmError::ForceResetCategory => Self::field("category", err.to_string()),
            DcmError::NegativeBalance(_) => Self::field("balance", err.to_string()),
            DcmError::NotDcmEnabled(_)
            | DcmError::ZeroCommandPending { .. }
            | DcmError::NotZeroCommand(_) => Self::BadRequest(err.to_string()),
            DcmError::Db(db) => db.into(),
        }
    }
}

/// A new command as a client sends it to `add_payment_command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub category: Category,
    pub value: i64,
    pub transaction_id: String,
}

/// One `payment_command` row (selected by `COMMAND_COLUMNS`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentCommand {
    pub payment_command_id: i64,
    pub product_imei: String,
    pub value: i64,
    // The column has a CHECK constraint on the four spellings.
    #[sqlx(try_from = "String")]
    pub category: Category,
    pub void: bool,
    pub status: Option<String>,
    pub transaction_id: String,
    pub created_at: Option<NaiveDateTime>,
    pub modified_at: Option<NaiveDateTime>,
}

impl PaymentCommand {
    /// `true` once the unit has confirmed the command.
    pub fn is_acknowledged(&self) -> bool {
        self.status.as_deref() == Some(STATUS_ACKNOWLEDGED)
    }
}

/// The sums of the current cycle (the commands that are not void).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Sum of the `payment` values.
    pub added: i64,
    /// Sum of the magnitudes of the `bad-payment` values.
    pub removed: i64,
    /// Net value of the payments and bad-payments not yet acknowledged.
    pub outstanding: i64,
    /// The unacknowledged zero-command, if any.
    pub pending_zero_command: Option<i64>,
}

/// The latest balance a unit reported (one `balance` row per unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub balance: i64,
    pub expected_expiry: NaiveDateTime,
    /// When the unit reported it (the row's `modified_at`, else `created_at`).
    pub reported_at: NaiveDateTime,
}

/// What [`force_reset`] returns to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForceReset {
    /// Net value of the payments and bad-payments the unit had not yet
    /// acknowledged (now void).
    pub outstanding_payments: i64,
    /// The last balance the unit reported, if it ever did.
    pub last_known_balance: Option<i64>,
    /// The `force-reset` command written for the unit.
    pub command: PaymentCommand,
    /// How many earlier commands it made void.
    pub voided: u64,
}

/// One `final_balance` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FinalBalance {
    pub final_balance_id: i64,
    pub product_imei: String,
    pub final_balance: i64,
    pub total_added: i64,
    pub zero_command_id: i64,
    pub status: Option<String>,
    pub created_at: Option<NaiveDateTime>,
}

impl FinalBalance {
    /// The `data` published on the `dcm` channel.
    pub fn to_json(&self) -> Json {
        json!({
            "final_balance_id": self.final_balance_id,
            "product_imei": self.product_imei,
            "final_balance": self.final_balance,
            "total_added": self.total_added,
            "zero_command_id": self.zero_command_id,
            "status": self.status,
            "created_at": self.created_at.as_ref().map(format_datetime),
        })
    }
}

/// What [`record_final_balance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalBalanceOutcome {
    pub final_balance: FinalBalance,
    /// `false` when this zero-command already had a final balance (a
    /// retried report): nothing was written again.
    pub created: bool,
    /// The outbox id of the `dcm` notification, when one was published.
    pub notification_id: Option<i64>,
    /// How many earlier commands the closed cycle made void.
    pub voided: u64,
    /// The zero-command was acknowledged by this report (it was not yet).
    pub acknowledged: bool,
}

/// The columns of [`PaymentCommand`], in its field order.
const COMMAND_COLUMNS: [&str; 9] = [
    "payment_command_id",
    "product_imei",
    "value",
    "category",
    "void",
    "status",
    "transaction_id",
    "created_at",
    "modified_at",
];

fn select_commands() -> sea_query::SelectStatement {
    let mut sel = Query::select();
    sel.columns(COMMAND_COLUMNS.map(a))
        .from(a("payment_command"));
    sel
}

/// Locks the product row for the rest of `tx` and returns its
/// `dcm_enabled_flag`. With an ENTITY `visibility`, another entity's
/// product is reported as unknown (404), exactly like a missing one.
pub async fn lock_product(
    tx: &mut Tx,
    cat: &Catalogue,
    imei: &str,
    visibility: &Visibility,
) -> Result<bool, DcmError> {
    let product = cat.table("product").expect("the catalogue has products");
    let mut stmt = query::compile_get(
        cat,
        product,
        Value::String(Some(Box::new(imei.to_string()))),
        visibility,
    );
    // Only the product row itself is locked; on SQLite this renders nothing
    // and the single writer connection provides the serialisation.
    stmt.lock_with_tables(LockType::Update, [a("product")]);
    let columns: Vec<&Column> = product.readable_columns().collect();
    let row = tx
        .fetch_optional(&stmt, &columns)
        .await?
        .ok_or_else(|| DcmError::UnknownProduct(imei.to_string()))?;
    Ok(row
        .get("dcm_enabled_flag")
        .and_then(Json::as_bool)
        .unwrap_or(false))
}

/// The commands of the current cycle (not void), oldest first.
async fn cycle(tx: &mut Tx, imei: &str) -> Result<Vec<PaymentCommand>, DbError> {
    let mut stmt = select_commands();
    stmt.and_where(Expr::col(a("product_imei")).eq(imei))
        .and_where(Expr::col(a("void")).eq(false))
        .order_by(a("payment_command_id"), Order::Asc);
    fetch_commands(tx, &stmt).await
}

/// Runs a payment-command select and decodes its rows.
async fn fetch_commands(
    tx: &mut Tx,
    stmt: &sea_query::SelectStatement,
) -> Result<Vec<PaymentCommand>, DbError> {
    tx.fetch_typed(stmt).await
}

/// The cycle's sums, every step checked: `None` when one leaves `i64`.
fn summarise(commands: &[PaymentCommand]) -> Option<Ledger> {
    let mut ledger = Ledger::default();
    for c in commands {
        match c.category {
            Category::Payment => ledger.added = ledger.added.checked_add(c.value)?,
            Category::BadPayment => {
                ledger.removed = ledger.removed.checked_add(c.value.checked_neg()?)?
            }
            Category::ZeroCommand if !c.is_acknowledged() => {
                ledger.pending_zero_command = Some(c.payment_command_id);
            }
            Category::ZeroCommand | Category::ForceReset => {}
        }
        if matches!(c.category, Category::Payment | Category::BadPayment) && !c.is_acknowledged() {
            ledger.outstanding = ledger.outstanding.checked_add(c.value)?;
        }
    }
    Some(ledger)
}

/// The sums of a unit's current cycle, read inside `tx` (call after
/// [`lock_product`] when the result decides a write).
pub async fn ledger(tx: &mut Tx, imei: &str) -> Result<Ledger, DcmError> {
    summarise(&cycle(tx, imei).await?).ok_or_else(|| DcmError::LedgerOverflow(imei.into()))
}

async fn transaction_id_used(tx: &mut Tx, transaction_id: &str) -> Result<bool, DbError> {
    let stmt = Query::select()
        .expr(Expr::col(a("payment_command_id")).count())
        .from(a("payment_command"))
        .and_where(Expr::col(a("transaction_id")).eq(transaction_id))
        .to_owned();
    Ok(tx.fetch_i64(&stmt).await? > 0)
}

/// Checks the value's sign against the category (the spec's rules).
pub fn check_value(command: &NewCommand) -> Result<(), DcmError> {
    check_credit("a payment_command value", command.value)?;
    let (ok, rule) = match command.category {
        Category::Payment => (command.value > 0, "> 0"),
        Category::BadPayment => (command.value < 0, "< 0"),
        Category::ZeroCommand => (command.value == 0, "== 0"),
        Category::ForceReset => return Err(DcmError::ForceResetCategory),
    };
    if ok {
        Ok(())
    } else {
        Err(DcmError::BadValue {
            category: command.category.as_str(),
            rule,
            value: command.value,
        })
    }
}

async fn insert_command(
    tx: &mut Tx,
    imei: &str,
    category: Category,
    value: i64,
    transaction_id: &str,
    actor: &str,
    now: NaiveDateTime,
) -> Result<PaymentCommand, DcmError> {
    let stmt = Query::insert()
        .into_table(a("payment_command"))
        .columns(
            [
                "product_imei",
                "value",
                "category",
                "void",
                "status",
                "transaction_id",
                "created_at",
                "created_by",
            ]
            .map(a),
        )
        .values_panic([
            imei.into(),
            value.into(),
            category.as_str().into(),
            false.into(),
            STATUS_PENDING.into(),
            transaction_id.into(),
            now.into(),
            actor.into(),
        ])
        .returning(Query::returning().columns(COMMAND_COLUMNS.map(a)))
        .to_owned();
    match tx.fetch_typed_optional(&stmt).await {
        Ok(Some(command)) => Ok(command),
        Ok(None) => Err(DcmError::Db(DbError::Other(sqlx::Error::RowNotFound))),
        // Another unit's command took the id between our check and insert.
        Err(DbError::Unique { .. }) => Err(DcmError::DuplicateTransaction(transaction_id.into())),
        Err(e) => Err(e.into()),
    }
}

/// Adds a payment command for a unit (the `add_payment_command` endpoint).
///
/// Refuses, writing nothing: a value whose sign does not fit the category;
/// `force-reset` (see [`force_reset`]); an unknown or invisible product; a
/// unit that is not DCM enabled; a used `transaction_id`; any command while
/// a zero-command is unacknowledged; a bad-payment that would make the
/// cycle's removals exceed its payments.
pub async fn add_payment_command(
    tx: &mut Tx,
    cat: &Catalogue,
    imei: &str,
    command: &NewCommand,
    actor: &str,
    visibility: &Visibility,
    now: NaiveDateTime,
) -> Result<PaymentCommand, DcmError> {
    check_value(command)?;
    if !lock_product(tx, cat, imei, visibility).await? {
        return Err(DcmError::NotDcmEnabled(imei.into()));
    }
    if transaction_id_used(tx, &command.transaction_id).await? {
        return Err(DcmError::DuplicateTransaction(
            command.transaction_id.clone(),
        ));
    }
    let ledger = ledger(tx, imei).await?;
    if let Some(zero_command_id) = ledger.pending_zero_command {
        return Err(DcmError::ZeroCommandPending {
            imei: imei.into(),
            zero_command_id,
        });
    }
    if command.category == Category::BadPayment {
        // Bounded by check_credit, so the negation cannot overflow.
        let requested = command.value.saturating_neg();
        let available = ledger
            .added
            .checked_sub(ledger.removed)
            .ok_or_else(|| DcmError::LedgerOverflow(imei.into()))?;
        if requested > available {
            return Err(DcmError::RemovesMoreThanAdded {
                requested,
                added: ledger.added,
                available,
            });
        }
    }
    insert_command(
        tx,
        imei,
        command.category,
        command.value,
        &command.transaction_id,
        actor,
        now,
    )
    .await
}

/// Marks every command of the unit that is not void yet, and older than
/// `before` (all when `None`), as void.
async fn void_commands(
    tx: &mut Tx,
    imei: &str,
    before: Option<i64>,
    actor: &str,
    now: NaiveDateTime,
) -> Result<u64, DbError> {
    let mut stmt = Query::update();
    stmt.table(a("payment_command"))
        .value(a("void"), true)
        .value(a("modified_at"), now)
        .value(a("modified_by"), actor)
        .and_where(Expr::col(a("product_imei")).eq(imei))
        .and_where(Expr::col(a("void")).eq(false));
    if let Some(id) = before {
        stmt.and_where(Expr::col(a("payment_command_id")).lt(id));
    }
    tx.execute(&stmt).await
}

/// Force-resets a unit (the `force_reset` endpoint): voids every earlier
/// command, writes a `force-reset` command for the unit, sets the stored
/// balance to 0, and returns what the unit had not yet acknowledged and its
/// last reported balance. Allowed while a zero-command is unacknowledged
/// (that is what it is for).
pub async fn force_reset(
    tx: &mut Tx,
    cat: &Catalogue,
    imei: &str,
    transaction_id: &str,
    actor: &str,
    visibility: &Visibility,
    now: NaiveDateTime,
) -> Result<ForceReset, DcmError> {
    if !lock_product(tx, cat, imei, visibility).await? {
        return Err(DcmError::NotDcmEnabled(imei.into()));
    }
    if transaction_id_used(tx, transaction_id).await? {
        return Err(DcmError::DuplicateTransaction(transaction_id.into()));
    }
    let ledger = ledger(tx, imei).await?;
    let last_known_balance = balance(tx, imei).await?.map(|b| b.balance);
    let voided = void_commands(tx, imei, None, actor, now).await?;
    let command = insert_command(
        tx,
        imei,
        Category::ForceReset,
        0,
        transaction_id,
        actor,
        now,
    )
    .await?;
    store_balance(tx, imei, 0, now, actor, true).await?;
    Ok(ForceReset {
        outstanding_payments: ledger.outstanding,
        last_known_balance,
        command,
        voided,
    })
}

/// The commands still to be delivered to the unit (neither void nor
/// acknowledged), oldest first: what the gateway sends, in this order.
pub async fn pending_commands(tx: &mut Tx, imei: &str) -> Result<Vec<PaymentCommand>, DbError> {
    fetch_commands(tx, &pending_stmt(imei)).await
}

fn pending_stmt(imei: &str) -> sea_query::SelectStatement {
    let mut stmt = select_commands();
    stmt.and_where(Expr::col(a("product_imei")).eq(imei))
        .and_where(Expr::col(a("void")).eq(false))
        .and_where(
            Expr::col(a("status"))
                .is_null()
                .or(Expr::col(a("status")).ne(STATUS_ACKNOWLEDGED)),
        )
        .order_by(a("payment_command_id"), Order::Asc);
    stmt
}

async fn command_of(tx: &mut Tx, imei: &str, id: i64) -> Result<PaymentCommand, DcmError> {
    let mut stmt = select_commands();
    stmt.and_where(Expr::col(a("payment_command_id")).eq(id))
        .and_where(Expr::col(a("product_imei")).eq(imei));
    tx.fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| DcmError::UnknownCommand {
            imei: imei.into(),
            id,
        })
}

async fn set_status(
    tx: &mut Tx,
    id: i64,
    status: &str,
    actor: &str,
    at: NaiveDateTime,
) -> Result<(), DbError> {
    let stmt = Query::update()
        .table(a("payment_command"))
        .value(a("status"), status)
        .value(a("modified_at"), at)
        .value(a("modified_by"), actor)
        .and_where(Expr::col(a("payment_command_id")).eq(id))
        .to_owned();
    tx.execute(&stmt).await.map(drop)
}

/// What [`acknowledge`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Acknowledged {
    /// The command as it is now.
    pub command: PaymentCommand,
    /// `false` when it was already acknowledged (a repeated confirmation).
    pub newly: bool,
}

/// The unit confirmed command `id` (gateway). Idempotent: a repeated
/// acknowledgement changes nothing. `reported_balance`, when the unit sent
/// one with its confirmation, is recorded as by [`record_balance`].
/// Acknowledging a void command only records the confirmation.
pub async fn acknowledge(
    tx: &mut Tx,
    cat: &Catalogue,
    imei: &str,
    id: i64,
    reported_balance: Option<i64>,
    actor: &str,
    at: NaiveDateTime,
) -> Result<Acknowledged, DcmError> {
    lock_product(tx, cat, imei, &Visibility::Global).await?;
    let mut command = command_of(tx, imei, id).await?;
    let newly = !command.is_acknowledged();
    if newly {
        set_status(tx, id, STATUS_ACKNOWLEDGED, actor, at).await?;
        command.status = Some(STATUS_ACKNOWLEDGED.into());
        command.modified_at = Some(at);
    }
    if let Some(balance) = reported_balance {
        if balance < 0 {
            return Err(DcmError::NegativeBalance(balance));
        }
        check_credit("a reported balance", balance)?;
        store_balance(tx, imei, balance, at, actor, false).await?;
    }
    Ok(Acknowledged { command, newly })
}

const BALANCE_COLUMNS: [(&str, ColumnType); 5] = [
    ("balance_id", ColumnType::Int),
    ("balance", ColumnType::Int),
    ("expected_expiry", ColumnType::Datetime),
    ("created_at", ColumnType::Datetime),
    ("modified_at", ColumnType::Datetime),
];

fn balance_stmt(imei: &str) -> sea_query::SelectStatement {
    Query::select()
        .columns(names(&BALANCE_COLUMNS))
        .from(a("balance"))
        .and_where(Expr::col(a("product_imei")).eq(imei))
        .order_by(a("balance_id"), Order::Desc)
        .limit(1)
        .to_owned()
}

async fn balance_row(tx: &mut Tx, imei: &str) -> Result<Option<(i64, Balance)>, DbError> {
    let stmt = balance_stmt(imei);
    let columns: Vec<Column> = to_columns(&BALANCE_COLUMNS);
    let refs: Vec<&Column> = columns.iter().collect();
    Ok(tx
        .fetch_optional(&stmt, &refs)
        .await?
        .and_then(|r| decode_balance(&r)))
}

fn decode_balance(row: &Row) -> Option<(i64, Balance)> {
    let reported_at = row.time("modified_at").or_else(|| row.time("created_at"))?;
    Some((
        row.int("balance_id")?,
        Balance {
            balance: row.int("balance")?,
            expected_expiry: row.time("expected_expiry")?,
            reported_at,
        },
    ))
}

/// The unit's latest balance, read inside `tx`.
pub async fn balance(tx: &mut Tx, imei: &str) -> Result<Option<Balance>, DbError> {
    Ok(balance_row(tx, imei).await?.map(|(_, b)| b))
}

/// Keeps one `balance` row per unit. A report older than the stored one is
/// ignored (reports can arrive out of order) unless `force` (a reset by
/// SMARTSolar itself, which is always the newest fact).
async fn store_balance(
    tx: &mut Tx,
    imei: &str,
    balance: i64,
    at: NaiveDateTime,
    actor: &str,
    force: bool,
) -> Result<Balance, DbError> {
    let expected_expiry = at + Duration::seconds(balance);
    let fresh = Balance {
        balance,
        expected_expiry,
        reported_at: at,
    };
    match balance_row(tx, imei).await? {
        Some((_, stored)) if stored.reported_at > at && !force => Ok(stored),
        Some((id, _)) => {
            let stmt = Query::update()
                .table(a("balance"))
                .value(a("balance"), balance)
                .value(a("expected_expiry"), expected_expiry)
                .value(a("modified_at"), at)
                .value(a("modified_by"), actor)
                .and_where(Expr::col(a("balance_id")).eq(id))
                .to_owned();
            tx.execute(&stmt).await?;
            Ok(fresh)
        }
        None => {
            let stmt = Query::insert()
                .into_table(a("balance"))
                .columns(
                    [
                        "product_imei",
                        "balance",
                        "expected_expiry",
                        "created_at",
                        "created_by",
                    ]
                    .map(a),
                )
                .values_panic([
                    imei.into(),
                    balance.into(),
                    expected_expiry.into(),
                    at.into(),
                    actor.into(),
                ])
                .to_owned();
            tx.execute(&stmt).await?;
            Ok(fresh)
        }
    }
}

/// A balance the unit reported at `at` (gateway): stored as the unit's
/// latest balance with `expected_expiry = at + balance` seconds, unless a
/// newer one is already stored. Returns the balance now stored.
pub async fn record_balance(
    tx: &mut Tx,
    cat: &Catalogue,
    imei: &str,
    balance: i64,
    actor: &str,
    at: NaiveDateTime,
) -> Result<Balance, DcmError> {
    if balance < 0 {
        return Err(DcmError::NegativeBalance(balance));
    }
    check_credit("a reported balance", balance)?;
    lock_product(tx, cat, imei, &Visibility::Global).await?;
    Ok(store_balance(tx, imei, balance, at, actor, false).await?)
}

/// The columns of [`FinalBalance`], in its field order.
const FINAL_BALANCE_COLUMNS: [&str; 7] = [
    "final_balance_id",
    "product_imei",
    "final_balance",
    "total_added",
    "zero_command_id",
    "status",
    "created_at",
];

/// The final balance of a zero-command, if one was recorded.
pub async fn final_balance_of(
    tx: &mut Tx,
    zero_command_id: i64,
) -> Result<Option<FinalBalance>, DbError> {
    let stmt = Query::select()
        .columns(FINAL_BALANCE_COLUMNS.map(a))
        .from(a("final_balance"))
        .and_where(Expr::col(a("zero_command_id")).eq(zero_command_id))
        .to_owned();
    tx.fetch_typed_optional(&stmt).await
}

/// The unit's FinalBalance reply to zero-command `zero_command_id`
/// (gateway). In one transaction: stores it in `final_balance` with the
/// cycle's net credit as `total_added`, voids every earlier command, marks
/// the zero-command acknowledged, sets the stored balance to 0, and
/// publishes the final balance on the `dcm` channel through the outbox.
///
/// Idempotent: a second report for the same zero-command returns the first
/// and writes nothing (no second notification, so no double refund). A
/// report for a zero-command that a force-reset already voided is stored
/// as `superseded` and not published: the force-reset response already
/// returned that credit.
pub async fn record_final_balance(
    tx: &mut Tx,
    cat: &Catalogue,
    imei: &str,
    zero_command_id: i64,
    final_balance: i64,
    actor: &str,
    at: NaiveDateTime,
) -> Result<FinalBalanceOutcome, DcmError> {
    if final_balance < 0 {
        return Err(DcmError::NegativeBalance(final_balance));
    }
    check_credit("a final balance", final_balance)?;
    lock_product(tx, cat, imei, &Visibility::Global).await?;
    let zero = command_of(tx, imei, zero_command_id).await?;
    if zero.category != Category::ZeroCommand {
        return Err(DcmError::NotZeroCommand(zero_command_id));
    }
    if let Some(existing) = final_balance_of(tx, zero_command_id).await? {
        return Ok(FinalBalanceOutcome {
            final_balance: existing,
            created: false,
            notification_id: None,
            voided: 0,
            acknowledged: false,
        });
    }
    let superseded = zero.void;
    let total_added: i64 = if superseded {
        0
    } else {
        cycle(tx, imei)
            .await?
            .iter()
            .filter(|c| c.payment_command_id < zero_command_id)
            .filter(|c| matches!(c.category, Category::Payment | Category::BadPayment))
            .try_fold(0i64, |sum, c| sum.checked_add(c.value))
            .ok_or_else(|| DcmError::LedgerOverflow(imei.into()))?
    };
    let status = if superseded {
        FINAL_BALANCE_SUPERSEDED
    } else {
        FINAL_BALANCE_RECEIVED
    };
    let stmt = Query::insert()
        .into_table(a("final_balance"))
        .columns(
            [
                "product_imei",
                "final_balance",
                "total_added",
                "zero_command_id",
                "status",
                "created_at",
                "created_by",
            ]
            .map(a),
        )
        .values_panic([
            imei.into(),
            final_balance.into(),
            total_added.into(),
            zero_command_id.into(),
            status.into(),
            at.into(),
            actor.into(),
        ])
        .returning(Query::returning().columns(FINAL_BALANCE_COLUMNS.map(a)))
        .to_owned();
    let stored: FinalBalance = tx
        .fetch_typed_optional(&stmt)
        .await?
        .ok_or(DcmError::Db(DbError::Other(sqlx::Error::RowNotFound)))?;
    let acknowledged = !zero.is_acknowledged();
    if acknowledged {
        set_status(tx, zero_command_id, STATUS_ACKNOWLEDGED, actor, at).await?;
    }
    if superseded {
        return Ok(FinalBalanceOutcome {
            final_balance: stored,
            created: true,
            notification_id: None,
            voided: 0,
            acknowledged,
        });
    }
    let voided = void_commands(tx, imei, Some(zero_command_id), actor, at).await?;
    store_balance(tx, imei, 0, at, actor, true).await?;
    let notification_id =
        outbox::enqueue(tx, outbox::DCM, Some(imei), stored.to_json(), at).await?;
    Ok(FinalBalanceOutcome {
        final_balance: stored,
        created: true,
        notification_id: Some(notification_id),
        voided,
        acknowledged,
    })
}

/// What `balance_and_pending_payments` shows: the unit's latest balance and
/// its pending commands, newest first. Read from the read pool (a snapshot
/// per statement); nothing here decides a write.
pub async fn balance_and_pending(
    db: &Db,
    imei: &str,
) -> Result<(Option<Balance>, Vec<PaymentCommand>), DbError> {
    let columns: Vec<Column> = to_columns(&BALANCE_COLUMNS);
    let refs: Vec<&Column> = columns.iter().collect();
    let balance = db
        .fetch_optional(&balance_stmt(imei), &refs)
        .await?
        .and_then(|r| decode_balance(&r))
        .map(|(_, b)| b);
    let mut stmt = pending_stmt(imei);
    stmt.clear_order_by()
        .order_by(a("payment_command_id"), Order::Desc);
    let pending = db.fetch_typed(&stmt).await?;
    Ok((balance, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(category: Category, value: i64) -> PaymentCommand {
        PaymentCommand {
            payment_command_id: 1,
            product_imei: "1".into(),
            value,
            category,
            void: false,
            status: None,
            transaction_id: "t".into(),
            created_at: None,
            modified_at: None,
        }
    }

    #[test]
    fn credit_is_bounded_by_what_a_unit_holds() {
        for bad in [
            i64::MIN,
            i64::MAX,
            MAX_CREDIT_SECONDS + 1,
            -MAX_CREDIT_SECONDS - 1,
        ] {
            let err = check_credit("value", bad).unwrap_err().to_string();
            assert!(
                err.contains("MAX_CREDIT_SECONDS") && err.contains("2147483647"),
                "{err}"
            );
        }
        assert!(check_credit("value", MAX_CREDIT_SECONDS).is_ok());
        assert!(check_credit("value", -MAX_CREDIT_SECONDS).is_ok());
        let extreme = NewCommand {
            category: Category::BadPayment,
            value: i64::MIN,
            transaction_id: "t".into(),
        };
        assert!(matches!(
            check_value(&extreme),
            Err(DcmError::OutOfRange { .. })
        ));
    }

    #[test]
    fn ledger_sums_are_checked_not_wrapped() {
        let fine = [
            command(Category::Payment, MAX_CREDIT_SECONDS),
            command(Category::BadPayment, -5),
        ];
        let ledger = summarise(&fine).unwrap();
        assert_eq!(ledger.added, MAX_CREDIT_SECONDS);
        assert_eq!(ledger.removed, 5);
        // Rows written around the API (or before the bound) cannot wrap the sums.
        let huge = [
            command(Category::Payment, i64::MAX),
            command(Category::Payment, 1),
        ];
        assert!(summarise(&huge).is_none());
        assert!(summarise(&[command(Category::BadPayment, i64::MIN)]).is_none());
    }
}
