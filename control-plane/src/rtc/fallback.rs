//! [`FallbackSms`]: a WAKEUP SMS when a unit stays unreachable.

use ::rtc::Fallback;
use async_trait::async_trait;
use codec::CorrelationId;
use sea_query::{Alias, Expr, Query};

use super::RTC_USER;
use crate::app::AppState;
use crate::error::ApiError;
use crate::rows::insert;

/// Within this many seconds of a fallback SMS to a unit, another command that runs out
/// of retries records its fallback row but sends no second SMS (the unit is already
/// being woken; a burst of queued commands must not become a burst of SMS).
pub const SMS_WINDOW_SECS: i64 = 600;

/// The gateway's fallback: in one transaction, an `rtc_fallback_message_history` row
/// and (unless one went out in the last [`SMS_WINDOW_SECS`]) a WAKEUP `sms_history`
/// row, through the same code as `send_wakeup` (`actions::sms::record_wakeup`); after
/// commit the SMS is handed to the provider (`actions::sms::deliver`). The MT command
/// stays queued in the gateway, so the unit gets it when it connects.
pub struct FallbackSms {
    state: AppState,
}

impl FallbackSms {
    /// A fallback over `state` (its database and SMS provider).
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Records the fallback and sends the SMS; returns the `sms_history` id when an
    /// SMS was sent.
    pub async fn wake(&self, imei: &str) -> Result<Option<i64>, ApiError> {
        let now = self.state.clock.now();
        let mut tx = self.state.db.begin().await?;
        // Locks the product (and 404s for an unknown one).
        crate::actions::lock_product(&mut tx, &crate::query::Visibility::Global, imei).await?;
        let recent = Query::select()
            .expr(Expr::col(Alias::new("rtc_fallback_message_history_id")).count())
            .from(Alias::new("rtc_fallback_message_history"))
            .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
            .and_where(
                Expr::col(Alias::new("message_sent_time"))
                    .gt(now - chrono::Duration::seconds(SMS_WINDOW_SECS)),
            )
            .to_owned();
        let recent = tx.fetch_i64(&recent).await? > 0;
        insert(
            &mut tx,
            "rtc_fallback_message_history",
            vec![
                ("product_imei", imei.into()),
                ("message_sent_time", now.into()),
            ],
            RTC_USER,
            now,
        )
        .await?;
        let sms_id = if recent {
            None
        } else {
            let sms_id = crate::actions::sms::record_wakeup(
                &mut tx,
                imei,
                None,
                RTC_USER,
                now,
                &self.state.config,
            )
            .await?;
            Some(sms_id)
        };
        tx.commit().await?;
        if let Some(id) = sms_id {
            crate::actions::sms::deliver(&self.state, id).await?;
        }
        Ok(sms_id)
    }
}

#[async_trait]
impl Fallback for FallbackSms {
    async fn unreachable(&self, imei: &str, correlation_id: CorrelationId, attempts: u32) {
        match self.wake(imei).await {
            Ok(sms) => tracing::info!(
                imei,
                %correlation_id,
                attempts,
                sms_history_id = ?sms,
                "unit unreachable: fallback recorded"
            ),
            Err(e) => tracing::error!(
                imei,
                %correlation_id,
                attempts,
                error = %e,
                "unit unreachable: fallback failed"
            ),
        }
    }
}
