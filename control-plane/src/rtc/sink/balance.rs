//! DCM balances (from a status report or an MT reply) and final balances (the answer to a
//! zero-command), through the DCM flow (`crate::dcm`).

use codec::mo::FinalBalance;
use ingest::sink::{Balance, SinkError};
use sea_query::{Alias, Expr, Query};

use super::{commit, telemetry_point, ControlPlaneSink, Step};
use crate::actions::unit::UNIT_USER;
use crate::db::Tx;
use crate::dcm::{self, Category};
use crate::rtc::{db_sink_error, dcm_sink_error};

impl ControlPlaneSink {
    pub(super) async fn apply_balance(
        &self,
        mut step: Step<'_>,
        balance: &Balance,
    ) -> Result<(), SinkError> {
        let imei = step.ctx.imei;
        let dcm_unit = dcm::lock_product(
            &mut step.tx,
            &self.state.catalogue,
            imei,
            &crate::query::Visibility::Global,
        )
        .await
        .map_err(dcm_sink_error)?;
        if !dcm_unit {
            tracing::debug!(imei, "balance from a unit that is not DCM enabled; ignored");
            return Ok(());
        }
        let ctx = step.ctx;
        let point_ms = if step.claim("balance").await? {
            dcm::record_balance(
                &mut step.tx,
                &self.state.catalogue,
                imei,
                balance.balance,
                UNIT_USER,
                step.at,
            )
            .await
            .map_err(dcm_sink_error)?;
            step.commit().await?;
            Some(ctx.received_at_ms)
        } else {
            // A redelivery or a v2 resend: the point goes at the first receipt's time.
            step.first_receipt_ms("balance").await?
        };
        // After the commit, and again on a redelivery: the store overwrites the same
        // field at the same time, so this is idempotent too.
        match point_ms {
            Some(ms) => {
                self.write_points(&[telemetry_point(ctx, "balance", balance.balance, ms)])
                    .await
            }
            None => Ok(()),
        }
    }

    pub(super) async fn apply_final_balance(
        &self,
        Step { mut tx, ctx, at }: Step<'_>,
        fb: &FinalBalance<'_>,
    ) -> Result<(), SinkError> {
        let Some(command) = command_by_transaction(&mut tx, ctx.imei, fb.transaction_id).await?
        else {
            return Err(SinkError::Permanent(format!(
                "final balance for unknown transaction_id '{}' of unit {}",
                fb.transaction_id, ctx.imei
            )));
        };
        let id = command.payment_command_id;
        if command.category() == Some(Category::ForceReset) {
            // A force-reset travels to the unit as a zero-command; its answer was
            // already given by the force-reset endpoint (no second refund).
            tracing::info!(
                imei = ctx.imei,
                payment_command_id = id,
                final_balance = fb.final_balance,
                "final balance of a force-reset recorded as processed only"
            );
            return commit(tx).await;
        }
        let outcome = dcm::record_final_balance(
            &mut tx,
            &self.state.catalogue,
            ctx.imei,
            id,
            fb.final_balance,
            UNIT_USER,
            at,
        )
        .await
        .map_err(dcm_sink_error)?;
        commit(tx).await?;
        // The final balance confirms the zero-command, unless its payment-commands reply
        // already did.
        dcm::count_events("acknowledged", u64::from(outcome.acknowledged));
        dcm::count_events("voided", outcome.voided);
        tracing::info!(
            imei = ctx.imei,
            zero_command_id = id,
            created = outcome.created,
            "final balance recorded"
        );
        Ok(())
    }
}

/// A payment command of a unit, as a final balance or an MT reply finds it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct CommandRef {
    pub(super) payment_command_id: i64,
    category: Option<String>,
}

impl CommandRef {
    /// `None` for a spelling the ledger does not know (the column's CHECK allows none).
    fn category(&self) -> Option<Category> {
        self.category.as_deref().and_then(Category::parse)
    }
}

/// A payment command of this unit by its transaction id.
pub(super) async fn command_by_transaction(
    tx: &mut Tx,
    imei: &str,
    transaction_id: &str,
) -> Result<Option<CommandRef>, SinkError> {
    let stmt = Query::select()
        .columns(["payment_command_id", "category"].map(Alias::new))
        .from(Alias::new("payment_command"))
        .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
        .and_where(Expr::col(Alias::new("transaction_id")).eq(transaction_id))
        .to_owned();
    tx.fetch_typed_optional(&stmt).await.map_err(db_sink_error)
}
