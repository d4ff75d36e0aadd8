//! Bucket leases: how alert engines share the units.
//!
//! A unit belongs to bucket `fnv1a(imei) % buckets`. An engine holds a lease
//! on some buckets (a row of `alert_lease` with its id and an expiry) and
//! analyses only their units. At the start of a pass each engine marks
//! itself alive (`alert_engine`), takes its fair share,
//! `ceil(buckets / live engines)`, of the free or expired buckets and gives
//! up any above its share, so a new engine gets work within a pass or two
//! and a dead engine's buckets are taken over once its leases expire. (A
//! bucket given up is analysed again from the next pass of whichever engine
//! takes it: rebalancing can delay a unit's analysis by a pass, never
//! duplicate it.)
//!
//! Every claim is one conditional statement whose affected-row count says
//! whether it won, so two engines claiming at once cannot both win. And an
//! engine commits a unit's results only in a transaction that first renews
//! its lease ([`hold`]) to the current time plus the lease's length, and
//! only if it has not expired by then: on PostgreSQL that row stays locked
//! until the commit, so a takeover waits and then sees the renewed expiry;
//! SQLite has one writer. A pass that overruns its lease therefore keeps
//! its buckets as long as each commit comes within a lease of the one
//! before; once a lease has expired and another engine has taken the
//! bucket, the old holder's commits fail. The same unit is therefore never
//! analysed by two engines at once.

use chrono::{Duration, NaiveDateTime};
use sea_query::{Expr, OnConflict, Query};

use crate::catalogue::{Column, ColumnType};
use crate::db::{Db, DbError, Tx};
use crate::rows::a;
use bus::partition_for;

const TABLE: &str = "alert_lease";
const ENGINES: &str = "alert_engine";

/// The bucket of a unit: FNV-1a (stable across processes and releases,
/// unlike `std`'s hasher) modulo `buckets`.
pub fn bucket_of(imei: &str, buckets: u32) -> u32 {
    partition_for(imei.as_bytes(), buckets)
}

/// One row of `alert_lease`.
struct Lease {
    bucket: u32,
    holder: String,
    expires_at: NaiveDateTime,
}

async fn leases(db: &Db) -> Result<Vec<Lease>, DbError> {
    let stmt = Query::select()
        .columns(["bucket", "holder", "expires_at"].map(a))
        .from(a(TABLE))
        .to_owned();
    let cols = [
        Column::computed("bucket", ColumnType::Int),
        Column::computed("holder", ColumnType::Text),
        Column::computed("expires_at", ColumnType::Datetime),
    ];
    let rows = db
        .fetch_all(&stmt, &cols.iter().collect::<Vec<_>>())
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Lease {
                bucket: u32::try_from(r.get("bucket")?.as_i64()?).ok()?,
                holder: r.get("holder")?.as_str()?.to_owned(),
                expires_at: crate::values::parse_datetime(r.get("expires_at")?.as_str()?)?,
            })
        })
        .collect())
}

/// Renews this engine's leases, claims free or expired buckets up to its
/// fair share and releases the ones above it. Returns the buckets held,
/// ascending.
pub async fn claim(
    db: &Db,
    holder: &str,
    buckets: u32,
    ttl: Duration,
    now: NaiveDateTime,
) -> Result<Vec<u32>, DbError> {
    let live = alive(db, holder, now - ttl, now).await?;
    let current = leases(db).await?;
    let share = buckets.div_ceil(live.max(1)) as usize;
    let mut mine: Vec<u32> = current
        .iter()
        .filter(|l| l.holder == holder && l.expires_at > now)
        .map(|l| l.bucket)
        .collect();
    mine.sort_unstable();
    let expires = now + ttl;
    // One short transaction per bucket: a claim never holds one bucket's
    // row lock while waiting for another's, so two engines cannot deadlock.
    // Above the share (another engine appeared): give the highest back.
    while mine.len() > share {
        let bucket = mine.pop().unwrap_or_default();
        let stmt = Query::delete()
            .from_table(a(TABLE))
            .and_where(Expr::col(a("bucket")).eq(i64::from(bucket)))
            .and_where(Expr::col(a("holder")).eq(holder))
            .to_owned();
        execute(db, &stmt).await?;
    }
    let mut held = Vec::with_capacity(share);
    for &bucket in &mine {
        if execute(db, &renewal(holder, bucket, expires, now)).await? == 1 {
            held.push(bucket);
        }
    }
    let taken: Vec<u32> = current
        .iter()
        .filter(|l| l.expires_at > now)
        .map(|l| l.bucket)
        .collect();
    // Start the search at a place that differs per holder, so engines
    // starting together do not all race for bucket 0 first.
    let start = bucket_of(holder, buckets);
    for i in 0..buckets {
        if held.len() >= share {
            break;
        }
        let bucket = (start + i) % buckets;
        if taken.contains(&bucket) {
            continue;
        }
        if take(db, holder, bucket, expires, now).await? {
            held.push(bucket);
        }
    }
    held.sort_unstable();
    Ok(held)
}

/// Marks `holder` alive at `now`; returns how many engines were seen since
/// `since` (itself included).
async fn alive(
    db: &Db,
    holder: &str,
    since: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<u32, DbError> {
    let upsert = Query::insert()
        .into_table(a(ENGINES))
        .columns(["holder", "seen_at"].map(a))
        .values_panic([holder.into(), now.into()])
        .on_conflict(
            OnConflict::column(a("holder"))
                .update_column(a("seen_at"))
                .to_owned(),
        )
        .to_owned();
    execute(db, &upsert).await?;
    let count = Query::select()
        .expr(sea_query::Func::count(Expr::col(a("holder"))))
        .from(a(ENGINES))
        .and_where(Expr::col(a("seen_at")).gt(since))
        .to_owned();
    Ok(u32::try_from(db.fetch_i64(&count).await?).unwrap_or(1))
}

/// Runs one statement in its own transaction; returns the rows it touched.
async fn execute(db: &Db, stmt: &impl sea_query::QueryStatementWriter) -> Result<u64, DbError> {
    let mut tx = db.begin().await?;
    let n = tx.execute(stmt).await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes a bucket nobody holds (no row) or whose lease has expired.
async fn take(
    db: &Db,
    holder: &str,
    bucket: u32,
    expires: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    let insert = Query::insert()
        .into_table(a(TABLE))
        .columns(["bucket", "holder", "expires_at"].map(a))
        .values_panic([i64::from(bucket).into(), holder.into(), expires.into()])
        .on_conflict(OnConflict::column(a("bucket")).do_nothing().to_owned())
        .to_owned();
    if execute(db, &insert).await? == 1 {
        return Ok(true);
    }
    let update = Query::update()
        .table(a(TABLE))
        .values([
            (a("holder"), holder.into()),
            (a("expires_at"), expires.into()),
        ])
        .and_where(Expr::col(a("bucket")).eq(i64::from(bucket)))
        .and_where(Expr::col(a("expires_at")).lte(now))
        .to_owned();
    Ok(execute(db, &update).await? == 1)
}

/// Extends `holder`'s unexpired lease on `bucket` to `expires`.
fn renewal(
    holder: &str,
    bucket: u32,
    expires: NaiveDateTime,
    now: NaiveDateTime,
) -> sea_query::UpdateStatement {
    Query::update()
        .table(a(TABLE))
        .value(a("expires_at"), expires)
        .and_where(Expr::col(a("bucket")).eq(i64::from(bucket)))
        .and_where(Expr::col(a("holder")).eq(holder))
        .and_where(Expr::col(a("expires_at")).gt(now))
        .to_owned()
}

/// Inside the transaction that commits a unit's results: if this engine's
/// lease on `bucket` has not expired at `now` (the current time, not the
/// start of the pass), extends it to `now + ttl` and returns `true`. On
/// `false` the caller must roll back. See the module comment for why this
/// fences.
pub async fn hold(
    tx: &mut Tx,
    holder: &str,
    bucket: u32,
    ttl: Duration,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    Ok(tx.execute(&renewal(holder, bucket, now + ttl, now)).await? == 1)
}

/// Gives every lease of `holder` up (at shutdown), so other engines take
/// its buckets at once instead of after the expiry.
pub async fn release_all(db: &Db, holder: &str) -> Result<(), DbError> {
    let stmt = Query::delete()
        .from_table(a(TABLE))
        .and_where(Expr::col(a("holder")).eq(holder))
        .to_owned();
    let engine = Query::delete()
        .from_table(a(ENGINES))
        .and_where(Expr::col(a("holder")).eq(holder))
        .to_owned();
    let mut tx = db.begin().await?;
    tx.execute(&stmt).await?;
    tx.execute(&engine).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Pinned: a unit's bucket must not move between releases.
        assert_eq!(bucket_of("356938035643809", 64), 3);
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            counts[bucket_of(&format!("35{i:013}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }
}
