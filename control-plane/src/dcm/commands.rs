//! The writes of payment commands: adding one, force-resetting a unit,
//! and the unit's acknowledgement (see the module docs of [`super`]).

use chrono::NaiveDateTime;
use sea_query::{Expr, LockType, Query, SelectStatement, Value};

use super::balance::{balance, check_reported, store_balance};
use super::ledger::{check_value, command_of, ledger, COMMAND_COLUMNS};
use super::{Category, DcmError, ForceReset, NewCommand, PaymentCommand};
use super::{STATUS_ACKNOWLEDGED, STATUS_PENDING};
use crate::catalogue::Catalogue;
use crate::db::{DbError, Tx};
use crate::query::{self, Visibility};
use crate::rows::a;

/// The select of product `imei` as `visibility` lets the user see it,
/// reduced to `column`: no row when there is no such product or it belongs
/// to another entity.
pub(super) fn visible_product(
    cat: &Catalogue,
    imei: &str,
    visibility: &Visibility,
    column: &str,
) -> SelectStatement {
    let product = cat.table("product").expect("the catalogue has products");
    let mut stmt = query::compile_get(
        cat,
        product,
        Value::String(Some(Box::new(imei.to_string()))),
        visibility,
    );
    stmt.clear_selects().column((a("product"), a(column)));
    stmt
}

/// The one column [`lock_product`] reads.
#[derive(sqlx::FromRow)]
struct DcmFlag {
    dcm_enabled_flag: Option<bool>,
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
    let mut stmt = visible_product(cat, imei, visibility, "dcm_enabled_flag");
    // Only the product row itself is locked; on SQLite this renders nothing
    // and the single writer connection provides the serialisation.
    stmt.lock_with_tables(LockType::Update, [a("product")]);
    let row: DcmFlag = tx
        .fetch_typed_optional(&stmt)
        .await?
        .ok_or_else(|| DcmError::UnknownProduct(imei.to_string()))?;
    Ok(row.dcm_enabled_flag.unwrap_or(false))
}

async fn transaction_id_used(tx: &mut Tx, transaction_id: &str) -> Result<bool, DbError> {
    let stmt = Query::select()
        .expr(Expr::col(a("payment_command_id")).count())
        .from(a("payment_command"))
        .and_where(Expr::col(a("transaction_id")).eq(transaction_id))
        .to_owned();
    Ok(tx.fetch_i64(&stmt).await? > 0)
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
    let stmt = super::insert_into(
        "payment_command",
        vec![
            ("product_imei", imei.into()),
            ("value", value.into()),
            ("category", category.as_str().into()),
            ("void", false.into()),
            ("status", STATUS_PENDING.into()),
            ("transaction_id", transaction_id.into()),
            ("created_at", now.into()),
            ("created_by", actor.into()),
        ],
    )
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
pub(super) async fn void_commands(
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

pub(super) async fn set_status(
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
/// one with its confirmation, is recorded as by [`super::record_balance`].
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
        check_reported("a reported balance", balance)?;
        store_balance(tx, imei, balance, at, actor, false).await?;
    }
    Ok(Acknowledged { command, newly })
}
