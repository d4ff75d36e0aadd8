//! The daily level: daily rollups in one Parquet file per measurement and
//! UTC month, `blocks/<measurement hex>/1d/<yyyy>/<yyyy-mm>.parquet`, so a
//! read of a year at a whole-day interval opens about twelve files, not the
//! hourly rollups of 365 day blocks.
//!
//! A month file has the columns of the hourly rollup files (`imei, tags,
//! field, time, count, sum, min, max, integer`), one row per unit, series,
//! field and day (`time` is the start of the UTC day), in the same order
//! (`imei, tags, field, time`), in row groups with statistics. Its footer
//! names the block each day was built from (key `smartsolar.days`, a JSON
//! list of `[day, seq]`): a read uses a day's rows only while that day is
//! still that one block (and the heads hold nothing of the unit that day), so
//! a month file that is behind (a day rewritten since, a day deleted, a pass
//! that has not run yet, a store opened on older data) is never wrong: those
//! days are read from their hourly rollups instead.
//!
//! The flusher's hourly pass, after merging each closed day into one block,
//! rewrites every month whose closed single-block days differ from what its
//! file holds: the rows of the days still valid are copied from the old file,
//! the others summed from the hours of each day's hourly rollup file, merged
//! in key order with one row group per source in memory, written to `*.tmp`,
//! `fsync`ed and renamed over the old file. Retention drops expired days from
//! their month files *before* it deletes their blocks: a month file then
//! never names a block that is gone, whose `seq` a new block could take after
//! a restart (`seq`s restart from the highest block on disk).
//!
//! Why this layout: `blocks/*/*/*.parquet` (raw values) and
//! `blocks/*/*/1h/*.parquet` (hourly rollups) must not match these files,
//! which `blocks/*/1d/*/*.parquet` globs.

use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Datelike;
use parquet::file::metadata::KeyValue;

use super::block::{self, Rollup, RollupCursor, DAY_NS, ROLLUP_NS};
use super::live::{LiveBlock, LiveMonth, OpenBlocks};
use super::{sync_dir, Disk, Inner, View};
use crate::tsdb::{Query, TsdbError};

/// The footer key naming the block (`seq`) each day of a month file came from.
const DAYS_KEY: &str = "smartsolar.days";

/// A UTC calendar month, as months since 1970-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Month(i64);

impl Month {
    /// The month of `day` (days since the epoch).
    pub(super) fn of_day(day: i64) -> Self {
        let date = chrono::DateTime::from_timestamp(day.saturating_mul(86_400), 0)
            .unwrap_or_default()
            .date_naive();
        Self((i64::from(date.year()) - 1970) * 12 + i64::from(date.month0()))
    }

    /// `yyyy-mm`.
    fn name(self) -> String {
        let (year, month) = (1970 + self.0.div_euclid(12), self.0.rem_euclid(12) + 1);
        format!("{year:04}-{month:02}")
    }

    fn parse(name: &str) -> Option<Self> {
        let (year, month) = name.split_once('-')?;
        let (year, month): (i64, i64) = (year.parse().ok()?, month.parse().ok()?);
        (1..=12)
            .contains(&month)
            .then_some(Self((year - 1970) * 12 + month - 1))
    }
}

/// Where a month file lives, known from its path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MonthMeta {
    pub(super) measurement: String,
    pub(super) month: Month,
    pub(super) path: PathBuf,
}

impl MonthMeta {
    pub(super) fn new(root: &Path, measurement: &str, month: Month) -> Self {
        let name = month.name();
        Self {
            measurement: measurement.to_owned(),
            month,
            path: root
                .join(hex::encode(measurement))
                .join("1d")
                .join(&name[..name.len() - 3])
                .join(format!("{name}.parquet")),
        }
    }
}

/// Every month file under `root`; leftovers of an interrupted rewrite
/// (`*.tmp`) are deleted (the month's previous file, if any, is whole).
pub(super) fn list(root: &Path) -> Result<Vec<MonthMeta>, TsdbError> {
    let mut out = Vec::new();
    for (measurement, dir) in block::measurement_dirs(root)? {
        let daily = dir.join("1d");
        if !daily.is_dir() {
            continue;
        }
        for year in std::fs::read_dir(&daily)? {
            let year = year?;
            if !year.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(year.path())? {
                let f = f?;
                let name = f.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".tmp") {
                    std::fs::remove_file(f.path())?;
                } else if let Some(month) = name.strip_suffix(".parquet").and_then(Month::parse) {
                    out.push(MonthMeta {
                        measurement: measurement.clone(),
                        month,
                        path: f.path(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The days a month file holds and the block each came from, from its
/// footer; `None` if it does not say.
pub(super) fn days_in(reader: &block::Reader) -> Option<BTreeMap<i64, u64>> {
    let pairs: Vec<(i64, u64)> = serde_json::from_str(reader.metadata(DAYS_KEY)?).ok()?;
    Some(pairs.into_iter().collect())
}

/// One day's rollups summed from its hours: the rows of an hourly rollup
/// file (sorted by unit, series, field, hour) folded per unit, series and
/// field, in the same order.
struct DaySums {
    hours: Peekable<RollupCursor>,
    day_start: i64,
}

impl Iterator for DaySums {
    type Item = Result<Rollup, TsdbError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut day = match self.hours.next()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        day.time = self.day_start;
        while let Some(Ok(hour)) = self.hours.peek() {
            if (&hour.imei, &hour.tags, &hour.field) != (&day.imei, &day.tags, &day.field) {
                break;
            }
            day.absorb(hour);
            self.hours.next();
        }
        Some(Ok(day))
    }
}

type Rollups = Box<dyn Iterator<Item = Result<Rollup, TsdbError>>>;

/// Sources each sorted by [`Rollup::key`], no key in two of them (each holds
/// other days), merged into one sorted stream. Ends at the first error.
struct Merged {
    sources: Vec<Rollups>,
    heads: Vec<Option<Rollup>>,
    started: bool,
    failed: bool,
}

impl Merged {
    fn new(sources: Vec<Rollups>) -> Self {
        Self {
            heads: sources.iter().map(|_| None).collect(),
            sources,
            started: false,
            failed: false,
        }
    }

    fn refill(&mut self, i: usize) -> Result<(), TsdbError> {
        self.heads[i] = self.sources[i].next().transpose()?;
        Ok(())
    }
}

impl Iterator for Merged {
    type Item = Result<Rollup, TsdbError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                if let Err(e) = self.refill(i) {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let next = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((i, h.as_ref()?.key())))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(i, _)| i)?;
        let row = self.heads[next].take();
        if let Err(e) = self.refill(next) {
            self.failed = true;
            return Some(Err(e));
        }
        row.map(Ok)
    }
}

/// For each (measurement, month), the closed days (ended over an hour before
/// `now_ns`) of `blocks` that are one block each, with that block.
fn closed_single_days(
    blocks: &[Arc<LiveBlock>],
    now_ns: i64,
) -> BTreeMap<(String, Month), BTreeMap<i64, Arc<LiveBlock>>> {
    let mut per_day: BTreeMap<(&str, i64), Vec<&Arc<LiveBlock>>> = BTreeMap::new();
    for b in blocks {
        per_day
            .entry((b.measurement.as_str(), b.day))
            .or_default()
            .push(b);
    }
    let mut out: BTreeMap<(String, Month), BTreeMap<i64, Arc<LiveBlock>>> = BTreeMap::new();
    for ((measurement, day), blocks) in per_day {
        if let [one] = blocks.as_slice() {
            if (day + 1).saturating_mul(DAY_NS).saturating_add(ROLLUP_NS) <= now_ns {
                out.entry((measurement.to_owned(), Month::of_day(day)))
                    .or_default()
                    .insert(day, Arc::clone(one));
            }
        }
    }
    out
}

impl Inner {
    /// Brings every month file up to date with the closed days that are one
    /// block each at `now_ns` (the flusher's hourly pass, after
    /// [`Inner::close_days`]). A month that fails is logged and left for the
    /// next pass; the others go on.
    pub(super) fn roll_up_days(&self, now_ns: i64) -> Result<(), TsdbError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        if !self.daily_rollups {
            return Ok(());
        }
        // One month writer at a time (the flusher, or a bench's or test's
        // pass): two would write the same temporary file. Flushes and merges
        // go on meanwhile; a day they change is one the file no longer
        // matches, which reads notice.
        let _one = disk.rolling_up.lock().unwrap_or_else(|e| e.into_inner());
        let view = self.current();
        let wanted = closed_single_days(&view.blocks, now_ns);
        let keys: BTreeSet<&(String, Month)> = wanted.keys().chain(view.months.keys()).collect();
        let mut failed = None;
        for key in keys {
            if disk.stop.load(Ordering::Acquire) {
                break;
            }
            let old = view.months.get(key);
            let have = old.map(|m| self.month_days(m)).unwrap_or_default();
            let want = wanted.get(key).cloned().unwrap_or_default();
            // (No days known for a listed file: it cannot be read, and is
            // rebuilt or deleted.)
            if !have.is_empty()
                && have.len() == want.len()
                && want.iter().all(|(d, b)| have.get(d) == Some(&b.seq))
            {
                continue;
            }
            let keep: BTreeMap<i64, u64> = have
                .into_iter()
                .filter(|(d, seq)| want.get(d).is_some_and(|b| b.seq == *seq))
                .collect();
            let add = want
                .into_iter()
                .filter(|(d, _)| !keep.contains_key(d))
                .collect();
            if let Err(e) = self.rewrite_month(disk, key, old, keep, add) {
                tracing::error!(measurement = %key.0, month = %key.1.name(), error = %e, "writing a month of daily rollups failed; will retry");
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Takes the days of `expired` blocks out of their month files (before
    /// retention deletes the blocks: see the module's comment). The caller
    /// holds `disk.rolling_up` until the blocks are out of the view, so no
    /// pass puts their days back in between.
    pub(super) fn drop_days_from_months(
        &self,
        disk: &Disk,
        expired: &[Arc<LiveBlock>],
    ) -> Result<(), TsdbError> {
        let view = self.current();
        let mut gone: BTreeMap<(String, Month), BTreeSet<i64>> = BTreeMap::new();
        for b in expired {
            gone.entry((b.measurement.clone(), Month::of_day(b.day)))
                .or_default()
                .insert(b.day);
        }
        for (key, days) in gone {
            let Some(old) = view.months.get(&key) else {
                continue;
            };
            let have = self.month_days(old);
            if !days.iter().any(|d| have.contains_key(d)) {
                continue;
            }
            let keep = have
                .into_iter()
                .filter(|(d, _)| !days.contains(d))
                .collect();
            self.rewrite_month(disk, &key, Some(old), keep, BTreeMap::new())?;
        }
        Ok(())
    }

    /// The days month file `m` holds (read from its footer the first time);
    /// none if it cannot be read, so it is rebuilt whole.
    fn month_days(&self, m: &LiveMonth) -> BTreeMap<i64, u64> {
        if let Some(days) = m.days() {
            return days.clone();
        }
        match block::Reader::open(&m.meta.path).map(|r| days_in(&r)) {
            Ok(Some(days)) => m.learn_days(days).clone(),
            Ok(None) => {
                tracing::warn!(path = %m.meta.path.display(), "a month of daily rollups does not say its days; rebuilding it");
                BTreeMap::new()
            }
            Err(e) => {
                tracing::warn!(path = %m.meta.path.display(), error = %e, "a month of daily rollups cannot be read; rebuilding it");
                BTreeMap::new()
            }
        }
    }

    /// Writes the month file of `key` with the days of `keep` copied from the
    /// old file and those of `add` summed from their blocks' hourly rollups,
    /// and puts it in the view; with no day left, deletes it.
    fn rewrite_month(
        &self,
        disk: &Disk,
        (measurement, month): &(String, Month),
        old: Option<&Arc<LiveMonth>>,
        keep: BTreeMap<i64, u64>,
        add: BTreeMap<i64, Arc<LiveBlock>>,
    ) -> Result<(), TsdbError> {
        let meta = MonthMeta::new(&disk.blocks_dir, measurement, *month);
        let key = (measurement.clone(), *month);
        if keep.is_empty() && add.is_empty() {
            match std::fs::remove_file(&meta.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(dir) = meta.path.parent() {
                sync_dir(dir)?;
                // The year's directory goes with its last month (fails, as it
                // should, while other months are left).
                let _ = std::fs::remove_dir(dir);
            }
            self.publish_month(key, old, None);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut sources: Vec<Rollups> = Vec::with_capacity(add.len() + 1);
        if !keep.is_empty() {
            let kept: BTreeSet<i64> = keep.keys().copied().collect();
            sources.push(Box::new(RollupCursor::open(&meta.path, move |t| {
                kept.contains(&t.div_euclid(DAY_NS))
            })?));
        }
        for (day, b) in &add {
            sources.push(Box::new(DaySums {
                hours: RollupCursor::open(&b.rollup_path(), |_| true)?.peekable(),
                day_start: day * DAY_NS,
            }));
        }
        let mut days = keep;
        days.extend(add.iter().map(|(d, b)| (*d, b.seq)));
        let listed: Vec<(i64, u64)> = days.iter().map(|(d, s)| (*d, *s)).collect();
        let footer = KeyValue::new(
            DAYS_KEY.into(),
            serde_json::to_string(&listed).expect("pairs of integers serialise"),
        );
        let rows =
            block::write_rollups(&meta.path, measurement, vec![footer], Merged::new(sources))?;
        tracing::info!(
            measurement = %measurement,
            month = %month.name(),
            days = days.len(),
            summed = add.len(),
            rows,
            ms = started.elapsed().as_millis() as u64,
            "daily rollups written"
        );
        self.publish_month(key, old, Some(LiveMonth::written(meta, days)));
        Ok(())
    }

    /// Puts `new` in the view in place of `old` (or takes `old` out).
    fn publish_month(
        &self,
        key: (String, Month),
        old: Option<&Arc<LiveMonth>>,
        new: Option<Arc<LiveMonth>>,
    ) {
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let mut months = (*view.months).clone();
            match new {
                Some(new) => months.insert(key, new),
                None => months.remove(&key),
            };
            view.months = Arc::new(months);
        }
        if let Some(old) = old {
            self.open.forget_month(old);
        }
    }
}

/// Reads into `out` the daily rollups of `q`'s unit for the days of `days`
/// (whole days in the range, one block each, nothing in the heads) that a
/// month file holds from that same block; returns those days. A month file
/// that cannot be opened is skipped: its days are read from hourly rollups.
pub(super) fn read_days(
    q: &Query,
    view: &View,
    blocks: &[&LiveBlock],
    days: &BTreeSet<i64>,
    open: &OpenBlocks,
    out: &mut Vec<Rollup>,
) -> Result<BTreeSet<i64>, TsdbError> {
    let seq_of: BTreeMap<i64, u64> = blocks
        .iter()
        .filter(|b| days.contains(&b.day))
        .map(|b| (b.day, b.seq))
        .collect();
    let mut by_month: BTreeMap<Month, Vec<i64>> = BTreeMap::new();
    for day in days {
        by_month.entry(Month::of_day(*day)).or_default().push(*day);
    }
    let mut served = BTreeSet::new();
    for (month, wanted) in by_month {
        let Some(m) = view.months.get(&(q.measurement.clone(), month)) else {
            continue;
        };
        let matches = |held: &BTreeMap<i64, u64>| -> BTreeSet<i64> {
            wanted
                .iter()
                .copied()
                .filter(|d| held.get(d).is_some_and(|s| Some(s) == seq_of.get(d)))
                .collect()
        };
        if m.days().is_some_and(|held| matches(held).is_empty()) {
            continue;
        }
        let reader = match open.get_month(m) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %m.meta.path.display(), error = %e, "a month of daily rollups cannot be read; reading hourly rollups");
                continue;
            }
        };
        // The file opened may be newer than the view's: what it holds is
        // what its own footer says.
        let here = days_in(&reader)
            .map(|held| matches(&held))
            .unwrap_or_default();
        if here.is_empty() {
            continue;
        }
        let imei = q.imei.as_bytes();
        for g in 0..reader.row_groups() {
            if reader.may_hold(g, &q.imei) {
                reader.read_rollups_where(
                    g,
                    |m, t| m == imei && here.contains(&t.div_euclid(DAY_NS)),
                    |r| out.push(r),
                )?;
            }
        }
        served.extend(here);
    }
    Ok(served)
}
