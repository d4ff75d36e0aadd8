//! What a pass reads before it analyses: the active alert types, the eligibility linkers,
//! the units of the held buckets, their due times and alert states, and the fleet-wide
//! inputs some rules need (credit, dead letters, failed MTs). Each read is a typed row.

use std::collections::{HashMap, HashSet};

use chrono::{Duration, NaiveDateTime};
use sea_query::{Expr, Func, Query, SimpleExpr};

use super::analysis::{clears_automatically, interval, AlertType, Eligibility, Product};
use super::lease;
use super::rules::{AlertState, Credit, RuleKind, UnitSnapshot};
use super::AlertError;
use crate::db::Db;
use crate::rows::a;

/// Per unit (IMEI), per alert type id: looked up without building a key.
pub(super) type PerUnit<T> = HashMap<String, HashMap<i64, T>>;

/// The entry of unit `imei` and type `t`, created empty when missing.
fn slot<T: Default>(map: &mut PerUnit<T>, imei: String, t: i64) -> &mut T {
    map.entry(imei).or_default().entry(t).or_default()
}

/// An `alert_type` row.
#[derive(sqlx::FromRow)]
struct AlertTypeRow {
    alert_type_id: i64,
    name: Option<String>,
    status: Option<String>,
    analysis_frequency: Option<NaiveDateTime>,
    cooling_off_period: Option<NaiveDateTime>,
}

pub(super) async fn alert_types(db: &Db) -> Result<Vec<AlertType>, AlertError> {
    let stmt = Query::select()
        .columns(
            [
                "alert_type_id",
                "name",
                "status",
                "analysis_frequency",
                "cooling_off_period",
            ]
            .map(a),
        )
        .from(a("alert_type"))
        .and_where(Expr::col(a("active")).eq(true))
        .to_owned();
    let rows: Vec<AlertTypeRow> = db.fetch_typed(&stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let name = r.name?;
            Some(AlertType {
                id: r.alert_type_id,
                kind: RuleKind::from_name(&name),
                name,
                frequency: r.analysis_frequency.map_or(Duration::zero(), interval),
                cooling_off: r
                    .cooling_off_period
                    .map(interval)
                    .filter(|d| *d > Duration::zero()),
                clears_automatically: clears_automatically(r.status.as_deref().unwrap_or_default()),
            })
        })
        .collect())
}

/// A linker row: an alert type and the id it links (as `linked_id`).
#[derive(sqlx::FromRow)]
struct Link {
    alert_type_id: Option<i64>,
    linked_id: Option<i64>,
}

/// The (alert type, `linked` id) pairs of linker table `table`.
async fn links(db: &Db, table: &str, linked: &str) -> Result<HashSet<(i64, i64)>, AlertError> {
    let stmt = Query::select()
        .column(a("alert_type_id"))
        .expr_as(Expr::col(a(linked)), a("linked_id"))
        .from(a(table))
        .to_owned();
    let rows: Vec<Link> = db.fetch_typed(&stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.alert_type_id?, r.linked_id?)))
        .collect())
}

pub(super) async fn eligibility(db: &Db) -> Result<Eligibility, AlertError> {
    Ok(Eligibility {
        product_types: links(db, "alert_type_product_type_linker", "product_type_id").await?,
        state_types: links(db, "alert_type_state_type_linker", "state_type_id").await?,
        anti_entities: links(db, "alert_type_entity_anti_linker", "entity_id").await?,
    })
}

/// A product with its latest state, connection and RTC connection record (the
/// aliases of [`products`]' select).
#[derive(sqlx::FromRow)]
struct ProductRow {
    product_imei: Option<String>,
    product_type_id: Option<i64>,
    current_tamper_flag: Option<bool>,
    dcm_enabled_flag: Option<bool>,
    status_report_time: Option<NaiveDateTime>,
    state_type_id: Option<i64>,
    connection_date: Option<NaiveDateTime>,
    connection_status: Option<String>,
    connection_status_time: Option<NaiveDateTime>,
    latest_message_time: Option<NaiveDateTime>,
}

impl ProductRow {
    /// When the unit was last heard of, by any of the records.
    fn last_seen(&self) -> Option<NaiveDateTime> {
        [
            self.status_report_time,
            self.connection_date,
            self.connection_status_time,
            self.latest_message_time,
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// A unit's entity (`product_entity_linker`).
#[derive(sqlx::FromRow)]
struct EntityLink {
    product_imei: Option<String>,
    entity_id: Option<i64>,
}

/// The units of the held buckets, with what the product row and its latest
/// state, connection and RTC connection record say.
pub(super) async fn products(
    db: &Db,
    buckets: u32,
    held: &HashSet<u32>,
) -> Result<Vec<Product>, AlertError> {
    // (table, column, name in the row): the select, named as `ProductRow`'s fields.
    const SELECTED: [(&str, &str, &str); 10] = [
        ("product", "product_imei", "product_imei"),
        ("product", "product_type_id", "product_type_id"),
        ("product", "current_tamper_flag", "current_tamper_flag"),
        ("product", "dcm_enabled_flag", "dcm_enabled_flag"),
        (
            "product",
            "latest_rtc_mo_status_report_time",
            "status_report_time",
        ),
        ("state", "current_state_type", "state_type_id"),
        ("connection", "date", "connection_date"),
        (
            "rtc_connection_history",
            "connection_status",
            "connection_status",
        ),
        (
            "rtc_connection_history",
            "connection_status_time",
            "connection_status_time",
        ),
        (
            "rtc_connection_history",
            "latest_message_time",
            "latest_message_time",
        ),
    ];
    // The product's latest row of each joined table.
    const JOINS: [(&str, &str, &str); 3] = [
        ("state", "state_id", "latest_state_id"),
        ("connection", "connection_id", "latest_connection_id"),
        (
            "rtc_connection_history",
            "rtc_connection_history_id",
            "latest_rtc_connection_history_id",
        ),
    ];
    let mut stmt = Query::select();
    for (table, column, name) in SELECTED {
        stmt.expr_as(Expr::col((a(table), a(column))), a(name));
    }
    stmt.from(a("product"));
    for (table, id, latest) in JOINS {
        stmt.left_join(
            a(table),
            Expr::col((a(table), a(id))).equals((a("product"), a(latest))),
        );
    }
    let rows: Vec<ProductRow> = db.fetch_typed(&stmt).await?;
    let mut products: Vec<Product> = rows
        .into_iter()
        .filter_map(|r| {
            let last_seen = r.last_seen();
            let imei = r.product_imei?;
            let bucket = lease::bucket_of(&imei, buckets);
            if !held.contains(&bucket) {
                return None;
            }
            Some(Product {
                imei,
                bucket,
                product_type: r.product_type_id,
                state_type: r.state_type_id,
                entities: Vec::new(),
                snapshot: UnitSnapshot {
                    tamper_switch_enabled: r.current_tamper_flag.unwrap_or(false),
                    last_seen,
                    online: r.connection_status.as_deref() == Some("online"),
                    dcm_enabled: r.dcm_enabled_flag.unwrap_or(false),
                    ..UnitSnapshot::default()
                },
            })
        })
        .collect();
    let links = Query::select()
        .columns(["product_imei", "entity_id"].map(a))
        .from(a("product_entity_linker"))
        .and_where(Expr::col(a("date_removed")).is_null())
        .to_owned();
    let mut entities: HashMap<String, Vec<i64>> = HashMap::new();
    for r in db.fetch_typed::<EntityLink>(&links).await? {
        if let (Some(imei), Some(e)) = (r.product_imei, r.entity_id) {
            entities.entry(imei).or_default().push(e);
        }
    }
    for p in &mut products {
        p.entities = entities.remove(&p.imei).unwrap_or_default();
    }
    Ok(products)
}

/// A time per (unit, alert type), as `at`: when it was last analysed, or last dismissed.
#[derive(sqlx::FromRow)]
struct UnitTypeTime {
    product_imei: Option<String>,
    alert_type_id: Option<i64>,
    at: Option<NaiveDateTime>,
}

pub(super) async fn last_analysed(db: &Db) -> Result<PerUnit<NaiveDateTime>, AlertError> {
    let stmt = Query::select()
        .columns(["product_imei", "alert_type_id"].map(a))
        .expr_as(Expr::col(a("last_analysed_at")), a("at"))
        .from(a("alert_analysis_due"))
        .to_owned();
    let mut out = PerUnit::new();
    for r in db.fetch_typed::<UnitTypeTime>(&stmt).await? {
        if let (Some(imei), Some(t), Some(at)) = (r.product_imei, r.alert_type_id, r.at) {
            out.entry(imei).or_default().insert(t, at);
        }
    }
    Ok(out)
}

/// An open alert.
#[derive(sqlx::FromRow)]
struct OpenAlert {
    alert_id: Option<i64>,
    product_imei: Option<String>,
    alert_type_id: Option<i64>,
}

/// Open alerts, and the latest dismissal since `dismissed_since` (the
/// longest cooling-off period back), per (unit, alert type).
pub(super) async fn alert_states(
    db: &Db,
    dismissed_since: Option<NaiveDateTime>,
) -> Result<PerUnit<AlertState>, AlertError> {
    let mut out: PerUnit<AlertState> = HashMap::new();
    let open = Query::select()
        .columns(["alert_id", "product_imei", "alert_type_id"].map(a))
        .from(a("alert"))
        .and_where(Expr::col(a("dismissed_at")).is_null())
        .to_owned();
    for r in db.fetch_typed::<OpenAlert>(&open).await? {
        if let (Some(id), Some(imei), Some(t)) = (r.alert_id, r.product_imei, r.alert_type_id) {
            slot(&mut out, imei, t).open_alert = Some(id);
        }
    }
    let Some(since) = dismissed_since else {
        return Ok(out);
    };
    let dismissed = Query::select()
        .columns(["product_imei", "alert_type_id"].map(a))
        .expr_as(Func::max(Expr::col(a("dismissed_at"))), a("at"))
        .from(a("alert"))
        .and_where(Expr::col(a("dismissed_at")).gte(since))
        .group_by_columns(["product_imei", "alert_type_id"].map(a))
        .to_owned();
    for r in db.fetch_typed::<UnitTypeTime>(&dismissed).await? {
        if let (Some(imei), Some(t)) = (r.product_imei, r.alert_type_id) {
            slot(&mut out, imei, t).last_dismissed = r.at;
        }
    }
    Ok(out)
}

/// A `balance` row.
#[derive(sqlx::FromRow)]
struct BalanceRow {
    product_imei: Option<String>,
    balance: Option<i64>,
    expected_expiry: Option<NaiveDateTime>,
}

pub(super) async fn credits(db: &Db) -> Result<HashMap<String, Credit>, AlertError> {
    let stmt = Query::select()
        .columns(["product_imei", "balance", "expected_expiry"].map(a))
        .from(a("balance"))
        .order_by(a("balance_id"), sea_query::Order::Asc)
        .to_owned();
    let rows: Vec<BalanceRow> = db.fetch_typed(&stmt).await?;
    // Ascending ids: a later row of the same unit (there is normally one) wins.
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let credit = Credit {
                balance: r.balance?,
                expected_expiry: r.expected_expiry?,
            };
            Some((r.product_imei?, credit))
        })
        .collect())
}

/// A dead letter's MO queue envelope.
#[derive(sqlx::FromRow)]
struct DeadLetter {
    payload: Option<String>,
}

/// A product's RTC network identity.
#[derive(sqlx::FromRow)]
struct NetworkIdentity {
    product_imei: Option<String>,
    rtc_network_name: Option<String>,
    ip_address: Option<String>,
}

/// Dead letters per unit since `since`. The table has no IMEI column: it is
/// the envelope's `ident` (an IMEI, or `<network>/<ip>` resolved through the
/// products' RTC identity).
pub(super) async fn dead_letters(
    db: &Db,
    products: &[Product],
    since: NaiveDateTime,
) -> Result<HashMap<String, u32>, AlertError> {
    let stmt = Query::select()
        .column(a("payload"))
        .from(a("rtc_dead_letter"))
        .and_where(Expr::col(a("created_at")).gte(since))
        .to_owned();
    let rows: Vec<DeadLetter> = db.fetch_typed(&stmt).await?;
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = Query::select()
        .columns(["product_imei", "rtc_network_name", "ip_address"].map(a))
        .from(a("product"))
        .and_where(Expr::col(a("ip_address")).is_not_null())
        .to_owned();
    // Network identities as the dead-letter API resolves them: the address
    // parsed (so any spelling of it matches), and an identity two products
    // share belongs to neither.
    let mut by_ip: HashMap<(String, std::net::IpAddr), Option<String>> = HashMap::new();
    for r in db.fetch_typed::<NetworkIdentity>(&ids).await? {
        let (Some(network), Some(ip), Some(imei)) = (
            r.rtc_network_name,
            r.ip_address.and_then(|ip| ip.trim().parse().ok()),
            r.product_imei,
        ) else {
            continue;
        };
        by_ip
            .entry((network, ip))
            .and_modify(|owner| *owner = None)
            .or_insert_with(|| Some(imei));
    }
    let wanted: HashSet<&str> = products.iter().map(|p| p.imei.as_str()).collect();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for r in rows {
        let Some(payload) = r.payload else {
            continue;
        };
        let Ok(env) = codec::envelope::decode_mo_queue_envelope(payload.as_bytes()) else {
            continue;
        };
        let imei = match env.ident_type {
            codec::envelope::IdentType::Imei => Some(env.ident.to_string()),
            codec::envelope::IdentType::Ip => codec::envelope::Ident::parse(&env.ident)
                .ok()
                .and_then(|id| {
                    by_ip
                        .get(&(id.network.to_owned(), id.ip))
                        .cloned()
                        .flatten()
                }),
        };
        if let Some(imei) = imei.filter(|i| wanted.contains(i.as_str())) {
            *counts.entry(imei).or_default() += 1;
        }
    }
    Ok(counts)
}

/// A unit's count of failed MTs.
#[derive(sqlx::FromRow)]
struct FailedMts {
    product_imei: Option<String>,
    n: i64,
}

pub(super) async fn failed_mts(
    db: &Db,
    since: NaiveDateTime,
) -> Result<HashMap<String, u32>, AlertError> {
    let stmt = Query::select()
        .column(a("product_imei"))
        .expr_as(
            SimpleExpr::from(Func::count(Expr::col(a("rtc_message_history_id")))),
            a("n"),
        )
        .from(a("rtc_message_history"))
        .and_where(Expr::col(a("delivery_status")).eq("failed"))
        .and_where(Expr::col(a("delivery_status_time")).gte(since))
        .group_by_col(a("product_imei"))
        .to_owned();
    let rows: Vec<FailedMts> = db.fetch_typed(&stmt).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.product_imei?, u32::try_from(r.n).ok()?)))
        .collect())
}
