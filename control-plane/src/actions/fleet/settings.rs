//! The small per-product settings, without HTTP: the energy limit a
//! TECHNICAL user suggests, and the DCM and PAYG flags.

use chrono::NaiveDateTime;
use sea_query::{Alias, Expr, Order};

use super::parse::{EnergyLimit, ProductFlag};
use super::reads::current_part_types;
use crate::db::Tx;
use crate::error::ApiError;
use crate::query::Visibility;
use crate::rows::{eq, insert, select_all, update};

/// The bounds of a `default_energy_limit` row.
#[derive(Debug, sqlx::FromRow)]
struct DefaultLimitRow {
    entity_id: Option<i64>,
    min_energy_limit: Option<f64>,
    max_energy_limit: Option<f64>,
}

/// The `default_energy_limit` row for the unit's battery and state,
/// preferring one specific to one of its entities.
async fn default_limits(
    tx: &mut Tx,
    imei: &str,
    state_type: i64,
) -> Result<Option<DefaultLimitRow>, ApiError> {
    let mut stmt = select_all("default_energy_limit");
    stmt.and_where(Expr::col(Alias::new("battery_type_id")).in_subquery(current_part_types(imei)))
        .and_where(eq("state_type_id", state_type))
        .order_by(Alias::new("default_energy_limit_id"), Order::Asc);
    let mut rows: Vec<DefaultLimitRow> = tx.fetch_typed(&stmt).await?;
    let entities: Vec<i64> = super::super::entity::current_entities(tx, imei)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let specific = rows
        .iter()
        .position(|r| r.entity_id.is_some_and(|e| entities.contains(&e)));
    let general = rows.iter().position(|r| r.entity_id.is_none());
    Ok(specific.or(general).map(|at| rows.swap_remove(at)))
}

/// Records `requested`, within the unit's bounds, as the unit's pending
/// energy limit. Only units in ACTIVATED, MONITORED or IN_REPAIR_SYSTEM
/// take one, and none whose total accessory energy is set.
pub(super) async fn suggest_energy_limit(
    tx: &mut Tx,
    visibility: &Visibility,
    imei: &str,
    requested: f64,
    by: &str,
    now: NaiveDateTime,
) -> Result<EnergyLimit, ApiError> {
    use super::super::state::{ACTIVATED, IN_REPAIR_SYSTEM, MONITORED};
    let product = super::super::lock_product(tx, visibility, imei).await?;
    let state_type = super::super::state::current_state_type(tx, product.latest_state_id).await?;
    if ![ACTIVATED, MONITORED, IN_REPAIR_SYSTEM].contains(&state_type) {
        return Err(ApiError::field(
            "state",
            format!(
                "The energy limit can only be set on units in ACTIVATED, MONITORED or IN_REPAIR_SYSTEM; #{imei} is in state '{state_type}'"
            ),
        ));
    }
    if let Some(total) =
        super::super::active_product_parameter(tx, imei, "total_accessory_energy").await?
    {
        return Err(ApiError::field(
            "energy_limit",
            format!(
                "The energy limit of #{imei} is locked: total_accessory_energy is set ({total})"
            ),
        ));
    }
    let cap = super::super::active_product_parameter(tx, imei, "energy_limit_cap")
        .await?
        .and_then(|c| c.trim().parse::<f64>().ok());
    let defaults = default_limits(tx, imei, state_type).await?;
    let limit = EnergyLimit::bound(
        requested,
        defaults.as_ref().and_then(|d| d.max_energy_limit),
        defaults.as_ref().and_then(|d| d.min_energy_limit),
        cap,
    );
    let type_id = super::super::parameter_type_id(tx, "energy_limit", "float", by, now).await?;
    // A newer suggestion supersedes one the unit has not picked up yet.
    update(
        tx,
        "product_parameter",
        vec![
            ("status", "expired".into()),
            ("date_added", now.into()),
            ("date_removed", now.into()),
        ],
        eq("product_imei", imei)
            .and(eq("parameter_type_id", type_id))
            .and(eq("status", "pending")),
        by,
        now,
    )
    .await?;
    insert(
        tx,
        "product_parameter",
        vec![
            ("product_imei", imei.into()),
            ("parameter_type_id", type_id.into()),
            ("status", "pending".into()),
            ("value", limit.applied.to_string().into()),
        ],
        by,
        now,
    )
    .await?;
    Ok(limit)
}

/// Sets a product flag of a locked, visible product. BP20 units keep
/// their DCM flag: they are DCM enabled from the factory.
pub(super) async fn set_flag(
    tx: &mut Tx,
    visibility: &Visibility,
    imei: &str,
    flag: ProductFlag,
    value: bool,
    by: &str,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let product = super::super::lock_product(tx, visibility, imei).await?;
    if flag == ProductFlag::DcmEnabled && super::super::is_bp20(tx, product.product_type_id).await?
    {
        return Err(ApiError::field(
            "enabled",
            "BP20 devices are DCM enabled by default and cannot be modified",
        ));
    }
    update(
        tx,
        "product",
        vec![(flag.column(), value.into())],
        eq("product_imei", imei),
        by,
        now,
    )
    .await?;
    Ok(())
}
