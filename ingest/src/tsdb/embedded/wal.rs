//! The head's write-ahead log: numbered segment files under `wal/`, each
//! `SSTSDB01` then records `[len u32][crc32 u32][payload]` (one write batch
//! per record; the format of the old single `tsdb.log`, which opens as
//! segment 0).
//!
//! **Group commit**: appending a record is a buffered `write` under a short
//! lock; making it durable is a separate step in which one writer `fsync`s
//! for everyone whose record was written before the flush began. Writers
//! that arrive while an `fsync` runs wait for it and usually find their
//! record already covered, so N concurrent writers cost far fewer than N
//! flushes.
//!
//! **Segments** follow the head: when the head is frozen to be written as
//! blocks, the log moves to a new segment; once the blocks are durable the
//! older segments are deleted. Opening therefore replays only what is not
//! yet in blocks.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::super::{FieldValue, Point, TsdbError};

const MAGIC: &[u8; 8] = b"SSTSDB01";

/// The log of the head.
pub(super) struct Wal {
    dir: PathBuf,
    /// The segment being appended to. Lock order: `synced` before `current`.
    current: Mutex<Segment>,
    /// Highest record sequence number known durable; also the lock that
    /// serialises `fsync`s.
    synced: Mutex<u64>,
}

struct Segment {
    id: u64,
    file: Arc<File>,
    /// Sequence number of the last record appended (all segments).
    written: u64,
}

/// Path of segment `id`.
fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

/// Segment ids present in `dir`, ascending.
pub(super) fn segment_ids(dir: &Path) -> Result<Vec<u64>, TsdbError> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".log").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Wal {
    /// Replays every segment of `dir` into `apply` (oldest first), then
    /// starts a new segment after them.
    pub(super) fn open(dir: &Path, mut apply: impl FnMut(&[Point])) -> Result<Self, TsdbError> {
        std::fs::create_dir_all(dir)?;
        let ids = segment_ids(dir)?;
        for id in &ids {
            replay(&segment_path(dir, *id), &mut apply)?;
        }
        let id = ids.last().map_or(1, |l| l + 1);
        let file = create_segment(dir, id)?;
        Ok(Self {
            dir: dir.to_owned(),
            current: Mutex::new(Segment {
                id,
                file: Arc::new(file),
                written: 0,
            }),
            synced: Mutex::new(0),
        })
    }

    /// Appends one record (not yet durable); returns its sequence number
    /// for [`Wal::sync`].
    pub(super) fn append(&self, payload: &[u8]) -> Result<u64, TsdbError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| TsdbError::InvalidPoint("write batch over 4 GiB".into()))?;
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        rec.extend_from_slice(payload);
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        // One `write` of the whole record: a crash leaves at most a torn tail.
        (&*cur.file).write_all(&rec)?;
        cur.written += 1;
        Ok(cur.written)
    }

    /// Makes every record up to `seq` durable (group commit).
    pub(super) fn sync(&self, seq: u64) -> Result<(), TsdbError> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= seq {
            return Ok(()); // someone's fsync covered this record
        }
        let (file, upto) = {
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            (Arc::clone(&cur.file), cur.written)
        };
        file.sync_data()?;
        *synced = upto;
        Ok(())
    }

    /// Moves to a new segment (the old one made durable first); returns the
    /// new segment's id: every older segment may be deleted once the head it
    /// belonged to is in blocks.
    pub(super) fn rotate(&self) -> Result<u64, TsdbError> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.file.sync_data()?;
        *synced = cur.written;
        let id = cur.id + 1;
        cur.file = Arc::new(create_segment(&self.dir, id)?);
        cur.id = id;
        Ok(id)
    }

    /// Deletes the segments before `id`.
    pub(super) fn remove_before(&self, id: u64) -> Result<(), TsdbError> {
        for old in segment_ids(&self.dir)?.into_iter().filter(|s| *s < id) {
            std::fs::remove_file(segment_path(&self.dir, old))?;
        }
        Ok(())
    }

    /// Size of the live segments in bytes.
    pub(super) fn disk_bytes(&self) -> u64 {
        super::dir_bytes(&self.dir)
    }
}

fn create_segment(dir: &Path, id: u64) -> Result<File, TsdbError> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    if file.metadata()?.len() == 0 {
        file.write_all(MAGIC)?;
    }
    file.sync_all()?;
    super::sync_dir(dir)?;
    Ok(file)
}

/// Replays one segment; a torn record at the end (a crash mid-append) is cut
/// off, a damaged record elsewhere fails the open.
fn replay(path: &Path, apply: &mut impl FnMut(&[Point])) -> Result<(), TsdbError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len < MAGIC.len() as u64 {
        // Created but never written past its header: nothing to replay.
        return Ok(());
    }
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
        if good + 8 + n as u64 > len {
            break; // torn last record
        }
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
        file.sync_all()?;
    }
    Ok(())
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

/// Encodes a write batch as one record payload.
pub(super) fn encode_batch(out: &mut Vec<u8>, points: &[Point]) {
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
