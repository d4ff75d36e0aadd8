//! The embedded time-series store: the default for `smartsolar serve`.
//!
//! **Head and blocks.** Recent values live in the *head*: in memory,
//! columnar per unit and field (`imei → measurement → series (tag set) →
//! field → column`, each column a pair of time-sorted vectors), split into
//! shards by IMEI, each behind its own `RwLock`. Every write batch is first
//! appended to the head's write-ahead log ([`wal`]) and made durable with
//! group commit (concurrent writers share one `fsync`) before `write`
//! returns. Once the head holds `head_values` values it is *frozen* (still
//! readable), a new head and log segment take the writes, and the frozen
//! head is written out as immutable, zstd-compressed Parquet *blocks*
//! ([`block`]), one per measurement and UTC day; then its log segment is
//! deleted. Memory is therefore bounded by two heads, whatever the history.
//!
//! **Reads** merge the blocks that overlap the query (only the row groups
//! whose statistics may hold the unit are decoded), the frozen head and the
//! head, later writes winning on the same (series, field, time).
//!
//! **Compaction and retention.** When a measurement's day has
//! `compact_at` blocks they are merged (a streaming k-way merge, one row
//! group per block in memory) into one. Days older than a measurement's
//! retention (`retention_days`; absent means forever) are deleted whole.
//! Once a day has closed (and is one block), its daily rollups go into its
//! measurement's month file ([`daily`]), from which reads at whole-day
//! intervals take whole days.
//!
//! **Opening** lists the block files (reading none) and replays only the
//! log segments of heads not yet in blocks, so it does not grow with
//! history. A crash while a block is written leaves a `*.tmp` file
//! (deleted on open) and the log segment (replayed); a crash after the block
//! is renamed into place but before the segment is deleted replays values
//! that are also in a block, which reads resolve as rewrites of the same
//! values.
//!
//! Writing the same (series, field, time) again overwrites, so replays and
//! redeliveries are idempotent. An integer written to a float column is
//! stored as a float; a float written to an integer column turns the column
//! into floats; other type conflicts are refused for that value (the rest of
//! the batch is kept) and reported as [`TsdbError::InvalidPoint`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::tsdb::Rows;

use super::filter::ValueRef;
use super::influx::result_for;
use super::{
    check_point, Aggregate, FieldValue, Fields, Point, Query, QueryResult, TimeSeries, TsdbError,
};

mod block;
mod daily;
mod live;
mod wal;

use block::{nan_sticky, BlockMeta, Rollup, Row, DAY_NS, ROLLUP_NS};
use daily::Month;
use live::{LiveBlock, LiveMonth, OpenBlocks};

/// Settings of the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Directory of the log and blocks; `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// `fsync` the log before a write is acknowledged (survives power loss;
    /// concurrent writers share one flush).
    pub fsync: bool,
    /// Lock shards (by IMEI).
    pub shards: usize,
    /// Values the head holds before it is written out as blocks (with a
    /// data dir); bounds memory (at most about twice this many values are in
    /// memory) and what opening after a crash replays.
    pub head_values: usize,
    /// Blocks of one measurement and day that trigger merging them into one.
    pub compact_at: usize,
    /// Days of data kept per measurement; a measurement not listed is kept
    /// forever.
    pub retention_days: BTreeMap<String, u32>,
    /// Block files kept open for reads (the most recently read; each holds a
    /// file descriptor and its parsed footer, tens to hundreds of KiB).
    pub open_blocks: usize,
    /// Keep daily rollups in a file per measurement and month, and answer
    /// whole-day downsampled reads from them ([`daily`]); off, such reads
    /// use the hourly rollups of each day's block (a bench's same-run
    /// baseline).
    pub daily_rollups: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            fsync: true,
            shards: 64,
            head_values: 2_000_000,
            compact_at: 8,
            retention_days: BTreeMap::new(),
            open_blocks: 128,
            daily_rollups: true,
        }
    }
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
    /// Stops the background flusher, and waits for it, when the last handle
    /// goes: a dropped store writes nothing more (a store opened again on the
    /// same directory would otherwise race a merge still under way).
    _flusher: Option<Arc<FlusherThread>>,
}

/// The background flusher's thread.
struct FlusherThread {
    stop: Arc<AtomicBool>,
    kick: SyncSender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlusherThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.kick.try_send(());
        if let Some(thread) = self.thread.take() {
            // At most the step under way (one block written or merged).
            let _ = thread.join();
        }
    }
}

struct Inner {
    /// What readers see; writers hold it shared while they log and apply a
    /// batch, so freezing the head (exclusive) never splits a batch between
    /// a log segment and the other head.
    view: RwLock<View>,
    disk: Option<Disk>,
    /// The blocks reads keep open.
    open: OpenBlocks,
    fsync: bool,
    shards: usize,
    head_values: usize,
    /// Keep and read the daily rollups ([`EmbeddedConfig::daily_rollups`]).
    daily_rollups: bool,
}

#[derive(Clone)]
struct View {
    head: Arc<Head>,
    /// The previous head while it is written out as blocks.
    frozen: Option<Arc<Head>>,
    /// Every block, by `seq`. A block's files stay until no view lists it
    /// ([`live`]), so a read never loses a file it saw to a compaction.
    blocks: Arc<Vec<Arc<LiveBlock>>>,
    /// The month files of daily rollups, by measurement and month.
    months: Arc<BTreeMap<(String, Month), Arc<LiveMonth>>>,
}

struct Disk {
    blocks_dir: PathBuf,
    wal: wal::Wal,
    next_seq: AtomicU64,
    /// One flush or compaction at a time; holds the id of the log segment
    /// the head started in: the segments before it belong to the frozen head.
    flushing: Mutex<u64>,
    /// Wakes the background flusher.
    kick: SyncSender<()>,
    compact_at: usize,
    retention_days: BTreeMap<String, u32>,
    /// One writer of month files at a time.
    rolling_up: Mutex<()>,
    /// Set when the store is dropped: background passes stop between steps.
    stop: Arc<AtomicBool>,
    /// An exclusive lock on `<data_dir>/LOCK` while the store is open: two
    /// stores writing one directory would corrupt each other's blocks.
    _lock: std::fs::File,
}

/// In-memory values: the head (and the frozen head).
struct Head {
    shards: Vec<RwLock<Shard>>,
    values: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    units: HashMap<String, Unit>,
}

#[derive(Default)]
struct Unit {
    /// `(measurement, series)`: a unit has very few measurements.
    measurements: Vec<(String, Vec<Series>)>,
}

#[derive(Default)]
struct Series {
    tags: BTreeMap<String, String>,
    columns: HashMap<String, Column>,
}

/// A time-sorted column.
#[derive(Debug, Clone, PartialEq)]
struct Col<T> {
    t: Vec<i64>,
    v: Vec<T>,
}

impl<T> Default for Col<T> {
    fn default() -> Self {
        Self {
            t: Vec::new(),
            v: Vec::new(),
        }
    }
}

impl<T> Col<T> {
    fn insert(&mut self, t: i64, v: T) {
        match self.t.last() {
            None => {}
            Some(&last) if t > last => {}
            Some(_) => match self.t.binary_search(&t) {
                Ok(i) => {
                    self.v[i] = v;
                    return;
                }
                Err(i) => {
                    self.t.insert(i, t);
                    self.v.insert(i, v);
                    return;
                }
            },
        }
        self.t.push(t);
        self.v.push(v);
    }

    /// Index range of times in `[start, end]`.
    fn range(&self, start: i64, end: i64) -> std::ops::Range<usize> {
        let a = self.t.partition_point(|&x| x < start);
        let b = self.t.partition_point(|&x| x <= end);
        a..b.max(a)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Column {
    Float(Col<f64>),
    Int(Col<i64>),
    Str(Col<String>),
    Bool(Col<bool>),
}

impl Column {
    fn new_for(v: &FieldValue) -> Self {
        match v {
            FieldValue::Float(_) => Self::Float(Col::default()),
            FieldValue::Int(_) => Self::Int(Col::default()),
            FieldValue::Str(_) => Self::Str(Col::default()),
            FieldValue::Bool(_) => Self::Bool(Col::default()),
        }
    }

    /// An empty column of the same type.
    fn empty_like(&self) -> Self {
        match self {
            Self::Float(_) => Self::Float(Col::default()),
            Self::Int(_) => Self::Int(Col::default()),
            Self::Str(_) => Self::Str(Col::default()),
            Self::Bool(_) => Self::Bool(Col::default()),
        }
    }

    fn times(&self) -> &[i64] {
        match self {
            Self::Float(c) => &c.t,
            Self::Int(c) => &c.t,
            Self::Str(c) => &c.t,
            Self::Bool(c) => &c.t,
        }
    }

    /// Inserts, reconciling int/float; `Err` on any other type conflict.
    fn insert(&mut self, t: i64, v: &FieldValue) -> Result<(), &'static str> {
        match (&mut *self, v) {
            (Self::Float(c), FieldValue::Float(x)) => c.insert(t, *x),
            (Self::Float(c), FieldValue::Int(x)) => c.insert(t, *x as f64),
            (Self::Int(c), FieldValue::Int(x)) => c.insert(t, *x),
            (Self::Int(c), FieldValue::Float(x)) => {
                let c = std::mem::take(c);
                let mut f = Col {
                    t: c.t,
                    v: c.v.into_iter().map(|i| i as f64).collect(),
                };
                f.insert(t, *x);
                *self = Self::Float(f);
            }
            (Self::Str(c), FieldValue::Str(x)) => c.insert(t, x.clone()),
            (Self::Bool(c), FieldValue::Bool(x)) => c.insert(t, *x),
            _ => return Err("field type conflict"),
        }
        Ok(())
    }

    fn value(&self, i: usize) -> FieldValue {
        match self {
            Self::Float(c) => FieldValue::Float(c.v[i]),
            Self::Int(c) => FieldValue::Int(c.v[i]),
            Self::Str(c) => FieldValue::Str(c.v[i].clone()),
            Self::Bool(c) => FieldValue::Bool(c.v[i]),
        }
    }

    fn value_ref(&self, i: usize) -> ValueRef<'_> {
        match self {
            Self::Float(c) => ValueRef::Number(c.v[i]),
            Self::Int(c) => ValueRef::Number(c.v[i] as f64),
            Self::Str(c) => ValueRef::Str(&c.v[i]),
            Self::Bool(c) => ValueRef::Bool(c.v[i]),
        }
    }

    /// Aggregates the values at indices `r`; `None` for an empty range or a
    /// function that does not apply to the type.
    fn aggregate(&self, r: std::ops::Range<usize>, f: Aggregate) -> Option<FieldValue> {
        if r.is_empty() {
            return (f == Aggregate::Count).then_some(FieldValue::Int(0));
        }
        match f {
            Aggregate::Count => return Some(FieldValue::Int(r.len() as i64)),
            Aggregate::First => return Some(self.value(r.start)),
            Aggregate::Last => return Some(self.value(r.end - 1)),
            _ => {}
        }
        match self {
            Self::Float(c) => numeric(&c.v[r], f, FieldValue::Float),
            Self::Int(c) => match f {
                Aggregate::Sum => Some(FieldValue::Int(
                    c.v[r].iter().fold(0i64, |a, b| a.saturating_add(*b)),
                )),
                Aggregate::Min => c.v[r].iter().min().map(|x| FieldValue::Int(*x)),
                Aggregate::Max => c.v[r].iter().max().map(|x| FieldValue::Int(*x)),
                Aggregate::Spread => {
                    let s = &c.v[r];
                    let (mn, mx) = (s.iter().min()?, s.iter().max()?);
                    Some(FieldValue::Int(mx.saturating_sub(*mn)))
                }
                _ => {
                    let v: Vec<f64> = c.v[r].iter().map(|x| *x as f64).collect();
                    numeric(&v, f, FieldValue::Float)
                }
            },
            Self::Str(_) | Self::Bool(_) => None,
        }
    }
}

fn numeric(v: &[f64], f: Aggregate, wrap: fn(f64) -> FieldValue) -> Option<FieldValue> {
    let n = v.len() as f64;
    let out = match f {
        Aggregate::Mean => v.iter().sum::<f64>() / n,
        Aggregate::Sum => v.iter().sum(),
        Aggregate::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
        Aggregate::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Spread => {
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                - v.iter().copied().fold(f64::INFINITY, f64::min)
        }
        Aggregate::Median => {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            let m = s.len() / 2;
            if s.len() % 2 == 1 {
                s[m]
            } else {
                (s[m - 1] + s[m]) / 2.0
            }
        }
        Aggregate::Stddev => {
            if v.len() < 2 {
                return None;
            }
            let mean = v.iter().sum::<f64>() / n;
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt()
        }
        Aggregate::Count | Aggregate::First | Aggregate::Last => unreachable!("handled by caller"),
    };
    Some(wrap(out))
}

impl Embedded {
    /// Opens the store: lists the blocks under `data_dir/blocks` and replays
    /// the head's log (`data_dir/wal`; an old single `data_dir/tsdb.log` is
    /// taken over as the first segment).
    pub fn open(config: EmbeddedConfig) -> Result<Self, TsdbError> {
        let shards = config.shards.max(1);
        let head = Arc::new(Head::new(shards));
        let mut inner = Inner {
            view: RwLock::new(View {
                head: Arc::clone(&head),
                frozen: None,
                blocks: Arc::new(Vec::new()),
                months: Arc::new(BTreeMap::new()),
            }),
            disk: None,
            open: OpenBlocks::new(config.open_blocks),
            fsync: config.fsync,
            shards,
            head_values: config.head_values.max(1),
            daily_rollups: config.daily_rollups,
        };
        let mut kicked = None;
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir)?;
            let lock = lock_dir(dir)?;
            let wal_dir = dir.join("wal");
            std::fs::create_dir_all(&wal_dir)?;
            let legacy = dir.join("tsdb.log");
            if legacy.exists() && wal::segment_ids(&wal_dir)?.is_empty() {
                std::fs::rename(&legacy, wal_dir.join(format!("{:020}.log", 0)))?;
                sync_dir(&wal_dir)?;
                sync_dir(dir)?;
            }
            let blocks_dir = dir.join("blocks");
            let blocks: Vec<Arc<LiveBlock>> = block::list(&blocks_dir)?
                .into_iter()
                .map(LiveBlock::new)
                .collect();
            let next_seq = blocks.last().map_or(1, |b| b.seq + 1);
            // Listed only: which days a month file holds is read when a pass
            // or a read first needs it.
            let months = daily::list(&blocks_dir)?
                .into_iter()
                .map(|m| ((m.measurement.clone(), m.month), LiveMonth::listed(m)))
                .collect();
            let wal = wal::Wal::open(&wal_dir, |points| {
                // Conflicts were reported when first written; replay skips them the same way.
                let _ = head.apply(points);
            })?;
            let (kick, rx) = sync_channel(1);
            let stop = Arc::new(AtomicBool::new(false));
            let view = inner.view.get_mut().unwrap_or_else(|e| e.into_inner());
            view.blocks = Arc::new(blocks);
            view.months = Arc::new(months);
            inner.disk = Some(Disk {
                blocks_dir,
                wal,
                next_seq: AtomicU64::new(next_seq),
                flushing: Mutex::new(0),
                kick: kick.clone(),
                compact_at: config.compact_at.max(2),
                retention_days: config.retention_days.clone(),
                rolling_up: Mutex::new(()),
                stop: Arc::clone(&stop),
                _lock: lock,
            });
            kicked = Some((rx, kick, stop));
        }
        let inner = Arc::new(inner);
        let mut flusher_thread = None;
        if let Some((rx, kick, stop)) = kicked {
            let weak = Arc::downgrade(&inner);
            let stopped = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("tsdb-flush".into())
                .spawn(move || flusher(weak, rx, &stopped))?;
            flusher_thread = Some(Arc::new(FlusherThread {
                stop,
                kick,
                thread: Some(thread),
            }));
            // A replayed head may already be due.
            inner.kick_if_full();
        }
        Ok(Self {
            inner,
            _flusher: flusher_thread,
        })
    }

    /// A memory-only store (tests, benches).
    pub fn in_memory() -> Self {
        Self::open(EmbeddedConfig::default()).expect("a memory-only store cannot fail to open")
    }

    /// Stores points synchronously (what [`TimeSeries::write`] does).
    pub fn write_sync(&self, points: &[Point]) -> Result<(), TsdbError> {
        for p in points {
            check_point(p)?;
        }
        let started = Instant::now();
        let inner = &self.inner;
        let r = match &inner.disk {
            Some(disk) => {
                let mut buf = Vec::with_capacity(points.len() * 64);
                wal::encode_batch(&mut buf, points);
                let (seq, r, pressure) = {
                    let view = inner.view.read().unwrap_or_else(|e| e.into_inner());
                    let seq = disk.wal.append(&buf)?;
                    let r = view.head.apply(points);
                    (seq, r, view.head.len())
                };
                if inner.fsync {
                    disk.wal.sync(seq)?;
                }
                if pressure >= inner.head_values {
                    let _ = disk.kick.try_send(());
                }
                if pressure >= 2 * inner.head_values {
                    // The flusher is behind: write the head out here rather
                    // than let memory grow.
                    inner.flush(false)?;
                }
                r
            }
            None => self.inner.current().head.apply(points),
        };
        let values: usize = points.iter().map(|p| p.fields.len()).sum();
        metrics::counter!(crate::metrics::TSDB_POINTS_WRITTEN, "backend" => "embedded")
            .increment(points.len() as u64);
        metrics::counter!(crate::metrics::TSDB_VALUES_WRITTEN, "backend" => "embedded")
            .increment(values as u64);
        metrics::histogram!(crate::metrics::TSDB_WRITE_DURATION, "backend" => "embedded")
            .record(started.elapsed().as_secs_f64());
        r
    }

    /// Answers a query synchronously (what [`TimeSeries::query`] does).
    pub fn query_sync(&self, q: &Query) -> Result<QueryResult, TsdbError> {
        q.validate()?;
        let started = Instant::now();
        // The snapshot keeps every block it lists on disk until it is dropped
        // (`live`): a compaction or retention pass meanwhile cannot take a
        // file from under this read.
        let (times, columns) = self.try_query(q)?;
        metrics::histogram!(crate::metrics::TSDB_QUERY_DURATION, "backend" => "embedded")
            .record(started.elapsed().as_secs_f64());
        Ok(result_for(q, times, columns))
    }

    fn try_query(&self, q: &Query) -> Result<Rows, TsdbError> {
        let view = self.inner.current();
        let blocks: Vec<&LiveBlock> = view
            .blocks
            .iter()
            .filter(|b| b.measurement == q.measurement && b.overlaps(q.start_ns, q.end_ns))
            .map(|b| &**b)
            .collect();
        if blocks.is_empty() && view.frozen.is_none() {
            // Everything is in the head: answer from its columns in place.
            let shard = view
                .head
                .shard(&q.imei)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let series: Vec<&Series> = shard
                .units
                .get(&q.imei)
                .and_then(|u| u.series(&q.measurement))
                .map(|s| s.iter().collect())
                .unwrap_or_default();
            return Ok(answer(q, &series));
        }
        if let Some(rows) = self.answer_from_rollups(q, &view, &blocks)? {
            return Ok(rows);
        }
        let merged = gather(q, &view, &blocks, &self.inner.open)?;
        let series: Vec<&Series> = merged.iter().collect();
        Ok(answer(q, &series))
    }

    /// Answers a downsampled query from the blocks' hourly rollups where it
    /// can: for functions that combine (mean, count, sum, min, max,
    /// spread), intervals of whole hours, no `where`, one series, on the
    /// days that lie wholly in the range, have a single block and no values
    /// of the unit in the heads; with intervals of whole days, from the
    /// month files' daily rollups for the days they hold. The other days are
    /// read raw. `None`: not answerable this way.
    fn answer_from_rollups(
        &self,
        q: &Query,
        view: &View,
        blocks: &[&LiveBlock],
    ) -> Result<Option<Rows>, TsdbError> {
        use Aggregate::{Count, Max, Mean, Min, Spread, Sum};
        let Some(d) = q.downsample else {
            return Ok(None);
        };
        if q.filter.is_some()
            || d.interval_ns % ROLLUP_NS != 0
            || !matches!(d.function, Mean | Count | Sum | Min | Max | Spread)
        {
            return Ok(None);
        }
        let mut per_day: BTreeMap<i64, usize> = BTreeMap::new();
        for b in blocks {
            *per_day.entry(b.day).or_default() += 1;
        }
        let head_days = view.head_days(q);
        let rolled: BTreeSet<i64> = per_day
            .into_iter()
            .filter(|(day, n)| {
                *n == 1
                    && day * DAY_NS >= q.start_ns
                    && (day + 1) * DAY_NS - 1 <= q.end_ns
                    && !head_days.contains(day)
            })
            .map(|(day, _)| day)
            .collect();
        if rolled.is_empty() {
            return Ok(None);
        }
        let raw_blocks: Vec<&LiveBlock> = blocks
            .iter()
            .copied()
            .filter(|b| !rolled.contains(&b.day))
            .collect();
        let mut rollups: Vec<Rollup> = Vec::new();
        // Whole-day buckets take whole days from the month files where they
        // hold them, the other days from each day's hourly rollups.
        let from_months = if self.inner.daily_rollups && d.interval_ns % DAY_NS == 0 {
            daily::read_days(q, view, blocks, &rolled, &self.inner.open, &mut rollups)?
        } else {
            BTreeSet::new()
        };
        for b in blocks
            .iter()
            .filter(|b| rolled.contains(&b.day) && !from_months.contains(&b.day))
        {
            let r = self.inner.open.get(b, live::File::Rollups)?;
            for g in 0..r.row_groups() {
                if r.may_hold(g, &q.imei) {
                    r.read_rollups(g, &q.imei, q.start_ns, q.end_ns, |x| rollups.push(x))?;
                }
            }
        }
        let raw = gather(q, view, &raw_blocks, &self.inner.open)?;
        // One series only: several would need their rows merged by time.
        let wanted =
            |tags: &BTreeMap<String, String>| q.tags.iter().all(|(k, v)| tags.get(k) == Some(v));
        let mut series: BTreeSet<BTreeMap<String, String>> = raw
            .iter()
            .filter(|s| wanted(&s.tags))
            .map(|s| s.tags.clone())
            .collect();
        let mut parsed: HashMap<&str, Option<BTreeMap<String, String>>> = HashMap::new();
        for r in &rollups {
            let tags = parsed
                .entry(r.tags.as_str())
                .or_insert_with(|| serde_json::from_str(&r.tags).ok());
            match tags {
                Some(t) if wanted(t) => {
                    series.insert(t.clone());
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
        if series.len() > 1 {
            return Ok(None);
        }
        let fields: Vec<String> = match &q.fields {
            Fields::List(l) => l.clone(),
            Fields::All => raw
                .iter()
                .filter(|s| wanted(&s.tags))
                .flat_map(|s| s.columns.keys().cloned())
                .chain(
                    rollups
                        .iter()
                        .filter(|r| parsed[r.tags.as_str()].as_ref().is_some_and(&wanted))
                        .map(|r| r.field.clone()),
                )
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let w = d.interval_ns;
        let (first, n) = bucket_grid(q, w);
        let mut any = false;
        let mut cols = Vec::with_capacity(fields.len());
        for f in &fields {
            let mut buckets = vec![Partial::default(); n];
            let mut put = |t: i64, count, sum, min, max, integer| {
                let b = ((t.div_euclid(w) * w - first) / w) as usize;
                if t >= q.start_ns && t <= q.end_ns && b < n {
                    buckets[b].add(count, sum, min, max, integer);
                    any = true;
                }
            };
            for s in raw.iter().filter(|s| wanted(&s.tags)) {
                let Some(c) = s.columns.get(f) else { continue };
                for k in range_of(c, q) {
                    let (x, integer) = match c.value(k) {
                        FieldValue::Float(x) => (x, false),
                        FieldValue::Int(x) => (x as f64, true),
                        _ => (f64::NAN, false),
                    };
                    put(c.times()[k], 1, x, x, x, integer);
                }
            }
            for r in rollups.iter().filter(|r| r.field == *f) {
                if parsed[r.tags.as_str()].as_ref().is_some_and(&wanted) {
                    put(r.time, r.count, r.sum, r.min, r.max, r.integer);
                }
            }
            cols.push((
                f.clone(),
                buckets.iter().map(|b| b.value(d.function)).collect(),
            ));
        }
        if !any {
            return Ok(Some((
                Vec::new(),
                fields.iter().map(|f| (f.clone(), Vec::new())).collect(),
            )));
        }
        let times = (0..n).map(|b| first + b as i64 * w).collect();
        Ok(Some((times, cols)))
    }

    /// Writes the head out as blocks now, whatever its size (tests,
    /// benches, shutdown); a memory-only store does nothing.
    pub fn flush(&self) -> Result<(), TsdbError> {
        self.inner.flush(true)
    }

    /// Runs the flusher's hourly pass now: retention, merging each closed day
    /// into one block, the month files of daily rollups (benches, tests;
    /// the flusher also runs it within a minute of opening).
    pub fn maintain_now(&self) -> Result<(), TsdbError> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        self.inner.apply_retention(now)?;
        self.inner.close_days(now)?;
        self.inner.roll_up_days(now)
    }

    /// Number of stored values (all units, fields and times): the heads'
    /// plus the blocks' rows (read from their footers).
    pub fn value_count(&self) -> usize {
        let view = self.inner.current();
        let mut n = view.head.count() + view.frozen.as_ref().map_or(0, |h| h.count());
        for b in view.blocks.iter() {
            if let Ok(r) = block::Reader::open(&b.path) {
                n += r.rows();
            }
        }
        n
    }

    /// Bytes on disk (blocks and log), for benches and metrics.
    pub fn disk_bytes(&self) -> u64 {
        self.inner
            .disk
            .as_ref()
            .map_or(0, |d| dir_bytes(&d.blocks_dir) + d.wal.disk_bytes())
    }

    /// Number of block files.
    pub fn block_count(&self) -> usize {
        self.inner.current().blocks.len()
    }
}

/// One unit's series in `q`'s range, merged from `blocks` (in `seq` order),
/// the frozen head and the head: later writes win.
fn gather(
    q: &Query,
    view: &View,
    blocks: &[&LiveBlock],
    open: &OpenBlocks,
) -> Result<Vec<Series>, TsdbError> {
    let mut merged: Vec<Series> = Vec::new();
    let mut by_tags: HashMap<String, usize> = HashMap::new();
    for b in blocks {
        let reader = open.get(b, live::File::Values)?;
        let imei = q.imei.as_bytes();
        for g in 0..reader.row_groups() {
            if !reader.may_hold(g, &q.imei) {
                continue;
            }
            let mut bad = None;
            reader.read_group(
                g,
                |m, t| m == imei && t >= q.start_ns && t <= q.end_ns,
                |row| {
                    let i = match by_tags.get(&row.tags) {
                        Some(i) => *i,
                        None => {
                            let tags = serde_json::from_str(&row.tags).unwrap_or_else(|e| {
                                bad = Some(e.to_string());
                                BTreeMap::new()
                            });
                            merged.push(Series {
                                tags,
                                columns: HashMap::new(),
                            });
                            by_tags.insert(row.tags.clone(), merged.len() - 1);
                            merged.len() - 1
                        }
                    };
                    let cols = &mut merged[i].columns;
                    let col = cols
                        .entry(row.field)
                        .or_insert_with(|| Column::new_for(&row.value));
                    // A type conflict between blocks keeps the earlier value.
                    let _ = col.insert(row.time, &row.value);
                },
            )?;
            if let Some(e) = bad {
                return Err(TsdbError::Io(std::io::Error::other(format!(
                    "{}: bad tags: {e}",
                    b.path.display()
                ))));
            }
        }
    }
    view.for_each_head_series(q, |s| {
        let i = match merged.iter().position(|m| m.tags == s.tags) {
            Some(i) => i,
            None => {
                merged.push(Series {
                    tags: s.tags.clone(),
                    columns: HashMap::new(),
                });
                merged.len() - 1
            }
        };
        for (name, c) in &s.columns {
            let r = range_of(c, q);
            let col = merged[i]
                .columns
                .entry(name.clone())
                .or_insert_with(|| c.empty_like());
            for k in r {
                let _ = col.insert(c.times()[k], &c.value(k));
            }
        }
    });
    Ok(merged)
}

/// The downsampling grid of `q` with buckets `w` ns wide: the start of the first bucket and
/// how many buckets (at most `q.limit`).
fn bucket_grid(q: &Query, w: i64) -> (i64, usize) {
    let first = q.start_ns.div_euclid(w) * w;
    let last = q.end_ns.div_euclid(w) * w;
    let n = ((last - first) / w + 1) as usize;
    (first, q.limit.map_or(n, |l| n.min(l)))
}

/// Per-bucket partial aggregate (count, sum, min, max), from rollups and
/// raw values alike.
#[derive(Clone, Copy)]
struct Partial {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    integer: bool,
}

impl Default for Partial {
    fn default() -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            integer: true,
        }
    }
}

impl Partial {
    fn add(&mut self, count: i64, sum: f64, min: f64, max: f64, integer: bool) {
        self.count += count;
        self.sum += sum;
        // NaN (strings, booleans) sticks: only `count` applies then.
        self.min = nan_sticky(self.min, min, f64::min);
        self.max = nan_sticky(self.max, max, f64::max);
        self.integer &= integer;
    }

    fn value(&self, f: Aggregate) -> Option<FieldValue> {
        if self.count == 0 {
            return (f == Aggregate::Count).then_some(FieldValue::Int(0));
        }
        if f == Aggregate::Count {
            return Some(FieldValue::Int(self.count));
        }
        if self.sum.is_nan() || self.min.is_nan() {
            return None;
        }
        let typed = |x: f64| {
            if self.integer {
                FieldValue::Int(x as i64)
            } else {
                FieldValue::Float(x)
            }
        };
        Some(match f {
            Aggregate::Mean => FieldValue::Float(self.sum / self.count as f64),
            Aggregate::Sum => typed(self.sum),
            Aggregate::Min => typed(self.min),
            Aggregate::Max => typed(self.max),
            Aggregate::Spread => typed(self.max - self.min),
            _ => unreachable!("not answered from rollups"),
        })
    }
}

/// Answers `q` from the matching series.
fn answer(q: &Query, series: &[&Series]) -> Rows {
    let series: Vec<&Series> = series
        .iter()
        .copied()
        .filter(|s| q.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
        .collect();
    let fields: Vec<String> = match &q.fields {
        Fields::List(l) => l.clone(),
        Fields::All => series
            .iter()
            .flat_map(|s| s.columns.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    match (&q.filter, series.as_slice()) {
        // The common case, straight from the stored columns.
        (None, [one]) => match q.downsample {
            Some(d) => downsample(q, d, &fields, |f| one.columns.get(f)),
            None => raw(q, &fields, &series),
        },
        _ => {
            let (times, cols) = raw(q, &fields, &series);
            match q.downsample {
                None => (times, cols),
                Some(d) => {
                    // Re-assemble the filtered rows as columns, then bucket them.
                    let limit_free = Query {
                        limit: None,
                        ..q.clone()
                    };
                    let (times, cols) = raw(&limit_free, &fields, &series);
                    let built: HashMap<&str, Column> = fields
                        .iter()
                        .zip(cols.iter())
                        .filter_map(|(f, (_, vals))| {
                            column_from(&times, vals).map(|c| (f.as_str(), c))
                        })
                        .collect();
                    downsample(q, d, &fields, |f| built.get(f))
                }
            }
        }
    }
}

/// The background flusher: writes the head out when a writer says it is
/// full, and applies retention now and then. Ends with the store.
fn flusher(store: Weak<Inner>, kick: Receiver<()>, stop: &AtomicBool) {
    let mut last_retention: Option<Instant> = None;
    loop {
        let woken = kick.recv_timeout(Duration::from_secs(60));
        if woken == Err(RecvTimeoutError::Disconnected) || stop.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        if let Err(e) = inner.flush(false) {
            tracing::error!(error = %e, "writing the time-series head out as blocks failed; will retry");
        }
        if last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_retention = Some(Instant::now());
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
            if let Err(e) = inner.apply_retention(now) {
                tracing::error!(error = %e, "time-series retention failed; will retry");
            }
            if let Err(e) = inner.close_days(now) {
                tracing::error!(error = %e, "time-series compaction of closed days failed; will retry");
            }
            // Months that failed are logged one by one.
            let _ = inner.roll_up_days(now);
        }
    }
}

/// How long `open` waits for the directory's lock: a child process this one
/// spawns holds a copy of the lock from its `fork` to its `exec` (see the disk
/// bus's `LOCK_WAIT`); a real second store holds it as long as it is open.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the exclusive lock on `<dir>/LOCK`, or says who holds it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, TsdbError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(TsdbError::Backend(format!(
                    "the embedded time-series store in {} is open elsewhere ({e}); only one \
                     process can use it",
                    dir.display()
                )))
            }
        }
    }
}

/// `fsync`s a directory so a rename or new file in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), TsdbError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

type Slice<'a> = Option<(&'a Column, std::ops::Range<usize>)>;

/// Raw rows: the union of the times of the selected and filtered fields,
/// filtered, rows with no selected value dropped (as InfluxDB does).
fn raw(q: &Query, fields: &[String], series: &[&Series]) -> Rows {
    let mut rows: Vec<(i64, Vec<Option<FieldValue>>)> = Vec::new();
    let filter_names: Vec<&str> = q.filter.as_ref().map(|f| f.names()).unwrap_or_default();
    for s in series {
        let sel: Vec<Slice<'_>> = fields
            .iter()
            .map(|f| s.columns.get(f).map(|c| (c, range_of(c, q))))
            .collect();
        let fil: Vec<(&str, Slice<'_>)> = filter_names
            .iter()
            .filter(|n| !s.tags.contains_key(**n))
            .map(|n| (*n, s.columns.get(*n).map(|c| (c, range_of(c, q)))))
            .collect();
        // Every time any involved column has in range.
        let mut times: Vec<i64> = sel
            .iter()
            .flatten()
            .chain(fil.iter().filter_map(|(_, c)| c.as_ref()))
            .flat_map(|(c, r)| c.times()[r.clone()].iter().copied())
            .collect();
        times.sort_unstable();
        times.dedup();
        let mut sel_cur: Vec<usize> = sel
            .iter()
            .map(|c| c.as_ref().map_or(0, |(_, r)| r.start))
            .collect();
        let mut fil_cur: Vec<usize> = fil
            .iter()
            .map(|(_, c)| c.as_ref().map_or(0, |(_, r)| r.start))
            .collect();
        for t in times {
            let at = |c: &Column, r: &std::ops::Range<usize>, cur: &mut usize| -> Option<usize> {
                let ts = c.times();
                while *cur < r.end && ts[*cur] < t {
                    *cur += 1;
                }
                (*cur < r.end && ts[*cur] == t).then_some(*cur)
            };
            let mut fil_at: Vec<Option<usize>> = Vec::with_capacity(fil.len());
            for (i, (_, c)) in fil.iter().enumerate() {
                fil_at.push(c.as_ref().and_then(|(c, r)| at(c, r, &mut fil_cur[i])));
            }
            let sel_at: Vec<Option<usize>> = sel
                .iter()
                .enumerate()
                .map(|(i, c)| c.as_ref().and_then(|(c, r)| at(c, r, &mut sel_cur[i])))
                .collect();
            if sel_at.iter().all(Option::is_none) {
                continue;
            }
            if let Some(f) = &q.filter {
                let lookup = |name: &str| -> Option<ValueRef<'_>> {
                    if let Some(v) = s.tags.get(name) {
                        return Some(ValueRef::Str(v));
                    }
                    let i = fil.iter().position(|(n, _)| *n == name)?;
                    let (c, _) = fil[i].1.as_ref()?;
                    fil_at[i].map(|j| c.value_ref(j))
                };
                if !f.eval(&lookup) {
                    continue;
                }
            }
            let vals = sel
                .iter()
                .zip(&sel_at)
                .map(|(c, i)| Some(c.as_ref()?.0.value((*i)?)))
                .collect();
            rows.push((t, vals));
        }
    }
    if series.len() > 1 {
        rows.sort_by_key(|(t, _)| *t);
    }
    if let Some(l) = q.limit {
        rows.truncate(l);
    }
    let mut times = Vec::with_capacity(rows.len());
    let mut cols: Vec<(String, Vec<Option<FieldValue>>)> = fields
        .iter()
        .map(|f| (f.clone(), Vec::with_capacity(rows.len())))
        .collect();
    for (t, vals) in rows {
        times.push(t);
        for (c, v) in cols.iter_mut().zip(vals) {
            c.1.push(v);
        }
    }
    (times, cols)
}

fn range_of(c: &Column, q: &Query) -> std::ops::Range<usize> {
    match c {
        Column::Float(c) => c.range(q.start_ns, q.end_ns),
        Column::Int(c) => c.range(q.start_ns, q.end_ns),
        Column::Str(c) => c.range(q.start_ns, q.end_ns),
        Column::Bool(c) => c.range(q.start_ns, q.end_ns),
    }
}

/// A column from filtered rows (non-null values only); `None` if empty.
fn column_from(times: &[i64], vals: &[Option<FieldValue>]) -> Option<Column> {
    let mut col: Option<Column> = None;
    for (t, v) in times.iter().zip(vals) {
        if let Some(v) = v {
            let c = col.get_or_insert_with(|| Column::new_for(v));
            let _ = c.insert(*t, v);
        }
    }
    col
}

/// Epoch-aligned buckets from the one holding `start` to the one holding
/// `end`, each field aggregated per bucket; no rows at all if no field has a
/// value in the range (as InfluxDB answers).
fn downsample<'c>(
    q: &Query,
    d: super::Downsample,
    fields: &[String],
    column: impl Fn(&str) -> Option<&'c Column>,
) -> Rows {
    let w = d.interval_ns;
    let (first, n) = bucket_grid(q, w);
    let mut any = false;
    let mut cols = Vec::with_capacity(fields.len());
    for f in fields {
        let mut vals = Vec::with_capacity(n);
        match column(f) {
            Some(c) => {
                let r = range_of(c, q);
                let ts = c.times();
                any |= !r.is_empty();
                let mut i = r.start;
                for b in 0..n {
                    let end = first + (b as i64 + 1) * w;
                    let j = i + ts[i..r.end].partition_point(|&t| t < end);
                    vals.push(c.aggregate(i..j, d.function));
                    i = j;
                }
            }
            None => vals.resize(
                n,
                (d.function == Aggregate::Count).then_some(FieldValue::Int(0)),
            ),
        }
        cols.push((f.clone(), vals));
    }
    if !any {
        return (
            Vec::new(),
            fields.iter().map(|f| (f.clone(), Vec::new())).collect(),
        );
    }
    let times = (0..n).map(|b| first + b as i64 * w).collect();
    (times, cols)
}

impl View {
    /// Calls `f` with each series the heads hold of `q`'s unit and measurement, the frozen
    /// head's (older values) first, each under its shard's read lock.
    fn for_each_head_series(&self, q: &Query, mut f: impl FnMut(&Series)) {
        for head in self.frozen.iter().chain([&self.head]) {
            let shard = head
                .shard(&q.imei)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(series) = shard
                .units
                .get(&q.imei)
                .and_then(|u| u.series(&q.measurement))
            {
                series.iter().for_each(&mut f);
            }
        }
    }

    /// The days in which the heads hold values of `q`'s unit and measurement.
    fn head_days(&self, q: &Query) -> BTreeSet<i64> {
        let mut days = BTreeSet::new();
        self.for_each_head_series(q, |s| {
            for c in s.columns.values() {
                let t = c.times();
                let mut i = t.partition_point(|&x| x < q.start_ns);
                while i < t.len() && t[i] <= q.end_ns {
                    let day = t[i].div_euclid(DAY_NS);
                    days.insert(day);
                    i += t[i..].partition_point(|&x| x < (day + 1) * DAY_NS);
                }
            }
        });
        days
    }
}

impl Unit {
    fn series(&self, measurement: &str) -> Option<&Vec<Series>> {
        self.measurements
            .iter()
            .find(|(m, _)| m == measurement)
            .map(|(_, s)| s)
    }
}

impl Head {
    fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            values: AtomicUsize::new(0),
        }
    }

    fn shard(&self, imei: &str) -> &RwLock<Shard> {
        let p = bus::partition_for(imei.as_bytes(), self.shards.len() as u32);
        &self.shards[p as usize]
    }

    /// Values written (rewrites included): what the flush threshold counts.
    fn len(&self) -> usize {
        self.values.load(Ordering::Relaxed)
    }

    /// Values held (rewrites not counted twice).
    fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.read().unwrap_or_else(|e| e.into_inner());
                s.units
                    .values()
                    .flat_map(|u| u.measurements.iter())
                    .flat_map(|(_, ss)| ss.iter())
                    .flat_map(|s| s.columns.values())
                    .map(|c| c.times().len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn apply(&self, points: &[Point]) -> Result<(), TsdbError> {
        let mut conflicts = Vec::new();
        let mut n = 0;
        for p in points {
            let mut shard = self
                .shard(&p.imei)
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let unit = match shard.units.get_mut(&p.imei) {
                Some(u) => u,
                None => shard.units.entry(p.imei.clone()).or_default(),
            };
            let mi = match unit
                .measurements
                .iter()
                .position(|(m, _)| *m == p.measurement)
            {
                Some(i) => i,
                None => {
                    unit.measurements.push((p.measurement.clone(), Vec::new()));
                    unit.measurements.len() - 1
                }
            };
            let series = &mut unit.measurements[mi].1;
            let si = match series.iter().position(|s| s.tags == p.tags) {
                Some(i) => i,
                None => {
                    series.push(Series {
                        tags: p.tags.clone(),
                        columns: HashMap::new(),
                    });
                    series.len() - 1
                }
            };
            let columns = &mut series[si].columns;
            for (name, v) in &p.fields {
                let col = match columns.get_mut(name.as_str()) {
                    Some(c) => c,
                    None => columns
                        .entry(name.clone())
                        .or_insert_with(|| Column::new_for(v)),
                };
                match col.insert(p.time_ns, v) {
                    Ok(()) => n += 1,
                    Err(e) => conflicts.push(format!("{}/{name}: {e}", p.imei)),
                }
            }
        }
        self.values.fetch_add(n, Ordering::Relaxed);
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(TsdbError::InvalidPoint(format!(
                "partial write, refused: {}",
                conflicts.join("; ")
            )))
        }
    }

    /// The (measurement, day) partitions the head holds values in.
    fn partitions(shards: &[std::sync::RwLockReadGuard<'_, Shard>]) -> BTreeSet<(String, i64)> {
        let mut out = BTreeSet::new();
        for s in shards {
            for u in s.units.values() {
                for (m, series) in &u.measurements {
                    for c in series.iter().flat_map(|s| s.columns.values()) {
                        let t = c.times();
                        let mut i = 0;
                        while i < t.len() {
                            let day = t[i].div_euclid(DAY_NS);
                            out.insert((m.clone(), day));
                            // Jump to the first time of the next day.
                            let next = (day + 1).saturating_mul(DAY_NS);
                            i += t[i..].partition_point(|&x| x < next);
                        }
                    }
                }
            }
        }
        out
    }
}

/// The rows of one measurement and day of a frozen head, in block order
/// (imei, tags, field, time), produced lazily so writing a block holds one
/// row group, not the head, twice.
fn head_rows<'a>(
    units: &'a [(&'a str, &'a Unit)],
    measurement: &'a str,
    day: i64,
) -> impl Iterator<Item = Row> + 'a {
    let (from, to) = (day * DAY_NS, day * DAY_NS + DAY_NS - 1);
    units.iter().flat_map(move |(imei, u)| {
        let mut series: Vec<(String, &Series)> = u
            .series(measurement)
            .into_iter()
            .flatten()
            .map(|s| (tags_json(&s.tags), s))
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        series.into_iter().flat_map(move |(tags, s)| {
            let mut cols: Vec<(&String, &Column)> = s.columns.iter().collect();
            cols.sort_by(|a, b| a.0.cmp(b.0));
            let tags = tags.clone();
            cols.into_iter().flat_map(move |(field, c)| {
                let t = c.times();
                let a = t.partition_point(|&x| x < from);
                let b = t.partition_point(|&x| x <= to);
                let tags = tags.clone();
                (a..b).map(move |k| Row {
                    imei: (*imei).to_owned(),
                    tags: tags.clone(),
                    field: field.clone(),
                    time: t[k],
                    value: c.value(k),
                })
            })
        })
    })
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).expect("a string map serialises")
}

/// A [`Row::key`] that outlives the row.
type OwnedKey = (String, String, String, i64);

/// Merges blocks (each sorted by [`Row::key`]) into one sorted stream; on
/// equal keys the block with the higher `seq` wins. Holds one row group per
/// block. The first read error ends the stream and is kept in `error`.
struct Merge {
    /// `(seq, cursor)`.
    cursors: Vec<(u64, block::Cursor)>,
    error: Option<TsdbError>,
}

impl Iterator for Merge {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        if self.error.is_some() {
            return None;
        }
        // (cursor, its key, its seq)
        let mut best: Option<(usize, OwnedKey, u64)> = None;
        for (i, (seq, c)) in self.cursors.iter_mut().enumerate() {
            match c.peek() {
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
                Ok(None) => {}
                Ok(Some(r)) => {
                    let (a, b, c, t) = r.key();
                    let better = match &best {
                        None => true,
                        Some((_, k, s)) => {
                            let o = (a, b, c, t).cmp(&(&k.0, &k.1, &k.2, k.3));
                            o.is_lt() || (o.is_eq() && *seq > *s)
                        }
                    };
                    if better {
                        best = Some((i, (a.to_owned(), b.to_owned(), c.to_owned(), t), *seq));
                    }
                }
            }
        }
        let (win, key, _) = best?;
        let row = self.cursors[win].1.pop();
        // Drop the same key from the other blocks (older values).
        for (i, (_, c)) in self.cursors.iter_mut().enumerate() {
            if i == win {
                continue;
            }
            loop {
                match c.peek() {
                    Ok(Some(r)) if r.key() == (&*key.0, &*key.1, &*key.2, key.3) => {
                        c.pop();
                    }
                    Ok(_) => break,
                    Err(e) => {
                        self.error = Some(e);
                        return None;
                    }
                }
            }
        }
        row
    }
}

impl Inner {
    fn current(&self) -> View {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn kick_if_full(&self) {
        if let Some(d) = &self.disk {
            if self.current().head.len() >= self.head_values {
                let _ = d.kick.try_send(());
            }
        }
    }

    /// Writes the frozen head (left by a failed flush) and then, if it is
    /// full or `force`, the head out as blocks; then compacts the days it
    /// wrote to.
    fn flush(&self, force: bool) -> Result<(), TsdbError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let mut head_segment = disk.flushing.lock().unwrap_or_else(|e| e.into_inner());
        if self.current().frozen.is_some() {
            self.write_frozen(disk, *head_segment)?;
        }
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let len = view.head.len();
            if len == 0 || (!force && len < self.head_values) {
                return Ok(());
            }
            // Under the exclusive view no writer is between its log append
            // and its apply: the new segment and the new head start together.
            *head_segment = disk.wal.rotate()?;
            let head = std::mem::replace(&mut view.head, Arc::new(Head::new(self.shards)));
            view.frozen = Some(head);
        }
        self.write_frozen(disk, *head_segment)
    }

    /// Writes the frozen head as blocks, publishes them, drops the frozen
    /// head and the log segments before `head_segment` (the head's first).
    fn write_frozen(&self, disk: &Disk, head_segment: u64) -> Result<(), TsdbError> {
        let Some(frozen) = self.current().frozen else {
            return Ok(());
        };
        let started = Instant::now();
        let guards: Vec<_> = frozen
            .shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut units: Vec<(&str, &Unit)> = guards
            .iter()
            .flat_map(|g| g.units.iter().map(|(k, u)| (k.as_str(), u)))
            .collect();
        units.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut written = Vec::new();
        let mut rows = 0;
        for (m, day) in Head::partitions(&guards) {
            let meta = BlockMeta::new(
                &disk.blocks_dir,
                &m,
                day,
                disk.next_seq.fetch_add(1, Ordering::Relaxed),
            );
            rows += block::write(&meta, head_rows(&units, &m, day))?;
            written.push(LiveBlock::new(meta));
        }
        drop(guards);
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let mut blocks = (*view.blocks).clone();
            blocks.extend(written.iter().cloned());
            view.blocks = Arc::new(blocks);
            view.frozen = None;
        }
        disk.wal.remove_before(head_segment)?;
        tracing::info!(
            rows,
            blocks = written.len(),
            ms = started.elapsed().as_millis() as u64,
            "time-series head written as blocks"
        );
        let days: BTreeSet<(String, i64)> = written
            .iter()
            .map(|b| (b.measurement.clone(), b.day))
            .collect();
        drop(written);
        for (m, day) in days {
            self.compact(disk, &m, day)?;
        }
        Ok(())
    }

    /// Size-tiered compaction of one measurement and day: while `compact_at`
    /// blocks adjacent in `seq` order are at the same size level (level *n*:
    /// up to 4 MiB × `compact_at`^*n*), merges them into one. Each value is
    /// rewritten about once per level, not once per flush.
    fn compact(&self, disk: &Disk, measurement: &str, day: i64) -> Result<(), TsdbError> {
        loop {
            let day_blocks: Vec<Arc<LiveBlock>> = self
                .current()
                .blocks
                .iter()
                .filter(|b| b.measurement == measurement && b.day == day)
                .cloned()
                .collect();
            let level = |b: &Arc<LiveBlock>| {
                let size = std::fs::metadata(&b.path).map_or(0, |m| m.len());
                let (mut l, mut cap) = (0u32, 4u64 << 20);
                while size > cap {
                    l += 1;
                    cap = cap.saturating_mul(disk.compact_at as u64);
                }
                l
            };
            let levels: Vec<u32> = day_blocks.iter().map(level).collect();
            let mut run = None;
            let mut start = 0;
            for i in 1..=levels.len() {
                if i == levels.len() || levels[i] != levels[start] {
                    if i - start >= disk.compact_at {
                        run = Some(start..i);
                        break;
                    }
                    start = i;
                }
            }
            let Some(run) = run else {
                return Ok(());
            };
            self.merge_blocks(&day_blocks[run])?;
        }
    }

    /// Merges the blocks of every day that ended over an hour before `now_ns`
    /// and still has several, into one: a closed day is then one block with
    /// exact rollups.
    fn close_days(&self, now_ns: i64) -> Result<(), TsdbError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let _one = disk.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let mut days: BTreeMap<(String, i64), Vec<Arc<LiveBlock>>> = BTreeMap::new();
        for b in self.current().blocks.iter() {
            days.entry((b.measurement.clone(), b.day))
                .or_default()
                .push(b.clone());
        }
        for ((_, day), blocks) in days {
            if disk.stop.load(Ordering::Acquire) {
                break;
            }
            if blocks.len() > 1 && (day + 1).saturating_mul(DAY_NS) + ROLLUP_NS <= now_ns {
                self.merge_blocks(&blocks)?;
            }
        }
        Ok(())
    }

    /// Merges blocks of one measurement and day, adjacent in `seq` order,
    /// into one that takes the last one's `seq` (and path: it replaces that
    /// file by rename), so its values keep their precedence over blocks
    /// outside the run. A crash before the others are deleted leaves them
    /// beside the merged block, which holds the same values and wins.
    fn merge_blocks(&self, run: &[Arc<LiveBlock>]) -> Result<(), TsdbError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let last = run.last().expect("a run is not empty");
        let started = Instant::now();
        let mut merge = Merge {
            cursors: run
                .iter()
                .map(|b| Ok((b.seq, block::Cursor::open(&b.path)?)))
                .collect::<Result<_, TsdbError>>()?,
            error: None,
        };
        let meta = BlockMeta::new(&disk.blocks_dir, &last.measurement, last.day, last.seq);
        let rows = block::write(&meta, &mut merge)?;
        if let Some(e) = merge.error {
            return Err(e);
        }
        self.replace_blocks(run, Some(LiveBlock::new(meta)));
        tracing::info!(
            measurement = %last.measurement,
            day = last.day,
            merged = run.len(),
            rows,
            ms = started.elapsed().as_millis() as u64,
            "time-series blocks compacted"
        );
        Ok(())
    }

    /// Publishes `new` in place of `olds` and retires the olds: their files
    /// are deleted once no read holds a view that lists them, except a
    /// file `new` took over by rename (a merge keeps its last block's path).
    fn replace_blocks(&self, olds: &[Arc<LiveBlock>], new: Option<Arc<LiveBlock>>) {
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let mut blocks: Vec<Arc<LiveBlock>> = view
                .blocks
                .iter()
                .filter(|b| !olds.iter().any(|o| Arc::ptr_eq(o, b)))
                .cloned()
                .collect();
            if let Some(new) = &new {
                blocks.push(Arc::clone(new));
            }
            blocks.sort_by_key(|b| b.seq);
            view.blocks = Arc::new(blocks);
        }
        for b in olds {
            if new.as_ref().is_none_or(|n| n.path != b.path) {
                b.retire();
            }
        }
        self.open.forget(olds);
    }

    /// Deletes the days that are past their measurement's retention at `now_ns`.
    fn apply_retention(&self, now_ns: i64) -> Result<(), TsdbError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let _one = disk.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<Arc<LiveBlock>> = self
            .current()
            .blocks
            .iter()
            .filter(|b| {
                disk.retention_days.get(&b.measurement).is_some_and(|days| {
                    let keep_from = now_ns.saturating_sub(i64::from(*days).saturating_mul(DAY_NS));
                    // The whole day is older than the retention.
                    (b.day + 1).saturating_mul(DAY_NS) <= keep_from
                })
            })
            .cloned()
            .collect();
        if !expired.is_empty() {
            tracing::info!(
                blocks = expired.len(),
                "time-series retention: deleting expired days"
            );
            // Out of the month files first: a month file must never name a
            // block that is gone ([`daily`]); and no month pass in between,
            // which would put their days back.
            let _months = disk.rolling_up.lock().unwrap_or_else(|e| e.into_inner());
            self.drop_days_from_months(disk, &expired)?;
            self.replace_blocks(&expired, None);
        }
        Ok(())
    }
}

#[async_trait]
impl TimeSeries for Embedded {
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError> {
        // The log append (and fsync) is blocking I/O: keep it off the async
        // workers when there is a disk behind it.
        if self.inner.disk.is_some() {
            let me = self.clone();
            let points = points.to_vec();
            tokio::task::spawn_blocking(move || me.write_sync(&points))
                .await
                .map_err(|e| TsdbError::Backend(format!("write task: {e}")))?
        } else {
            self.write_sync(points)
        }
    }

    async fn query(&self, query: &Query) -> Result<QueryResult, TsdbError> {
        // Reading blocks is blocking file I/O and decoding: off the async
        // workers when there are blocks.
        if self.inner.disk.is_some() {
            let (me, query) = (self.clone(), query.clone());
            tokio::task::spawn_blocking(move || me.query_sync(&query))
                .await
                .map_err(|e| TsdbError::Backend(format!("query task: {e}")))?
        } else {
            self.query_sync(query)
        }
    }
}

#[cfg(test)]
mod tests;
