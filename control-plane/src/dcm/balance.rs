//! Balances: the latest balance each unit reported, and the final balance
//! that answers a zero-command and closes the cycle (see the module docs
//! of [`super`]).

use chrono::{Duration, NaiveDateTime};
use sea_query::{Expr, Order, Query};

use super::commands::{lock_product, set_status, visible_product, void_commands};
use super::ledger::{command_of, cycle, pending_stmt};
use super::{check_credit, Balance, Category, DcmError, FinalBalance, FinalBalanceOutcome};
use super::{
    PaymentCommand, FINAL_BALANCE_RECEIVED, FINAL_BALANCE_SUPERSEDED, STATUS_ACKNOWLEDGED,
};
use crate::catalogue::Catalogue;
use crate::db::{Db, DbError, Tx};
use crate::outbox;
use crate::query::Visibility;
use crate::rows::a;

/// A balance a unit reports (alone, with an acknowledgement, or as a final
/// balance): never negative, and within what a unit can hold.
pub(super) fn check_reported(what: &'static str, balance: i64) -> Result<i64, DcmError> {
    if balance < 0 {
        return Err(DcmError::NegativeBalance(balance));
    }
    check_credit(what, balance)
}

/// One `balance` row (selected by [`balance_stmt`]).
#[derive(sqlx::FromRow)]
struct BalanceRow {
    balance_id: i64,
    balance: i64,
    expected_expiry: Option<NaiveDateTime>,
    created_at: Option<NaiveDateTime>,
    modified_at: Option<NaiveDateTime>,
}

impl BalanceRow {
    /// The row's id and the balance it holds; `None` for a row without an
    /// expiry or a time (never written by this module).
    fn decode(self) -> Option<(i64, Balance)> {
        let reported_at = self.modified_at.or(self.created_at)?;
        Some((
            self.balance_id,
            Balance {
                balance: self.balance,
                expected_expiry: self.expected_expiry?,
                reported_at,
            },
        ))
    }
}

fn balance_stmt(imei: &str) -> sea_query::SelectStatement {
    Query::select()
        .columns(
            [
                "balance_id",
                "balance",
                "expected_expiry",
                "created_at",
                "modified_at",
            ]
            .map(a),
        )
        .from(a("balance"))
        .and_where(Expr::col(a("product_imei")).eq(imei))
        .order_by(a("balance_id"), Order::Desc)
        .limit(1)
        .to_owned()
}

async fn balance_row(tx: &mut Tx, imei: &str) -> Result<Option<(i64, Balance)>, DbError> {
    let row: Option<BalanceRow> = tx.fetch_typed_optional(&balance_stmt(imei)).await?;
    Ok(row.and_then(BalanceRow::decode))
}

/// The unit's latest balance, read inside `tx`.
pub async fn balance(tx: &mut Tx, imei: &str) -> Result<Option<Balance>, DbError> {
    Ok(balance_row(tx, imei).await?.map(|(_, b)| b))
}

/// Keeps one `balance` row per unit. A report older than the stored one is
/// ignored (reports can arrive out of order) unless `force` (a reset by
/// SMARTSolar itself, which is always the newest fact).
pub(super) async fn store_balance(
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
            let stmt = super::insert_into(
                "balance",
                vec![
                    ("product_imei", imei.into()),
                    ("balance", balance.into()),
                    ("expected_expiry", expected_expiry.into()),
                    ("created_at", at.into()),
                    ("created_by", actor.into()),
                ],
            );
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
    check_reported("a reported balance", balance)?;
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
    check_reported("a final balance", final_balance)?;
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
    let stmt = super::insert_into(
        "final_balance",
        vec![
            ("product_imei", imei.into()),
            ("final_balance", final_balance.into()),
            ("total_added", total_added.into()),
            ("zero_command_id", zero_command_id.into()),
            ("status", status.into()),
            ("created_at", at.into()),
            ("created_by", actor.into()),
        ],
    )
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
/// its pending commands, newest first; an unknown product, or one
/// `visibility` hides, is [`DcmError::UnknownProduct`]. Read from the read
/// pool (a snapshot per statement); nothing here decides a write.
pub async fn balance_and_pending(
    db: &Db,
    cat: &Catalogue,
    imei: &str,
    visibility: &Visibility,
) -> Result<(Option<Balance>, Vec<PaymentCommand>), DcmError> {
    let visible = visible_product(cat, imei, visibility, "product_imei");
    let found: Vec<(String,)> = db.fetch_typed(&visible).await?;
    if found.is_empty() {
        return Err(DcmError::UnknownProduct(imei.to_string()));
    }
    let row: Option<BalanceRow> = db
        .fetch_typed(&balance_stmt(imei))
        .await?
        .into_iter()
        .next();
    let balance = row.and_then(BalanceRow::decode).map(|(_, b)| b);
    let mut stmt = pending_stmt(imei);
    stmt.clear_order_by()
        .order_by(a("payment_command_id"), Order::Desc);
    let pending = db.fetch_typed(&stmt).await?;
    Ok((balance, pending))
}
