//! The embedded time-series store: the default for `smartsolar serve`.
//!
//! **In memory**, columnar per unit and field: `imei → measurement → series
//! (tag set) → field → column`, each column a pair of time-sorted vectors
//! (`Vec<i64>` times, typed `Vec<f64|i64|String|bool>` values). A unit's
//! query is a binary search for the time range and a scan of contiguous
//! memory, which is what the product data API does (one unit, one range).
//! The map is split into shards by IMEI, each behind its own `RwLock`, so
//! ingest shards and API readers rarely meet.
//!
//! **On disk**, an append-only log under the data dir (`tsdb.log`): every
//! write batch is one record `[len u32][crc32 u32][payload]`, appended (and
//! `fsync`ed when `fsync` is on) *before* it is applied in memory and before
//! `write` returns. Opening replays the log; a torn record at the end (a
//! crash mid-append) is cut off, a damaged record elsewhere fails the open.
//!
//! Writing the same (series, field, time) again overwrites, so replays and
//! redeliveries are idempotent. An integer written to a float column is
//! stored as a float; a float written to an integer column turns the column
//! into floats; other type conflicts are refused for that value (the rest of
//! the batch is kept) and reported as [`TsdbError::InvalidPoint`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_trait::async_trait;

use crate::tsdb::Rows;

use super::filter::ValueRef;
use super::influx::result_for;
use super::{
    check_point, Aggregate, FieldValue, Fields, Point, Query, QueryResult, TimeSeries, TsdbError,
};

/// Settings of the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Directory of `tsdb.log`; `None` keeps everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// `fsync` the log after each write batch (survives power loss, costs a disk flush per batch).
    pub fsync: bool,
    /// Lock shards (by IMEI).
    pub shards: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            fsync: true,
            shards: 64,
        }
    }
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<RwLock<Shard>>,
    // A std mutex: held only for a buffered write (+ fsync), never across an await.
    log: Option<Mutex<Log>>,
    fsync: bool,
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
    /// Opens the store, replaying `data_dir/tsdb.log` if there is one.
    pub fn open(config: EmbeddedConfig) -> Result<Self, TsdbError> {
        let shards = (0..config.shards.max(1))
            .map(|_| RwLock::default())
            .collect();
        let mut inner = Inner {
            shards,
            log: None,
            fsync: config.fsync,
        };
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir)?;
            let log = Log::open(&dir.join("tsdb.log"), |points| {
                // Conflicts were reported when first written; replay skips them the same way.
                let _ = inner.apply(points);
            })?;
            inner.log = Some(Mutex::new(log));
        }
        Ok(Self {
            inner: Arc::new(inner),
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
        if let Some(log) = &self.inner.log {
            let mut buf = Vec::with_capacity(points.len() * 64);
            encode_batch(&mut buf, points);
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.append(&buf, self.inner.fsync)?;
        }
        let r = self.inner.apply(points);
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
        let shard = self
            .inner
            .shard(&q.imei)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let series: Vec<&Series> = shard
            .units
            .get(&q.imei)
            .and_then(|u| u.measurements.iter().find(|(m, _)| *m == q.measurement))
            .map(|(_, s)| {
                s.iter()
                    .filter(|s| q.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<String> = match &q.fields {
            Fields::List(l) => l.clone(),
            Fields::All => series
                .iter()
                .flat_map(|s| s.columns.keys().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let (times, columns) = match (&q.filter, series.as_slice()) {
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
        };
        drop(shard);
        metrics::histogram!(crate::metrics::TSDB_QUERY_DURATION, "backend" => "embedded")
            .record(started.elapsed().as_secs_f64());
        Ok(result_for(q, times, columns))
    }

    /// Number of stored values (all units, fields and times).
    pub fn value_count(&self) -> usize {
        self.inner
            .shards
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
    let first = q.start_ns.div_euclid(w) * w;
    let last = q.end_ns.div_euclid(w) * w;
    let mut n = ((last - first) / w + 1) as usize;
    if let Some(l) = q.limit {
        n = n.min(l);
    }
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

impl Inner {
    fn shard(&self, imei: &str) -> &RwLock<Shard> {
        let p = bus::partition_for(imei.as_bytes(), self.shards.len() as u32);
        &self.shards[p as usize]
    }

    fn apply(&self, points: &[Point]) -> Result<(), TsdbError> {
        let mut conflicts = Vec::new();
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
                if let Err(e) = col.insert(p.time_ns, v) {
                    conflicts.push(format!("{}/{name}: {e}", p.imei));
                }
            }
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(TsdbError::InvalidPoint(format!(
                "partial write, refused: {}",
                conflicts.join("; ")
            )))
        }
    }
}

#[async_trait]
impl TimeSeries for Embedded {
    async fn write(&self, points: &[Point]) -> Result<(), TsdbError> {
        // The log append (and fsync) is blocking I/O: keep it off the async
        // workers when there is a disk behind it.
        if self.inner.log.is_some() {
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
        self.query_sync(query)
    }
}

// ---------------------------------------------------------------------------
// The log.

const MAGIC: &[u8; 8] = b"SSTSDB01";

struct Log {
    file: BufWriter<File>,
}

impl Log {
    /// Opens (creating) the log and replays every whole record into `apply`.
    fn open(path: &Path, mut apply: impl FnMut(&[Point])) -> Result<Self, TsdbError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            file.write_all(MAGIC)?;
            file.sync_all()?;
        } else {
            file.seek(SeekFrom::Start(0))?;
            let mut r = BufReader::with_capacity(1 << 20, &file);
            let mut magic = [0u8; 8];
            r.read_exact(&mut magic)?;
            if &magic != MAGIC {
                return Err(TsdbError::Io(std::io::Error::other(format!(
                    "{} is not a smartsolar tsdb log",
                    path.display()
                ))));
            }
            let mut good = MAGIC.len() as u64;
            let mut head = [0u8; 8];
            let mut payload = Vec::new();
            loop {
                if read_full(&mut r, &mut head)? < head.len() {
                    break;
                }
                let n = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
                payload.resize(n, 0);
                if read_full(&mut r, &mut payload)? < n {
                    break;
                }
                let ok = crc32fast::hash(&payload) == crc;
                let points = if ok { decode_batch(&payload) } else { None };
                let Some(points) = points else {
                    if good + 8 + n as u64 == len {
                        break; // torn last record
                    }
                    return Err(TsdbError::Io(std::io::Error::other(format!(
                        "{}: damaged record at byte {good}",
                        path.display()
                    ))));
                };
                apply(&points);
                good += 8 + n as u64;
            }
            drop(r);
            if good < len {
                tracing::warn!(path = %path.display(), kept = good, len, "cutting a torn record off the tsdb log");
                file.set_len(good)?;
            }
        }
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn append(&mut self, payload: &[u8], fsync: bool) -> Result<(), TsdbError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| TsdbError::InvalidPoint("write batch over 4 GiB".into()))?;
        self.file.write_all(&len.to_le_bytes())?;
        self.file
            .write_all(&crc32fast::hash(payload).to_le_bytes())?;
        self.file.write_all(payload)?;
        self.file.flush()?;
        if fsync {
            self.file.get_ref().sync_data()?;
        }
        Ok(())
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_batch(out: &mut Vec<u8>, points: &[Point]) {
    out.extend_from_slice(&(points.len() as u32).to_le_bytes());
    for p in points {
        put_str(out, &p.measurement);
        put_str(out, &p.imei);
        out.extend_from_slice(&(p.tags.len() as u32).to_le_bytes());
        for (k, v) in &p.tags {
            put_str(out, k);
            put_str(out, v);
        }
        out.extend_from_slice(&p.time_ns.to_le_bytes());
        out.extend_from_slice(&(p.fields.len() as u32).to_le_bytes());
        for (k, v) in &p.fields {
            put_str(out, k);
            match v {
                FieldValue::Float(f) => {
                    out.push(0);
                    out.extend_from_slice(&f.to_le_bytes());
                }
                FieldValue::Int(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                FieldValue::Str(s) => {
                    out.push(2);
                    put_str(out, s);
                }
                FieldValue::Bool(b) => {
                    out.push(3);
                    out.push(u8::from(*b));
                }
            }
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.b.len() < n {
            return None;
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode_batch(b: &[u8]) -> Option<Vec<Point>> {
    let mut r = Reader { b };
    let n = r.u32()? as usize;
    let mut points = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let measurement = r.str()?;
        let imei = r.str()?;
        let nt = r.u32()?;
        let mut tags = BTreeMap::new();
        for _ in 0..nt {
            let k = r.str()?;
            tags.insert(k, r.str()?);
        }
        let time_ns = r.u64()? as i64;
        let nf = r.u32()? as usize;
        let mut fields = Vec::with_capacity(nf.min(1024));
        for _ in 0..nf {
            let k = r.str()?;
            let v = match r.take(1)?[0] {
                0 => FieldValue::Float(f64::from_bits(r.u64()?)),
                1 => FieldValue::Int(r.u64()? as i64),
                2 => FieldValue::Str(r.str()?),
                3 => FieldValue::Bool(r.take(1)?[0] != 0),
                _ => return None,
            };
            fields.push((k, v));
        }
        points.push(Point {
            measurement,
            imei,
            tags,
            fields,
            time_ns,
        });
    }
    r.b.is_empty().then_some(points)
}

#[cfg(test)]
mod tests;
