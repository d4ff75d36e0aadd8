//! The blocks readers see, and the blocks they keep open.
//!
//! **Live blocks.** The store's view lists its blocks as shared [`LiveBlock`]s. Compaction and
//! retention take a block out of the view and *retire* it; its files are deleted when the last
//! view that lists it is dropped, so a read that took its snapshot before the change still finds
//! every file its snapshot lists (the way LevelDB and RocksDB keep a version's files while an
//! iterator holds it). A crash before the deletion leaves the files beside their replacement:
//! a merged block holds the same values with a higher `seq`, and an expired day is deleted again
//! by the next retention pass.
//!
//! **Open blocks.** Opening a block reads and parses its Parquet footer, which cost more than the
//! rows of one unit that most reads decode. [`OpenBlocks`] keeps the most recently read blocks
//! open (an LRU of at most `capacity` readers: each holds a file descriptor and its parsed
//! footer), keyed by the block's generation, which is new for every file written, so a merged
//! block that took over an older block's path is never answered from the older file.
//!
//! **Month files** (the daily rollups, [`super::daily`]) are kept open in the same LRU, keyed
//! the same way: a [`LiveMonth`] is new for every month file written. A month file is replaced
//! by rename and says itself which block of each day it was built from, so a read that opens a
//! newer file than its snapshot knew checks it against its own blocks, and needs no file kept
//! for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hashlink::LruCache;

use super::block::{self, BlockMeta};
use super::daily::MonthMeta;
use crate::tsdb::TsdbError;

/// Generations of the files this process has listed or written.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A block in the store's view.
pub(super) struct LiveBlock {
    pub(super) meta: BlockMeta,
    /// New for every file: the key of its open reader.
    generation: u64,
    /// Set once the block is out of the view and its files must go with it.
    delete_on_drop: AtomicBool,
}

impl LiveBlock {
    pub(super) fn new(meta: BlockMeta) -> Arc<Self> {
        Arc::new(Self {
            meta,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            delete_on_drop: AtomicBool::new(false),
        })
    }

    /// Deletes the block's files once no view lists it any more.
    pub(super) fn retire(&self) {
        self.delete_on_drop.store(true, Ordering::Release);
    }

    fn retired(&self) -> bool {
        self.delete_on_drop.load(Ordering::Acquire)
    }
}

impl std::ops::Deref for LiveBlock {
    type Target = BlockMeta;
    fn deref(&self) -> &BlockMeta {
        &self.meta
    }
}

impl Drop for LiveBlock {
    fn drop(&mut self) {
        if !self.retired() {
            return;
        }
        let paths: [PathBuf; 2] = [self.meta.path.clone(), self.meta.rollup_path()];
        for path in paths {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Left on disk: the next open lists it, and compaction or retention takes it
                // again (its values are also in the block that replaced it).
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "deleting a retired time-series block failed")
                }
            }
        }
        if let Some(dir) = self.meta.path.parent() {
            // The day's directory goes with its last block (fails, as it should, while other
            // blocks are left).
            let _ = std::fs::remove_dir(dir.join("1h"));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A month file of daily rollups in the store's view.
pub(super) struct LiveMonth {
    pub(super) meta: MonthMeta,
    /// New for every file: the key of its open reader.
    generation: u64,
    /// Set once a newer file (or none) took its place: its reader is not kept.
    replaced: AtomicBool,
    /// Which block (`seq`) each day's rollups were built from, once known: set when the file is
    /// written, read from its footer by the first pass that needs it after opening the store.
    days: OnceLock<BTreeMap<i64, u64>>,
}

impl LiveMonth {
    /// A month file listed on opening the store (its days not read yet).
    pub(super) fn listed(meta: MonthMeta) -> Arc<Self> {
        Arc::new(Self {
            meta,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            replaced: AtomicBool::new(false),
            days: OnceLock::new(),
        })
    }

    /// A month file just written with the rollups of `days`.
    pub(super) fn written(meta: MonthMeta, days: BTreeMap<i64, u64>) -> Arc<Self> {
        let m = Self::listed(meta);
        let _ = m.days.set(days);
        m
    }

    /// The days the file holds and the block each came from, if known.
    pub(super) fn days(&self) -> Option<&BTreeMap<i64, u64>> {
        self.days.get()
    }

    /// Records the days read from the file's footer.
    pub(super) fn learn_days(&self, days: BTreeMap<i64, u64>) -> &BTreeMap<i64, u64> {
        self.days.get_or_init(|| days)
    }

    pub(super) fn replace(&self) {
        self.replaced.store(true, Ordering::Release);
    }
}

/// Which of a block's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum File {
    /// The raw values.
    Values,
    /// The hourly rollups.
    Rollups,
}

/// What a kept-open reader reads: a block's file or a month's daily rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Values,
    Hourly,
    Daily,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Values => "values",
            Self::Hourly => "1h",
            Self::Daily => "1d",
        }
    }
}

impl From<File> for Kind {
    fn from(f: File) -> Self {
        match f {
            File::Values => Self::Values,
            File::Rollups => Self::Hourly,
        }
    }
}

/// The most recently read blocks, kept open.
pub(super) struct OpenBlocks {
    readers: Mutex<LruCache<(u64, Kind), Arc<block::Reader>>>,
    /// Files opened (not found open), by [`Kind`]: what a test counts.
    opened: [AtomicU64; 3],
}

impl OpenBlocks {
    /// At most `capacity` open readers; 0 keeps none open.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            readers: Mutex::new(LruCache::new(capacity)),
            opened: Default::default(),
        }
    }

    /// A reader of `file` of `b`: the open one, or one opened now (and kept, unless the block
    /// was retired meanwhile: its file is on its way out).
    pub(super) fn get(&self, b: &LiveBlock, file: File) -> Result<Arc<block::Reader>, TsdbError> {
        let path = match file {
            File::Values => b.meta.path.clone(),
            File::Rollups => b.meta.rollup_path(),
        };
        self.reader((b.generation, file.into()), &path, || b.retired())
    }

    /// A reader of month file `m`: the open one, or one opened now (kept unless a newer file
    /// replaced it meanwhile).
    pub(super) fn get_month(&self, m: &LiveMonth) -> Result<Arc<block::Reader>, TsdbError> {
        self.reader((m.generation, Kind::Daily), &m.meta.path, || {
            m.replaced.load(Ordering::Acquire)
        })
    }

    fn reader(
        &self,
        key: (u64, Kind),
        path: &Path,
        gone: impl Fn() -> bool,
    ) -> Result<Arc<block::Reader>, TsdbError> {
        let file = key.1.label();
        if let Some(r) = self.lock().get(&key) {
            metrics::counter!(crate::metrics::TSDB_BLOCK_OPENS, "cached" => "true", "file" => file)
                .increment(1);
            return Ok(Arc::clone(r));
        }
        // Opened outside the lock: parsing a footer takes a while, and other reads go on.
        let reader = Arc::new(block::Reader::open(path)?);
        self.opened[key.1 as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::TSDB_BLOCK_OPENS, "cached" => "false", "file" => file)
            .increment(1);
        let mut readers = self.lock();
        if readers.capacity() > 0 && !gone() {
            readers.insert(key, Arc::clone(&reader));
        }
        Ok(reader)
    }

    /// How many files of `kind` reads have opened (rather than found open) so far.
    #[cfg(test)]
    pub(super) fn opened(&self, kind: Kind) -> u64 {
        self.opened[kind as usize].load(Ordering::Relaxed)
    }

    /// Closes the reader of a month file that a newer file (or none) replaced.
    pub(super) fn forget_month(&self, m: &LiveMonth) {
        m.replace();
        self.lock().remove(&(m.generation, Kind::Daily));
    }

    /// Closes the readers of blocks that left the view (call after [`LiveBlock::retire`]), so
    /// their files' space is freed when the reads still using them finish.
    pub(super) fn forget(&self, blocks: &[Arc<LiveBlock>]) {
        let mut readers = self.lock();
        for b in blocks {
            for kind in [Kind::Values, Kind::Hourly] {
                readers.remove(&(b.generation, kind));
            }
        }
    }

    /// Closes every reader (tests: to prove a read does not touch a file).
    #[cfg(test)]
    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(u64, Kind), Arc<block::Reader>>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
