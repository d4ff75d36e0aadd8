//! The durable embedded bus: the default of `smartsolar serve`.
//!
//! The in-process bus's model (topics, keyed partitions, consumer groups with
//! committed offsets, see [`crate::memory`]) kept in an on-disk log, so that
//! what `publish` acknowledged survives `kill -9` and a restart:
//!
//! - **Layout**: `<dir>/<topic>/<partition>/<base offset>.log` segment files;
//!   `<dir>/<topic>/groups/<group>` holds a group's committed offsets.
//! - **Record**: `crc32 | len | key_len | key | payload` (little endian `u32`s;
//!   `len` counts `key_len`, key and payload; the CRC covers `len` and
//!   everything after it). Offsets are implicit: the segment's base offset
//!   plus the record's index.
//! - **Group commit**: publishes go to one writer thread, one request per
//!   `publish_all` call (its messages in order, never split across batches),
//!   which appends every request waiting at that moment (up to `max_batch`
//!   messages) and hands the batch to
//!   a syncer thread; the syncer `fdatasync`s each file the batch touched (in
//!   parallel: one journal commit covers them) and only then resolves the
//!   publishes and makes the records visible to consumers, while the writer
//!   already appends the next batch. So an `Ok` from `publish` means "on
//!   disk", and a consumer never sees a record that a crash could take back.
//! - **Recovery**: on open every segment is scanned; the first record that is
//!   incomplete or fails its CRC (a torn tail after `kill -9` or power loss)
//!   and everything after it in that segment is cut off, so it is never
//!   delivered. Nothing cut was acknowledged: acknowledgement waits for the
//!   fsync, and a torn record was by definition not fully written.
//! - **Offsets**: a commit writes the group's 16-byte slot for the partition
//!   (`offset | crc32 | pad`) in place with one `pwrite`: it survives
//!   `kill -9` (the page cache belongs to the kernel); after a power loss a
//!   group may see the commits since the kernel last wrote the file back
//!   again (at least once, which consumers already handle).
//! - **Retention**: a closed segment is deleted once every group has
//!   committed all of it (a topic no group has joined yet keeps everything).
//!   Above the hard cap (`max_partition_bytes`, per topic overridable) the
//!   oldest segments go even if uncommitted: counted in
//!   `smartsolar_bus_dropped_total` and logged, so a topic nobody reads (the
//!   dead letters) stays bounded and `publish` never blocks on it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::memory::Group;
use crate::{partition_for, Bus, BusError, Consumer, Delivery};

/// Settings of the durable embedded bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskBusConfig {
    /// Partitions per topic. A topic keeps the count it was created with:
    /// opening it with another count is refused (keyed order would break).
    pub partitions: u32,
    /// A segment is closed (and a new one started) once it holds this many bytes.
    pub segment_bytes: u64,
    /// Hard cap of one partition's retained bytes: above it the oldest
    /// segments are dropped even if a group has not committed them (counted, logged).
    pub max_partition_bytes: u64,
    /// Per-topic overrides of `max_partition_bytes` (e.g. smaller for dead letters).
    pub topic_max_partition_bytes: BTreeMap<String, u64>,
    /// Age cap: a closed segment whose newest record is older than this is dropped even if a
    /// group has not committed it (counted, logged). Unset: no age cap.
    pub max_age_secs: Option<u64>,
    /// Per-topic overrides of `max_age_secs`.
    pub topic_max_age_secs: BTreeMap<String, u64>,
    /// Most publishes written and synced together.
    pub max_batch: usize,
    /// `fdatasync` before acknowledging. Only benchmarks turn it off.
    pub fsync: bool,
}

impl Default for DiskBusConfig {
    fn default() -> Self {
        Self {
            partitions: 16,
            segment_bytes: 64 << 20,
            max_partition_bytes: 1 << 30,
            topic_max_partition_bytes: BTreeMap::new(),
            max_age_secs: None,
            topic_max_age_secs: BTreeMap::new(),
            max_batch: 16_384,
            fsync: true,
        }
    }
}

impl DiskBusConfig {
    fn cap(&self, topic: &str) -> u64 {
        self.topic_max_partition_bytes
            .get(topic)
            .copied()
            .unwrap_or(self.max_partition_bytes)
    }

    fn max_age(&self, topic: &str) -> Option<Duration> {
        self.topic_max_age_secs
            .get(topic)
            .copied()
            .or(self.max_age_secs)
            .map(Duration::from_secs)
    }
}

/// Bytes of a record's fixed header (`crc32`, `len`, `key_len`).
const HEADER: usize = 12;
/// Bytes of one group's offset slot per partition.
const SLOT: usize = 16;
/// Largest record accepted (a unit message is a few hundred bytes; the cap
/// keeps a corrupt length from making recovery allocate gigabytes).
const MAX_RECORD: usize = 16 << 20;

fn io(context: &str, path: &Path, e: std::io::Error) -> BusError {
    BusError::Broker(format!("{context} {}: {e}", path.display()))
}

/// A file or directory name for a topic or group: safe characters kept, the
/// rest (and a leading dot) as `%XX`, so no name can escape the bus directory.
fn file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let safe = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if safe {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode(key: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    let len = (4 + key.len() + payload.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Splits one record (header included) into key and payload if its CRC holds.
fn decode(rec: &[u8]) -> Option<(&[u8], &[u8])> {
    if rec.len() < HEADER {
        return None;
    }
    let crc = u32::from_le_bytes(rec[0..4].try_into().ok()?);
    let len = u32::from_le_bytes(rec[4..8].try_into().ok()?) as usize;
    let key_len = u32::from_le_bytes(rec[8..12].try_into().ok()?) as usize;
    if rec.len() != 8 + len || key_len + 4 > len || crc32fast::hash(&rec[4..]) != crc {
        return None;
    }
    Some((&rec[HEADER..HEADER + key_len], &rec[HEADER + key_len..]))
}

/// The record positions of a segment file up to the first torn or corrupt
/// record, and the byte length of that valid prefix.
fn scan(data: &[u8]) -> (Vec<u32>, u64) {
    let mut pos = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        if !(4..=MAX_RECORD).contains(&len) || at + 8 + len > data.len() {
            break;
        }
        if decode(&data[at..at + 8 + len]).is_none() {
            break;
        }
        pos.push(at as u32);
        at += 8 + len;
    }
    (pos, at as u64)
}

struct Segment {
    base: u64,
    path: PathBuf,
    /// Read handle; the writer has its own append handle on the active (last) segment.
    file: Arc<File>,
    /// File position of each visible (synced) record.
    pos: Vec<u32>,
    /// Bytes of the visible records.
    bytes: u64,
    /// When its newest record was written (the age cap's clock).
    written: SystemTime,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.pos.len() as u64
    }
}

struct Partition {
    dir: PathBuf,
    /// Oldest first; never empty once the topic is open; the last is the active one.
    segments: VecDeque<Segment>,
    /// The newest records (up to [`TAIL_CACHE`]) as published, so a consumer
    /// that keeps up is served from memory instead of a read and a copy.
    tail: VecDeque<(Bytes, Bytes)>,
}

/// Records a partition keeps in memory for consumers that keep up (about
/// 100 KiB a partition at the 200-byte MO size).
const TAIL_CACHE: usize = 512;

/// Where a record to deliver is.
enum Found {
    Memory(Bytes, Bytes),
    File(Arc<File>, u64, u64),
}

impl Partition {
    /// One past the last visible offset.
    fn end(&self) -> u64 {
        self.segments.back().map_or(0, Segment::end)
    }

    fn base(&self) -> u64 {
        self.segments.front().map_or(0, |s| s.base)
    }

    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Where offset `at` (or the next retained one) lies.
    fn locate(&self, at: u64) -> Option<(u64, Found)> {
        let end = self.end();
        let off = at.max(self.base());
        if off >= end {
            return None;
        }
        let tail_base = end - self.tail.len() as u64;
        if off >= tail_base {
            let (k, v) = &self.tail[(off - tail_base) as usize];
            return Some((off, Found::Memory(k.clone(), v.clone())));
        }
        for s in &self.segments {
            if at >= s.end() {
                continue;
            }
            let off = at.max(s.base);
            let i = (off - s.base) as usize;
            let start = u64::from(s.pos[i]);
            let stop = s.pos.get(i + 1).map_or(s.bytes, |p| u64::from(*p));
            return Some((off, Found::File(Arc::clone(&s.file), start, stop)));
        }
        None
    }
}

struct DiskGroup {
    group: Group,
    offsets: File,
    path: PathBuf,
}

struct Topic {
    partitions: Vec<Partition>,
    groups: HashMap<String, DiskGroup>,
    groups_dir: PathBuf,
    cap: u64,
    max_age: Option<Duration>,
}

impl Topic {
    /// Deletes the closed segments of partition `p` every group has committed
    /// and, over the hard cap, the oldest ones regardless. Returns the number
    /// of uncommitted messages dropped.
    fn trim(&mut self, topic: &str, p: usize) -> u64 {
        let min = self.groups.values().map(|g| g.group.committed[p]).min();
        let part = &mut self.partitions[p];
        let mut dropped = 0;
        let mut bytes = part.bytes();
        while part.segments.len() > 1 {
            let front = &part.segments[0];
            let committed = min.is_some_and(|m| m >= front.end());
            let over = bytes > self.cap;
            let expired = self
                .max_age
                .is_some_and(|age| front.written.elapsed().unwrap_or_default() > age);
            if !committed && !over && !expired {
                break;
            }
            if !committed {
                let unread = front.end() - min.unwrap_or(front.base).max(front.base);
                dropped += unread;
                tracing::warn!(
                    topic,
                    partition = p,
                    segment = %front.path.display(),
                    messages = unread,
                    cap_bytes = self.cap,
                    max_age_secs = self.max_age.map(|a| a.as_secs()),
                    "bus partition over its hard cap (bytes or age): oldest segment dropped before every group committed it"
                );
            }
            bytes -= front.bytes;
            if let Err(e) = fs::remove_file(&front.path) {
                tracing::warn!(path = %front.path.display(), error = %e, "removing a bus segment failed");
            }
            part.segments.pop_front();
        }
        let base = part.base();
        for g in self.groups.values_mut() {
            // A group behind a dropped segment resumes at the oldest retained message.
            if g.group.committed[p] < base {
                g.group.committed[p] = base;
            }
            if g.group.position[p] < base {
                g.group.position[p] = base;
            }
        }
        dropped
    }

    fn backlog(&self) -> u64 {
        self.partitions.iter().map(|p| p.end() - p.base()).sum()
    }
}

/// Opens (creating if needed) the segments of one partition directory,
/// cutting torn tails.
fn open_partition(dir: PathBuf) -> Result<Partition, BusError> {
    fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let mut bases: Vec<u64> = fs::read_dir(&dir)
        .map_err(|e| io("listing", &dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        bases.push(0);
    }
    let mut segments = VecDeque::with_capacity(bases.len());
    for base in bases {
        if let Some(prev) = segments.back().map(Segment::end) {
            if base < prev {
                return Err(BusError::Broker(format!(
                    "segment {base} in {} overlaps the one before it",
                    dir.display()
                )));
            }
        }
        let path = dir.join(format!("{base:020}.log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        let data = fs::read(&path).map_err(|e| io("reading", &path, e))?;
        let (pos, valid) = scan(&data);
        if valid < data.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = valid,
                cut_bytes = data.len() as u64 - valid,
                "bus segment had a torn or corrupt tail (crash while writing); cut it off"
            );
            file.set_len(valid)
                .map_err(|e| io("truncating", &path, e))?;
            file.sync_all().map_err(|e| io("syncing", &path, e))?;
        }
        let written = file
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        segments.push_back(Segment {
            base,
            path,
            file: Arc::new(file),
            pos,
            bytes: valid,
            written,
        });
    }
    sync_dir(&dir)?;
    Ok(Partition {
        dir,
        segments,
        tail: VecDeque::new(),
    })
}

fn sync_dir(dir: &Path) -> Result<(), BusError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing directory", dir, e))
}

fn read_offsets(path: &Path, partitions: usize) -> Result<(File, Vec<Option<u64>>), BusError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io("opening", path, e))?;
    let data = fs::read(path).map_err(|e| io("reading", path, e))?;
    let offsets = (0..partitions)
        .map(|p| {
            let slot = data.get(p * SLOT..(p + 1) * SLOT)?;
            let off = u64::from_le_bytes(slot[0..8].try_into().ok()?);
            let crc = u32::from_le_bytes(slot[8..12].try_into().ok()?);
            (crc32fast::hash(&slot[0..8]) == crc).then_some(off)
        })
        .collect();
    Ok((file, offsets))
}

fn offset_slot(offset: u64) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[0..8].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&slot[0..8]);
    slot[8..12].copy_from_slice(&crc.to_le_bytes());
    slot
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    next_member: u64,
}

struct Core {
    config: DiskBusConfig,
    dir: PathBuf,
    state: Mutex<State>,
    /// Held (an exclusive advisory lock on `<dir>/LOCK`) while the bus is open:
    /// two processes appending to the same files would corrupt them.
    _lock: File,
    /// Woken when records become visible, a rebalance happens or the bus closes.
    data: Notify,
    /// Set by [`DiskBus::close`] or a write failure that could not be cut back.
    closed: AtomicBool,
    /// Topics already open, so `publish` finds them without the state lock.
    open_topics: RwLock<HashSet<String>>,
    /// Batches written and synced (each answers every publish in it).
    batches: AtomicU64,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections only move whole values; a panic leaves state usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `topic` (recovering its files) unless it already is.
    fn ensure_topic<'a>(&self, st: &'a mut State, topic: &str) -> Result<&'a mut Topic, BusError> {
        if !st.topics.contains_key(topic) {
            let t = self.open_topic(topic)?;
            metrics::gauge!(crate::metrics::BUS_BACKLOG, "bus" => "disk", "topic" => topic.to_owned())
                .set(t.backlog() as f64);
            st.topics.insert(topic.to_owned(), t);
            self.open_topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(topic.to_owned());
        }
        Ok(st.topics.get_mut(topic).expect("inserted above"))
    }

    fn open_topic(&self, topic: &str) -> Result<Topic, BusError> {
        if topic.is_empty() {
            return Err(BusError::Config("empty topic name".into()));
        }
        let dir = self.dir.join(file_name(topic));
        let n = self.config.partitions as usize;
        if dir.exists() {
            let on_disk = fs::read_dir(&dir)
                .map_err(|e| io("listing", &dir, e))?
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|s| s.parse::<u32>().is_ok())
                })
                .count();
            if on_disk != 0 && on_disk != n {
                return Err(BusError::Config(format!(
                    "topic {topic} has {on_disk} partitions on disk but the bus is configured with {n}; \
                     keep the partition count (messages of one unit must stay in one partition)"
                )));
            }
        }
        let partitions = (0..n)
            .map(|p| open_partition(dir.join(p.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let groups_dir = dir.join("groups");
        fs::create_dir_all(&groups_dir).map_err(|e| io("creating", &groups_dir, e))?;
        let mut groups = HashMap::new();
        for entry in fs::read_dir(&groups_dir).map_err(|e| io("listing", &groups_dir, e))? {
            let entry = entry.map_err(|e| io("listing", &groups_dir, e))?;
            let Some(name) = entry.file_name().to_str().and_then(decode_name) else {
                continue;
            };
            let path = entry.path();
            let (offsets, saved) = read_offsets(&path, n)?;
            let start = partitions
                .iter()
                .zip(saved)
                // A lost slot (power loss mid-write) means "from the oldest retained": at least once.
                .map(|(p, s)| s.unwrap_or(0).clamp(p.base(), p.end()))
                .collect();
            groups.insert(
                name,
                DiskGroup {
                    group: Group::starting_at(start),
                    offsets,
                    path,
                },
            );
        }
        sync_dir(&self.dir)?;
        Ok(Topic {
            partitions,
            groups,
            groups_dir,
            cap: self.config.cap(topic),
            max_age: self.config.max_age(topic),
        })
    }
}

/// Inverse of [`file_name`].
fn decode_name(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One message of a publish request, checked and placed.
struct Message {
    /// Index of its topic in [`Request::topics`].
    topic: usize,
    partition: u32,
    /// Key and payload are slices of the request's one buffer.
    key: Bytes,
    payload: Bytes,
}

/// One `publish_all` (a `publish` is one of one) for the writer: its messages in their order,
/// answered once, by the group commit that covers all of them. The writer never splits a
/// request across batches, so one channel send and one answer serve the whole call instead of
/// one per message.
struct Request {
    /// The distinct topics of `messages`, named once rather than once per message.
    topics: Vec<String>,
    messages: Vec<Message>,
    /// Room in the writer's queue, counted in messages; given back once the writer took it.
    room: Option<OwnedSemaphorePermit>,
    done: oneshot::Sender<Result<(), BusError>>,
}

/// The durable embedded bus. Cheap to clone; clones share the same log and writer.
#[derive(Clone)]
pub struct DiskBus {
    core: Arc<Core>,
    writer: Arc<WriterHandle>,
}

/// The way to the writer thread. When the last clone of the bus is dropped
/// the writer answers what it has and exits, and the drop waits for that, so
/// the directory is free to open again right after.
struct WriterHandle {
    tx: Option<mpsc::UnboundedSender<Request>>,
    /// Bounds the messages queued for the writer (`2 * max_batch`), so a publisher waits
    /// while the writer is behind. Counted in messages, not requests: a request may hold many.
    room: Arc<Semaphore>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long `open` waits for the directory lock before refusing. The lock is an `flock`,
/// which belongs to the open file, and `fork` copies open files: a child this process
/// spawns holds the lock from its `fork` until its `exec` closes the (close-on-exec) copy.
/// A reopen in that window (a restart inside one process, a test) would be refused
/// although nobody else uses the bus, so `open` retries for a short while; a real second
/// process holds the lock for as long as it runs and is still refused.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the exclusive lock on `file`, retrying every 10 ms for up to `wait`.
fn acquire_lock(file: &File, wait: Duration) -> Result<(), std::fs::TryLockError> {
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl DiskBus {
    /// Opens the bus in `dir` (created if missing), recovering every topic
    /// found there, and starts its writer thread.
    pub fn open(dir: impl Into<PathBuf>, mut config: DiskBusConfig) -> Result<Self, BusError> {
        config.partitions = config.partitions.max(1);
        config.max_batch = config.max_batch.max(1);
        config.segment_bytes = config.segment_bytes.max(1);
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io("opening", &lock_path, e))?;
        acquire_lock(&lock, LOCK_WAIT).map_err(|e| {
            BusError::Config(format!(
                "the disk bus in {} is open in another process ({e}); only one process can use it \
                 (the services of `smartsolar serve` share it; separate processes use Kafka)",
                dir.display()
            ))
        })?;
        let core = Arc::new(Core {
            config,
            dir: dir.clone(),
            state: Mutex::new(State::default()),
            _lock: lock,
            data: Notify::new(),
            batches: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            open_topics: RwLock::new(HashSet::new()),
        });
        {
            let mut st = core.lock();
            for entry in fs::read_dir(&dir).map_err(|e| io("listing", &dir, e))? {
                let entry = entry.map_err(|e| io("listing", &dir, e))?;
                if !entry.path().is_dir() {
                    continue;
                }
                if let Some(topic) = entry.file_name().to_str().and_then(decode_name) {
                    core.ensure_topic(&mut st, &topic)?;
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(core.config.max_batch * 2));
        let writer = Writer {
            core: Arc::clone(&core),
            rx,
            files: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("bus-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| BusError::Broker(format!("starting the bus writer: {e}")))?;
        Ok(Self {
            core,
            writer: Arc::new(WriterHandle {
                tx: Some(tx),
                room,
                thread: Some(thread),
            }),
        })
    }

    /// Closes the bus: later `publish`/`recv` calls fail with [`BusError::Closed`].
    /// Publishes already handed to the writer are still written and answered.
    pub fn close(&self) {
        self.core.closed.store(true, Ordering::Release);
        self.core.data.notify_waiters();
    }

    /// Creates (or recovers) `topics` now rather than at their first use, so their
    /// directories and backlog gauges exist from the start.
    pub fn ensure_topics(&self, topics: &[&str]) -> Result<(), BusError> {
        let mut st = self.core.lock();
        for topic in topics {
            self.core.ensure_topic(&mut st, topic)?;
        }
        Ok(())
    }

    /// The publish request for `messages` and the receiver of its answer, after the checks
    /// (each message's size, closed, every topic known or created). Nothing is queued when a
    /// check fails, so a refused `publish_all` published none of its messages.
    async fn request(
        &self,
        messages: &[(&str, &[u8], &[u8])],
    ) -> Result<(Request, oneshot::Receiver<Result<(), BusError>>), BusError> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let mut topics: Vec<String> = Vec::new();
        let mut placed = Vec::with_capacity(messages.len());
        // Every key and payload in one buffer: one allocation for the request instead of two
        // per message. The gateway's requests are one unit's messages (one key, so one
        // partition), so a record kept in a partition's tail cache pins little besides itself.
        let mut buffer =
            Vec::with_capacity(messages.iter().map(|(_, k, p)| k.len() + p.len()).sum());
        for &(topic, key, payload) in messages {
            if 4 + key.len() + payload.len() > MAX_RECORD {
                return Err(BusError::Config(format!(
                    "message of {} bytes is over the bus's limit of {MAX_RECORD}",
                    key.len() + payload.len()
                )));
            }
            let topic = match topics.iter().position(|t| t == topic) {
                Some(i) => i,
                None => {
                    self.ensure_known(topic)?;
                    topics.push(topic.to_owned());
                    topics.len() - 1
                }
            };
            placed.push((
                topic,
                partition_for(key, self.core.config.partitions),
                key.len(),
                payload.len(),
            ));
            buffer.extend_from_slice(key);
            buffer.extend_from_slice(payload);
        }
        let buffer = Bytes::from(buffer);
        let mut at = 0;
        let messages = placed
            .into_iter()
            .map(|(topic, partition, key_len, payload_len)| {
                let key = buffer.slice(at..at + key_len);
                let payload = buffer.slice(at + key_len..at + key_len + payload_len);
                at += key_len + payload_len;
                Message {
                    topic,
                    partition,
                    key,
                    payload,
                }
            })
            .collect::<Vec<_>>();
        // A request larger than the whole queue waits for all of it rather than forever.
        let wanted = messages.len().min(self.core.config.max_batch * 2);
        let room = Arc::clone(&self.writer.room)
            .acquire_many_owned(u32::try_from(wanted).unwrap_or(u32::MAX))
            .await
            .map_err(|_| BusError::Closed)?;
        let (done, answer) = oneshot::channel();
        let req = Request {
            topics,
            messages,
            room: Some(room),
            done,
        };
        Ok((req, answer))
    }

    /// Opens `topic` unless `publish` already knows it (without the state lock when it does).
    fn ensure_known(&self, topic: &str) -> Result<(), BusError> {
        let known = self
            .core
            .open_topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic);
        if !known {
            let mut st = self.core.lock();
            self.core.ensure_topic(&mut st, topic)?;
        }
        Ok(())
    }

    /// Batches written and synced so far: fewer than publishes when group commit shares syncs.
    pub fn batches(&self) -> u64 {
        self.core.batches.load(Ordering::Relaxed)
    }

    /// Messages retained on `topic` (all partitions).
    pub fn backlog(&self, topic: &str) -> u64 {
        self.core.lock().topics.get(topic).map_or(0, Topic::backlog)
    }

    /// Messages on `topic` that `group` has not committed (all partitions); `None` if the
    /// group never joined the topic.
    pub fn lag(&self, topic: &str, group: &str) -> Option<u64> {
        let st = self.core.lock();
        let t = st.topics.get(topic)?;
        let g = t.groups.get(group)?;
        Some(
            t.partitions
                .iter()
                .zip(&g.group.committed)
                .map(|(p, c)| p.end().saturating_sub(*c))
                .sum(),
        )
    }

    /// Bytes retained on `topic` (all partitions).
    pub fn retained_bytes(&self, topic: &str) -> u64 {
        self.core
            .lock()
            .topics
            .get(topic)
            .map_or(0, |t| t.partitions.iter().map(Partition::bytes).sum())
    }
}

#[async_trait]
impl Bus for DiskBus {
    async fn publish(&self, topic: &str, key: &[u8], payload: &[u8]) -> Result<(), BusError> {
        self.publish_all(&[(topic, key, payload)]).await
    }

    async fn publish_all(&self, messages: &[(&str, &[u8], &[u8])]) -> Result<(), BusError> {
        let Some(&(first_topic, _, _)) = messages.first() else {
            return Ok(());
        };
        let started = Instant::now();
        // One request for all of them: the writer appends them in this order within one batch,
        // and answers once that batch's sync covers every one.
        let (req, answer) = self.request(messages).await?;
        let tx = self.writer.tx.as_ref().ok_or(BusError::Closed)?;
        tx.send(req).map_err(|_| BusError::Closed)?;
        let result = answer.await.map_err(|_| BusError::Closed)?;
        if result.is_err() {
            metrics::counter!(crate::metrics::BUS_PUBLISH_ERRORS, "bus" => "disk", "topic" => first_topic.to_owned())
                .increment(1);
            return result;
        }
        // Each message took this long to be on disk.
        metrics::histogram!(crate::metrics::BUS_PUBLISH_DURATION, "bus" => "disk")
            .record_many(started.elapsed().as_secs_f64(), messages.len());
        Ok(())
    }

    async fn subscribe(&self, topics: &[&str], group: &str) -> Result<Box<dyn Consumer>, BusError> {
        if topics.is_empty() {
            return Err(BusError::Config(
                "subscribe needs at least one topic".into(),
            ));
        }
        if group.is_empty() {
            return Err(BusError::Config("empty consumer group name".into()));
        }
        let core = &self.core;
        let mut names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        names.sort();
        names.dedup();
        if core.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let mut st = core.lock();
        let member = st.next_member;
        st.next_member += 1;
        let n = core.config.partitions as usize;
        for name in &names {
            let t = core.ensure_topic(&mut st, name)?;
            if !t.groups.contains_key(group) {
                let path = t.groups_dir.join(file_name(group));
                let (offsets, _) = read_offsets(&path, n)?;
                // A new group starts at the oldest retained message ("earliest"); saved at once
                // so the group holds back retention from now on, across restarts too.
                let start: Vec<u64> = t.partitions.iter().map(Partition::base).collect();
                let mut all = Vec::with_capacity(n * SLOT);
                for s in &start {
                    all.extend_from_slice(&offset_slot(*s));
                }
                offsets
                    .write_all_at(&all, 0)
                    .and_then(|()| offsets.sync_data())
                    .map_err(|e| io("writing", &path, e))?;
                sync_dir(&t.groups_dir)?;
                t.groups.insert(
                    group.to_owned(),
                    DiskGroup {
                        group: Group::starting_at(start),
                        offsets,
                        path,
                    },
                );
            }
            let g = &mut t.groups.get_mut(group).expect("inserted above").group;
            g.members.push(member);
            g.rebalance();
        }
        drop(st);
        core.data.notify_waiters();
        Ok(Box::new(DiskConsumer {
            core: Arc::clone(core),
            member,
            group: group.to_owned(),
            topics: names,
            cursor: 0,
        }))
    }
}

/// The writer thread: collects and appends batches and hands each to the
/// syncer thread, which syncs it, makes it visible and answers. The two
/// overlap: batch n+1 is collected and written while batch n syncs.
struct Writer {
    core: Arc<Core>,
    rx: mpsc::UnboundedReceiver<Request>,
    /// Append handle and length of each partition's active segment.
    files: HashMap<(String, u32), Active>,
}

struct Active {
    base: u64,
    /// Append handle, shared with the syncer to `fdatasync` it.
    file: Arc<File>,
    path: PathBuf,
    /// Bytes written (synced or not).
    bytes: u64,
    /// Offset of the next record.
    next: u64,
    /// A read handle of a segment the consumers' state does not list yet: the syncer
    /// adds it with the segment's first synced batch.
    unannounced: Option<Arc<File>>,
}

/// One partition's share of a batch.
struct Append {
    data: Vec<u8>,
    pos: Vec<u32>,
    /// Key and payload of each record, for the partition's tail cache.
    records: Vec<(Bytes, Bytes)>,
}

/// A partition's share of a written batch, for the syncer.
struct PartWrite {
    topic: String,
    partition: u32,
    /// The segment written to, and where in it the share starts.
    base: u64,
    path: PathBuf,
    start: u64,
    file: Arc<File>,
    new_segment: Option<Arc<File>>,
    append: Append,
}

/// A batch written and waiting for its sync.
struct Written {
    requests: Vec<Request>,
    parts: Vec<PartWrite>,
}

fn answer(core: &Core, requests: Vec<Request>, result: &Result<(), String>) {
    core.batches.fetch_add(1, Ordering::Relaxed);
    for r in requests {
        let _ = r.done.send(result.clone().map_err(BusError::Broker));
    }
}

impl Writer {
    fn run(mut self) {
        // Rendezvous: a written batch waits until the syncer takes it, so at most one batch
        // syncs while the next is collected and written.
        let (to_syncer, from_writer) = std::sync::mpsc::sync_channel::<Written>(0);
        let core = Arc::clone(&self.core);
        let syncer = std::thread::Builder::new()
            .name("bus-syncer".into())
            .spawn(move || sync_loop(&core, &from_writer));
        let syncer = match syncer {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "starting the bus syncer failed");
                self.core.closed.store(true, Ordering::Release);
                return;
            }
        };
        let max = self.core.config.max_batch;
        let mut batch = Vec::with_capacity(max);
        while let Some(first) = self.rx.blocking_recv() {
            // Whole requests, up to `max` messages (a single larger one is taken whole).
            let mut messages = first.messages.len();
            batch.push(first);
            while messages < max {
                match self.rx.try_recv() {
                    Ok(r) => {
                        messages += r.messages.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            for r in &mut batch {
                drop(r.room.take());
            }
            let requests = std::mem::take(&mut batch);
            match self.write_batch(&requests) {
                Ok(parts) => {
                    if let Err(back) = to_syncer.send(Written { requests, parts }) {
                        answer(
                            &self.core,
                            back.0.requests,
                            &Err("bus syncer stopped".into()),
                        );
                    }
                }
                Err(e) => answer(&self.core, requests, &Err(e)),
            }
        }
        drop(to_syncer);
        let _ = syncer.join();
    }

    /// The append handle of a partition's active segment, rolling to a new
    /// segment first if it is full (so one batch touches one file per partition).
    fn active(&mut self, topic: &str, p: u32) -> Result<&mut Active, String> {
        let key = (topic.to_owned(), p);
        let roll = match self.files.get(&key) {
            Some(a) if a.bytes >= self.core.config.segment_bytes => Some(a.next),
            Some(_) => return Ok(self.files.get_mut(&key).expect("present")),
            None => None,
        };
        let active = if let Some(base) = roll {
            let dir = {
                let st = self.core.lock();
                let t = st.topics.get(topic).ok_or("topic not open")?;
                t.partitions[p as usize].dir.clone()
            };
            let path = dir.join(format!("{base:020}.log"));
            let read = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            sync_dir(&dir).map_err(|e| e.to_string())?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            Active {
                base,
                file: Arc::new(file),
                path,
                bytes: 0,
                next: base,
                unannounced: Some(Arc::new(read)),
            }
        } else {
            // First use since the bus opened: nothing is pending, the state's last segment is current.
            let st = self.core.lock();
            let t = st.topics.get(topic).ok_or("topic not open")?;
            let last = t.partitions[p as usize]
                .segments
                .back()
                .ok_or("partition without segment")?;
            let file = OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(|e| format!("opening {}: {e}", last.path.display()))?;
            Active {
                base: last.base,
                file: Arc::new(file),
                path: last.path.clone(),
                bytes: last.bytes,
                next: last.end(),
                unannounced: None,
            }
        };
        self.files.insert(key.clone(), active);
        Ok(self.files.get_mut(&key).expect("inserted above"))
    }

    /// Appends every partition's share of `batch` (not synced yet). On failure nothing of
    /// it stays: each file is cut back to its length before the batch.
    fn write_batch(&mut self, batch: &[Request]) -> Result<Vec<PartWrite>, String> {
        let mut appends: BTreeMap<(&str, u32), Append> = BTreeMap::new();
        for r in batch {
            for m in &r.messages {
                let a = appends
                    .entry((r.topics[m.topic].as_str(), m.partition))
                    .or_insert_with(|| Append {
                        data: Vec::new(),
                        pos: Vec::new(),
                        records: Vec::new(),
                    });
                a.pos.push(a.data.len() as u32);
                a.records.push((m.key.clone(), m.payload.clone()));
                encode(&m.key, &m.payload, &mut a.data);
            }
        }
        let mut parts = Vec::with_capacity(appends.len());
        let mut failure = None;
        for ((topic, p), append) in appends {
            let active = match self.active(topic, p) {
                Ok(active) => active,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            // Recorded before writing, so a failed write is cut back too.
            parts.push(PartWrite {
                topic: topic.to_owned(),
                partition: p,
                base: active.base,
                path: active.path.clone(),
                start: active.bytes,
                file: Arc::clone(&active.file),
                new_segment: None,
                append,
            });
            let part = parts.last().expect("pushed above");
            if let Err(e) = (&*active.file).write_all(&part.append.data) {
                failure = Some(format!("appending to {}: {e}", active.path.display()));
                break;
            }
        }
        if let Some(e) = failure {
            // Nothing of this batch is acknowledged: cut what was written so a
            // retry does not duplicate it, and so the file stays a clean log.
            for part in &parts {
                if let Err(te) = part.file.set_len(part.start) {
                    tracing::error!(path = %part.path.display(), error = %te, "cutting a failed bus append failed; the bus directory needs a restart to recover");
                    self.core.closed.store(true, Ordering::Release);
                }
            }
            tracing::warn!(
                error = %e,
                messages = batch.iter().map(|r| r.messages.len()).sum::<usize>(),
                "bus batch not written"
            );
            return Err(e);
        }
        for part in &mut parts {
            let active = self
                .files
                .get_mut(&(part.topic.clone(), part.partition))
                .expect("written above");
            active.bytes += part.append.data.len() as u64;
            active.next += part.append.pos.len() as u64;
            part.new_segment = active.unannounced.take();
        }
        Ok(parts)
    }
}

/// The syncer thread: syncs each written batch, makes it visible, answers it. After a
/// failed sync the data's fate on disk is unknown, so it and every later batch are
/// answered with the error and the bus closes (a restart recovers from the files).
fn sync_loop(core: &Core, batches: &std::sync::mpsc::Receiver<Written>) {
    let mut failed: Option<String> = None;
    let mut syncers = Syncers::default();
    while let Ok(w) = batches.recv() {
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None if core.config.fsync => syncers.sync(&w.parts),
            None => Ok(()),
        };
        match &result {
            Ok(()) => publish_visible(core, w.parts),
            Err(e) if failed.is_none() => {
                tracing::error!(error = %e, "syncing the bus failed; closing it (restart to recover)");
                core.closed.store(true, Ordering::Release);
                failed = Some(e.clone());
            }
            Err(_) => {}
        }
        answer(core, w.requests, &result);
        if result.is_ok() {
            core.data.notify_waiters();
        }
    }
}

/// Synced: makes the records visible to consumers and accounts for them.
fn publish_visible(core: &Core, parts: Vec<PartWrite>) {
    let mut st = core.lock();
    for w in parts {
        let Some(t) = st.topics.get_mut(&w.topic) else {
            continue;
        };
        let part = &mut t.partitions[w.partition as usize];
        if let Some(read) = w.new_segment {
            part.segments.push_back(Segment {
                base: w.base,
                path: w.path,
                file: read,
                pos: Vec::new(),
                bytes: 0,
                written: SystemTime::now(),
            });
        }
        let n = w.append.pos.len() as u64;
        // Batches reach here in write order, so the share extends the last segment.
        if let Some(seg) = part.segments.back_mut().filter(|s| s.base == w.base) {
            let start = w.start as u32;
            seg.pos.extend(w.append.pos.iter().map(|x| start + x));
            seg.bytes = w.start + w.append.data.len() as u64;
            seg.written = SystemTime::now();
            // The tail stays the records just below `end`, contiguous.
            part.tail.extend(w.append.records);
            let excess = part.tail.len().saturating_sub(TAIL_CACHE);
            part.tail.drain(..excess);
        }
        let dropped = t.trim(&w.topic, w.partition as usize);
        metrics::counter!(crate::metrics::BUS_PUBLISHED, "bus" => "disk", "topic" => w.topic.clone())
            .increment(n);
        if dropped > 0 {
            metrics::counter!(crate::metrics::BUS_DROPPED, "bus" => "disk", "topic" => w.topic.clone())
                .increment(dropped);
        }
        metrics::gauge!(crate::metrics::BUS_BACKLOG, "bus" => "disk", "topic" => w.topic)
            .set(t.backlog() as f64);
    }
}

/// Threads that `fdatasync` a batch's files in parallel with the syncer, started as batches
/// need them and kept for the bus's life. Parallel, because on a journalled filesystem
/// concurrent syncs share one journal commit, and elsewhere their device writes overlap;
/// kept, because starting a thread per file for every batch (16 at ~200 batches/s) was 4.5%
/// of the gateway's CPU on the disk bus (issue 16, `perf record` of `serve`).
#[derive(Default)]
struct Syncers {
    /// One queue per helper thread: (index in the batch, file to sync).
    helpers: Vec<std::sync::mpsc::Sender<(usize, Arc<File>)>>,
    /// Every helper answers here: (index in the batch, its sync's result).
    done: Option<(
        std::sync::mpsc::Sender<SyncAnswer>,
        std::sync::mpsc::Receiver<SyncAnswer>,
    )>,
}

/// A helper's answer: which file of the batch, and how its sync went.
type SyncAnswer = (usize, std::io::Result<()>);

impl Syncers {
    /// Helper threads at the most; a batch touching more files queues the rest on them.
    const MAX_HELPERS: usize = 32;

    /// `fdatasync` of every file in `parts`: the first here, the others on helper threads.
    fn sync(&mut self, parts: &[PartWrite]) -> Result<(), String> {
        let failed =
            |w: &PartWrite, e: std::io::Error| format!("syncing {}: {e}", w.path.display());
        let Some((first, rest)) = parts.split_first() else {
            return Ok(());
        };
        let (done_tx, done) = self.done.get_or_insert_with(std::sync::mpsc::channel);
        while self.helpers.len() < rest.len().min(Self::MAX_HELPERS) {
            let (tx, jobs) = std::sync::mpsc::channel::<(usize, Arc<File>)>();
            let answers = done_tx.clone();
            let started = std::thread::Builder::new()
                .name("bus-sync-helper".into())
                .spawn(move || {
                    while let Ok((i, file)) = jobs.recv() {
                        if answers.send((i, file.sync_data())).is_err() {
                            break;
                        }
                    }
                });
            match started {
                Ok(_) => self.helpers.push(tx),
                Err(e) => {
                    // Fewer helpers (or none) only means less parallel syncing.
                    tracing::warn!(error = %e, helpers = self.helpers.len(), "starting a bus sync helper failed");
                    break;
                }
            }
        }
        let mut sent = 0;
        let mut result = Ok(());
        for (i, w) in rest.iter().enumerate() {
            let handed = match self.helpers.get(i % self.helpers.len().max(1)) {
                Some(helper) => helper.send((i, Arc::clone(&w.file))).is_ok(),
                None => false,
            };
            if handed {
                sent += 1;
            } else if let Err(e) = w.file.sync_data() {
                result = Err(failed(w, e));
            }
        }
        if let Err(e) = first.file.sync_data() {
            result = Err(failed(first, e));
        }
        for _ in 0..sent {
            match done.recv() {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => result = Err(failed(&rest[i], e)),
                Err(_) => result = Err("a bus sync helper stopped".into()),
            }
        }
        result
    }
}

/// A member of a consumer group on the disk bus. Dropping it leaves the
/// group; its uncommitted messages go to the remaining members.
struct DiskConsumer {
    core: Arc<Core>,
    member: u64,
    group: String,
    topics: Vec<String>,
    cursor: usize,
}

impl DiskConsumer {
    /// The next owned record to read: topic index, partition, offset, and where it is.
    fn next_location(&mut self, st: &mut State) -> Option<(usize, usize, u64, Found)> {
        let per_topic = self.core.config.partitions as usize;
        let slots = self.topics.len() * per_topic;
        for i in 0..slots {
            let slot = (self.cursor + i) % slots;
            let (ti, p) = (slot / per_topic, slot % per_topic);
            let Some(t) = st.topics.get_mut(&self.topics[ti]) else {
                continue;
            };
            let Some(g) = t.groups.get_mut(&self.group) else {
                continue;
            };
            if g.group.owner[p] != Some(self.member) {
                continue;
            }
            if let Some((off, found)) = t.partitions[p].locate(g.group.position[p]) {
                g.group.position[p] = off + 1;
                self.cursor = slot + 1;
                return Some((ti, p, off, found));
            }
        }
        None
    }
}

#[async_trait]
impl Consumer for DiskConsumer {
    async fn recv(&mut self) -> Result<Delivery, BusError> {
        let core = Arc::clone(&self.core);
        loop {
            let data = core.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            let found = {
                if core.closed.load(Ordering::Acquire) {
                    return Err(BusError::Closed);
                }
                self.next_location(&mut core.lock())
            };
            if let Some((ti, p, offset, found)) = found {
                let (key, payload) = match found {
                    Found::Memory(key, payload) => (key, payload),
                    Found::File(file, start, stop) => {
                        // Read outside the lock; an unlinked segment stays readable through its handle.
                        let mut rec = vec![0u8; (stop - start) as usize];
                        file.read_exact_at(&mut rec, start).map_err(|e| {
                            BusError::Broker(format!(
                                "reading {} partition {p} offset {offset}: {e}",
                                self.topics[ti]
                            ))
                        })?;
                        let (key, payload) = decode(&rec).ok_or_else(|| {
                            BusError::Broker(format!(
                                "record {} partition {p} offset {offset} fails its checksum",
                                self.topics[ti]
                            ))
                        })?;
                        (Bytes::copy_from_slice(key), Bytes::copy_from_slice(payload))
                    }
                };
                let topic = self.topics[ti].clone();
                metrics::counter!(crate::metrics::BUS_DELIVERED, "bus" => "disk", "topic" => topic.clone(), "group" => self.group.clone())
                    .increment(1);
                return Ok(Delivery {
                    topic,
                    key,
                    payload,
                    partition: p as u32,
                    offset,
                });
            }
            data.await;
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        let core = &self.core;
        if core.closed.load(Ordering::Acquire) {
            return Err(BusError::Closed);
        }
        let mut st = core.lock();
        let p = delivery.partition as usize;
        let t = st
            .topics
            .get_mut(&delivery.topic)
            .ok_or_else(|| BusError::Config(format!("unknown topic {}", delivery.topic)))?;
        if p >= t.partitions.len() {
            return Err(BusError::Config(format!("no partition {p}")));
        }
        let end = t.partitions[p].end();
        let g = t
            .groups
            .get_mut(&self.group)
            .ok_or_else(|| BusError::Config(format!("not subscribed to {}", delivery.topic)))?;
        let next = (delivery.offset + 1).min(end);
        if next > g.group.committed[p] {
            // On disk first: an offset in memory that the file does not have would be lost by a crash.
            g.offsets
                .write_all_at(&offset_slot(next), (p * SLOT) as u64)
                .map_err(|e| io("writing", &g.path, e))?;
            g.group.advance(p, next);
            let dropped = t.trim(&delivery.topic, p);
            if dropped > 0 {
                metrics::counter!(crate::metrics::BUS_DROPPED, "bus" => "disk", "topic" => delivery.topic.clone())
                    .increment(dropped);
            }
            metrics::gauge!(crate::metrics::BUS_BACKLOG, "bus" => "disk", "topic" => delivery.topic.clone())
                .set(t.backlog() as f64);
        }
        drop(st);
        metrics::counter!(crate::metrics::BUS_COMMITTED, "bus" => "disk", "topic" => delivery.topic.clone(), "group" => self.group.clone())
            .increment(1);
        Ok(())
    }
}

impl Drop for DiskConsumer {
    fn drop(&mut self) {
        let mut st = self.core.lock();
        for name in &self.topics {
            if let Some(g) = st
                .topics
                .get_mut(name)
                .and_then(|t| t.groups.get_mut(&self.group))
            {
                g.group.leave(self.member);
            }
        }
        drop(st);
        self.core.data.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(path: PathBuf, file: File) -> PartWrite {
        PartWrite {
            topic: "t".into(),
            partition: 0,
            base: 0,
            path,
            start: 0,
            file: Arc::new(file),
            new_segment: None,
            append: Append {
                data: Vec::new(),
                pos: Vec::new(),
                records: Vec::new(),
            },
        }
    }

    /// The helper threads are started once and reused by later batches, every file of a
    /// batch is synced, and a failed sync on a helper names its file.
    #[test]
    fn syncers_keep_their_threads_and_report_failures_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<PartWrite> = (0..5)
            .map(|i| {
                let path = dir.path().join(format!("{i}.log"));
                let mut file = File::create(&path).unwrap();
                file.write_all(b"record").unwrap();
                share(path, file)
            })
            .collect();
        let mut syncers = Syncers::default();
        syncers.sync(&parts).unwrap();
        assert_eq!(
            syncers.helpers.len(),
            4,
            "one helper per file beyond the first"
        );
        syncers.sync(&parts[..2]).unwrap();
        syncers.sync(&parts).unwrap();
        assert_eq!(syncers.helpers.len(), 4, "no new threads for later batches");

        // fdatasync(2) fails on a pipe (EINVAL): a share whose file is one, synced on a helper.
        let (_reader, writer) = std::io::pipe().unwrap();
        let pipe = share(
            PathBuf::from("not-a-file"),
            File::from(std::os::fd::OwnedFd::from(writer)),
        );
        let mut batch: Vec<PartWrite> = (0..3)
            .map(|i| share(parts[i].path.clone(), File::open(&parts[i].path).unwrap()))
            .collect();
        batch.insert(2, pipe);
        let error = syncers.sync(&batch).unwrap_err();
        assert!(error.starts_with("syncing not-a-file:"), "{error}");
        assert!(
            syncers.sync(&parts).is_ok(),
            "the helpers survive a failure"
        );
    }
}
