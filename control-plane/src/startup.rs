//! Start-up steps: open and migrate the database, seed the default alert types, ensure the
//! admin user.

use sea_query::{Alias, Expr, OnConflict, Query};

use crate::auth::{find_user, hash_password};
use crate::catalogue::{Column, ColumnType};
use crate::config::ControlPlaneConfig;
use crate::db::{Db, Tx};
use crate::error::ApiError;

/// The operator's own entity (migration 0012): users always belong to an
/// entity, and a user created without one (the bootstrap administrator from
/// `SMARTSOLAR_ADMIN_USER`, `smartsolar user add` without `--entity`) belongs
/// to this one.
pub const OPERATOR_ENTITY: &str = "SMARTSolar Operator";

/// The id of [`OPERATOR_ENTITY`], created again (as the migration does) if an
/// operator deleted it.
pub async fn operator_entity_id(tx: &mut Tx) -> Result<i64, ApiError> {
    let insert = Query::insert()
        .into_table(Alias::new("entity"))
        .columns(["name", "bboxx_company_flag", "created_at", "created_by"].map(Alias::new))
        .values_panic([
            OPERATOR_ENTITY.into(),
            true.into(),
            crate::values::now().into(),
            "smartsolar".into(),
        ])
        .on_conflict(
            OnConflict::column(Alias::new("name"))
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    tx.execute(&insert).await?;
    let select = Query::select()
        .column(Alias::new("entity_id"))
        .from(Alias::new("entity"))
        .and_where(Expr::col(Alias::new("name")).eq(OPERATOR_ENTITY))
        .to_owned();
    let id = Column::computed("entity_id", ColumnType::Int);
    tx.fetch_optional(&select, &[&id])
        .await?
        .and_then(|row| row.get("entity_id").and_then(serde_json::Value::as_i64))
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the operator entity is missing")))
}

/// Opens the configured database, applies pending migrations (schema
/// and reference data) and seeds the default alert types.
pub async fn open_database(config: &ControlPlaneConfig) -> anyhow::Result<Db> {
    // The repair workflows are data; refuse to start on a broken definition.
    crate::repairs::load_builtin()?;
    let db = Db::connect(&config.database_url, config.db_max_connections).await?;
    db.migrate().await?;
    let seeded = crate::alerts::defaults::ensure_defaults(&db)
        .await
        .map_err(|e| anyhow::Error::new(e).context("seeding the default alert types"))?;
    if !seeded.is_empty() {
        tracing::info!(?seeded, "default alert types created");
    }
    Ok(db)
}

/// Creates or updates a user with SYSTEM permissions and GLOBAL visibility.
/// Used for `SMARTSOLAR_ADMIN_USER` at start and by `smartsolar user add`.
/// `entity_id: None` puts the user in the [`OPERATOR_ENTITY`].
pub async fn ensure_user(
    db: &Db,
    username: &str,
    password: &str,
    permissions: &str,
    visibility: &str,
    entity_id: Option<i64>,
) -> Result<(), ApiError> {
    let hash = hash_password(password)?;
    let now = crate::values::now();
    let mut tx = db.begin().await?;
    let entity_id = match entity_id {
        Some(id) => id,
        None => operator_entity_id(&mut tx).await?,
    };
    if find_user(db, username).await?.is_some() {
        let stmt = Query::update()
            .table(Alias::new("user"))
            .value(Alias::new("password"), hash)
            .value(Alias::new("permissions"), permissions)
            .value(Alias::new("user_product_visibility"), visibility)
            .value(Alias::new("entity_id"), entity_id)
            .value(Alias::new("modified_at"), now)
            .value(Alias::new("modified_by"), "smartsolar")
            .and_where(Expr::col(Alias::new("username")).eq(username))
            .to_owned();
        tx.execute(&stmt).await?;
    } else {
        let stmt = Query::insert()
            .into_table(Alias::new("user"))
            .columns(
                [
                    "username",
                    "password",
                    "permissions",
                    "user_product_visibility",
                    "entity_id",
                    "display_name",
                    "name",
                    "created_at",
                    "created_by",
                ]
                .map(Alias::new),
            )
            .values_panic([
                username.into(),
                hash.into(),
                permissions.into(),
                visibility.into(),
                entity_id.into(),
                username.into(),
                "".into(),
                now.into(),
                "smartsolar".into(),
            ])
            .to_owned();
        tx.execute(&stmt).await?;
    }
    tx.commit().await?;
    Ok(())
}
