//! `rtc_mo_message_history`: one row for every MO the engine decoded (telemetry included,
//! processed or failed), written in batches.

use std::collections::BTreeSet;

use base64::Engine as _;
use chrono::NaiveDateTime;
use ingest::sink::{MoHistory, SinkError};
use sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr};

use super::{commit, ControlPlaneSink};
use crate::rtc::{datetime_ms, db_sink_error, RTC_USER};

/// Counter: MO messages whose `rtc_mo_message_history` row already existed (their correlation
/// id was seen before: a bus redelivery or a version-2 unit's resend), so nothing was applied
/// twice.
pub const METRIC_MO_DUPLICATES: &str = "smartsolar_rtc_mo_duplicates_total";

/// Rows per `rtc_mo_message_history` insert statement (9 values each; SQLite binds
/// at most 32 766 parameters).
const HISTORY_CHUNK: usize = 500;

/// A unit the database knows.
#[derive(Debug, sqlx::FromRow)]
struct KnownUnit {
    product_imei: String,
}

impl ControlPlaneSink {
    pub(super) async fn insert_mo_history(
        &self,
        entries: &[MoHistory<'_>],
    ) -> Result<(), SinkError> {
        if entries.is_empty() {
            return Ok(());
        }
        // Only rows of known units (the foreign key would refuse the whole batch).
        let imeis: BTreeSet<&str> = entries.iter().map(|e| e.ctx.imei).collect();
        let stmt = Query::select()
            .column(Alias::new("product_imei"))
            .from(Alias::new("product"))
            .and_where(Expr::col(Alias::new("product_imei")).is_in(imeis.iter().copied()))
            .to_owned();
        let known: BTreeSet<String> = self
            .state
            .db
            .fetch_typed::<KnownUnit>(&stmt)
            .await
            .map_err(db_sink_error)?
            .into_iter()
            .map(|u| u.product_imei)
            .collect();
        let now = self.state.clock.now();
        let rows: Vec<Vec<SimpleExpr>> = entries
            .iter()
            .filter(|e| {
                let ok = known.contains(e.ctx.imei);
                if !ok {
                    tracing::warn!(imei = e.ctx.imei, correlation_id = %e.ctx.correlation_id, "MO history of an unknown unit not recorded");
                }
                ok
            })
            .map(|e| history_values(e, now))
            .collect();
        let offered = rows.len() as u64;
        let mut inserted = 0u64;
        let mut tx = self
            .state
            .db
            .begin_background()
            .await
            .map_err(db_sink_error)?;
        for chunk in rows.chunks(HISTORY_CHUNK) {
            let mut stmt = Query::insert();
            stmt.into_table(Alias::new("rtc_mo_message_history"))
                .columns(
                    [
                        "product_imei",
                        "correlation_id",
                        "message_bin",
                        "message_json",
                        "message_received_time",
                        "processing_status",
                        "processing_status_info",
                        "created_at",
                        "created_by",
                    ]
                    .map(Alias::new),
                );
            for r in chunk {
                stmt.values_panic(r.clone());
            }
            stmt.on_conflict(
                OnConflict::column(Alias::new("correlation_id"))
                    .do_nothing()
                    .to_owned(),
            );
            inserted += tx.execute(&stmt).await.map_err(db_sink_error)?;
        }
        commit(tx).await?;
        // A row that was already there is an MO seen before: a bus redelivery, or a v2
        // unit's resend (same derived correlation id, protocol §8.5), dropped here.
        metrics::counter!(METRIC_MO_DUPLICATES).increment(offered.saturating_sub(inserted));
        Ok(())
    }
}

/// The values of one `rtc_mo_message_history` row: the CBOR in base64 (as in the MO
/// queue envelope) and in diagnostic notation.
pub(crate) fn history_values(e: &MoHistory<'_>, now: NaiveDateTime) -> Vec<SimpleExpr> {
    let json =
        codec::render_cbor(e.ctx.message).unwrap_or_else(|err| format!("undecodable: {err}"));
    vec![
        e.ctx.imei.into(),
        e.ctx.correlation_id.to_string().into(),
        base64::engine::general_purpose::STANDARD
            .encode(e.ctx.message)
            .into(),
        json.into(),
        datetime_ms(e.ctx.received_at_ms).into(),
        e.status.as_str().into(),
        e.info.clone().into(),
        now.into(),
        RTC_USER.into(),
    ]
}
