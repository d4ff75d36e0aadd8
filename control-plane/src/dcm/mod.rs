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
//!
//! # Layout
//! - this module: the vocabulary (categories, statuses, errors, rows) and
//!   the credit bound [`check_credit`];
//! - `ledger`: reads of a unit's commands and the cycle's checked sums;
//! - `commands`: the writes of commands (add, force-reset, acknowledge);
//! - `balance`: reported balances and final balances.

use chrono::NaiveDateTime;
use sea_query::{InsertStatement, Query, SimpleExpr, Value};
use serde_json::{json, Value as Json};

use crate::db::DbError;
use crate::error::ApiError;
use crate::rows::a;
use crate::values::format_datetime;

mod balance;
mod commands;
mod ledger;

pub use balance::{
    balance, balance_and_pending, final_balance_of, record_balance, record_final_balance,
};
pub use commands::{acknowledge, add_payment_command, force_reset, lock_product, Acknowledged};
pub use ledger::{check_value, ledger, pending_commands};

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

/// `INSERT INTO <table>` of one row given as `(column, value)` pairs, so
/// each value stands next to its column.
fn insert_into(table: &str, row: Vec<(&str, Value)>) -> InsertStatement {
    let (columns, values): (Vec<_>, Vec<_>) = row
        .into_iter()
        .map(|(column, value)| (a(column), SimpleExpr::from(value)))
        .unzip();
    Query::insert()
        .into_table(a(table))
        .columns(columns)
        .values_panic(values)
        .to_owned()
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
