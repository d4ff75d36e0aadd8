//! The gateway presence registry in the database: which node holds which
//! unit, shared by every gateway process (the in-memory registry only
//! serves gateways inside one process).

use async_trait::async_trait;
use sea_query::{Alias, Expr, OnConflict, Query};

use crate::app::AppState;
use crate::catalogue::{Column, ColumnType};

/// `rtc::PresenceRegistry` over the `rtc_presence` table.
///
/// Claims and releases are single statements; a failure is logged and the
/// gateway carries on (the registry is a routing hint: a command for a unit
/// it cannot place is parked and retried, never dropped).
pub struct DbPresenceRegistry {
    state: AppState,
}

impl DbPresenceRegistry {
    /// A registry over the state's database.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn write(
        &self,
        stmt: impl sea_query::QueryStatementWriter,
    ) -> Result<(), crate::db::DbError> {
        let mut tx = self.state.db.begin_background().await?;
        tx.execute(&stmt).await?;
        tx.commit().await
    }
}

fn t() -> Alias {
    Alias::new("rtc_presence")
}

#[async_trait]
impl ::rtc::PresenceRegistry for DbPresenceRegistry {
    async fn claim(&self, imei: &str, node: &str) {
        let stmt = Query::insert()
            .into_table(t())
            .columns([
                Alias::new("product_imei"),
                Alias::new("node"),
                Alias::new("claimed_at"),
            ])
            .values_panic([imei.into(), node.into(), crate::values::now().into()])
            .on_conflict(
                OnConflict::column(Alias::new("product_imei"))
                    .update_columns([Alias::new("node"), Alias::new("claimed_at")])
                    .to_owned(),
            )
            .to_owned();
        if let Err(e) = self.write(stmt).await {
            metrics::counter!("smartsolar_gateway_presence_errors_total").increment(1);
            tracing::warn!(%imei, %node, error = %e, "presence claim not stored");
        }
    }

    async fn release(&self, imei: &str, node: &str) {
        // Compare-and-delete: a unit that already reconnected to another node keeps its entry.
        let stmt = Query::delete()
            .from_table(t())
            .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
            .and_where(Expr::col(Alias::new("node")).eq(node))
            .to_owned();
        if let Err(e) = self.write(stmt).await {
            metrics::counter!("smartsolar_gateway_presence_errors_total").increment(1);
            tracing::warn!(%imei, %node, error = %e, "presence release not stored");
        }
    }

    async fn lookup(&self, imei: &str) -> Option<String> {
        let stmt = Query::select()
            .column(Alias::new("node"))
            .from(t())
            .and_where(Expr::col(Alias::new("product_imei")).eq(imei))
            .to_owned();
        let node = Column::computed("node", ColumnType::String);
        match self.state.db.fetch_optional(&stmt, &[&node]).await {
            Ok(row) => row.and_then(|r| r.get("node").and_then(|v| v.as_str()).map(str::to_string)),
            Err(e) => {
                tracing::warn!(%imei, error = %e, "presence lookup failed");
                None
            }
        }
    }
}
