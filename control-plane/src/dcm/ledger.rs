//! A unit's payment-command ledger: the reads of its commands and the
//! checked sums of its current cycle (see the module docs of [`super`]).

use sea_query::{Expr, Order, Query};

use super::STATUS_ACKNOWLEDGED;
use super::{check_credit, Category, DcmError, Ledger, NewCommand, PaymentCommand};
use crate::db::{DbError, Tx};
use crate::rows::a;

/// The columns of [`PaymentCommand`], in its field order.
pub(super) const COMMAND_COLUMNS: [&str; 9] = [
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

pub(super) fn select_commands() -> sea_query::SelectStatement {
    let mut sel = Query::select();
    sel.columns(COMMAND_COLUMNS.map(a))
        .from(a("payment_command"));
    sel
}

/// The commands of the current cycle (not void), oldest first.
pub(super) async fn cycle(tx: &mut Tx, imei: &str) -> Result<Vec<PaymentCommand>, DbError> {
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
/// [`super::lock_product`] when the result decides a write).
pub async fn ledger(tx: &mut Tx, imei: &str) -> Result<Ledger, DcmError> {
    summarise(&cycle(tx, imei).await?).ok_or_else(|| DcmError::LedgerOverflow(imei.into()))
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

/// The commands still to be delivered to the unit (neither void nor
/// acknowledged), oldest first: what the gateway sends, in this order.
pub async fn pending_commands(tx: &mut Tx, imei: &str) -> Result<Vec<PaymentCommand>, DbError> {
    fetch_commands(tx, &pending_stmt(imei)).await
}

pub(super) fn pending_stmt(imei: &str) -> sea_query::SelectStatement {
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

pub(super) async fn command_of(
    tx: &mut Tx,
    imei: &str,
    id: i64,
) -> Result<PaymentCommand, DcmError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcm::MAX_CREDIT_SECONDS;

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
