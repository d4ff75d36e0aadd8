//! A capture file as per-unit scripts, and the clock that plays them back: what `load-test
//! replay` (its own gateway, cloned units) and target mode's replay phase (`run --api …
//! --replay FILE`, the provisioned units) share.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use load_test::{latency_histogram, Percentiles};
use tokio::time::Instant;

/// One captured unit's frames: (milliseconds from the capture's start, MO payload).
pub(crate) type Script = Vec<(u64, Vec<u8>)>;

/// One unit of the capture.
pub(crate) struct CapturedUnit {
    /// It was captured over QUIC.
    pub(crate) quic: bool,
    pub(crate) script: Arc<Script>,
}

/// A capture read into scripts, its units in the order they first appear.
pub(crate) struct Capture {
    /// Frames read (after `max_frames`).
    pub(crate) frames: u64,
    pub(crate) units: Vec<CapturedUnit>,
}

impl Capture {
    /// Reads `path` (gateway capture mode's format), at most its first `max_frames` frames.
    pub(crate) fn load(path: &Path, max_frames: Option<usize>) -> anyhow::Result<Self> {
        let mut frames = gateway::capture::read_capture(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if let Some(max) = max_frames {
            frames.truncate(max);
        }
        anyhow::ensure!(!frames.is_empty(), "{}: no frames", path.display());
        let t_first = frames.iter().map(|f| f.t_ms).min().unwrap_or(0);
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut units: Vec<(bool, Script)> = Vec::new();
        for f in &frames {
            let payload = f
                .payload()
                .with_context(|| format!("bad base64 in a frame of {}", f.imei))?;
            let k = *index.entry(&f.imei).or_insert_with(|| {
                units.push((f.transport == "quic", Vec::new()));
                units.len() - 1
            });
            units[k].1.push(((f.t_ms - t_first).max(0) as u64, payload));
        }
        Ok(Self {
            frames: frames.len() as u64,
            units: units
                .into_iter()
                .map(|(quic, script)| CapturedUnit {
                    quic,
                    script: Arc::new(script),
                })
                .collect(),
        })
    }

    /// Drops the frames that are no MO message (the gateway dead-letters them: nothing of
    /// theirs is stored, so target mode cannot verify them); how many.
    pub(crate) fn retain_decodable(&mut self) -> u64 {
        let mut dropped = 0;
        for u in &mut self.units {
            let mut script = u.script.as_ref().clone();
            let before = script.len();
            script.retain(|(_, p)| codec::decode_mo(p).is_ok());
            dropped += (before - script.len()) as u64;
            u.script = Arc::new(script);
        }
        self.units.retain(|u| !u.script.is_empty());
        dropped
    }

    /// Frames in the scripts.
    pub(crate) fn len(&self) -> u64 {
        self.units.iter().map(|u| u.script.len() as u64).sum()
    }
}

/// The playback clock: a frame captured `offset_ms` after the capture's start is due `speed`
/// times sooner after the playback's start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    speed: f64,
}

impl Clock {
    /// Starts the playback in 200 ms (so every player is waiting when the first frame is due).
    pub(crate) fn start(speed: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            speed.is_finite() && speed > 0.0,
            "the playback speed must be positive"
        );
        Ok(Self {
            start: Instant::now() + Duration::from_millis(200),
            speed,
        })
    }

    /// When the frame captured at `offset_ms` is due.
    pub(crate) fn due(&self, offset_ms: u64) -> Instant {
        self.start + Duration::from_secs_f64(offset_ms as f64 / 1000.0 / self.speed)
    }

    /// Waits until the frame captured at `offset_ms` is due; when that is.
    pub(crate) async fn wait(&self, offset_ms: u64) -> Instant {
        let at = self.due(offset_ms);
        tokio::time::sleep_until(at).await;
        at
    }
}

/// How late frames went out against the schedule.
pub(crate) struct Lateness(Mutex<hdrhistogram::Histogram<u64>>);

impl Default for Lateness {
    fn default() -> Self {
        Self(Mutex::new(latency_histogram()))
    }
}

impl Lateness {
    /// A frame due at `at` went out now.
    pub(crate) fn record(&self, at: Instant) {
        let late = Instant::now().saturating_duration_since(at);
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record((late.as_micros() as u64).max(1));
    }

    pub(crate) fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Target mode's pairing of `captured` units with `units` provisioned ones: pair `j` plays
/// captured unit `j mod captured` on unit `j mod units`, for `j` below the larger count. With
/// fewer captured units every unit plays one (each captured unit cloned); with more, each
/// captured unit plays on one unit, several on a unit.
pub(crate) fn pairs(captured: usize, units: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = if captured == 0 || units == 0 {
        0
    } else {
        captured.max(units)
    };
    (0..n).map(move |j| (j % captured, j % units))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_captured_unit_and_every_unit_is_paired() {
        let few: Vec<_> = pairs(2, 5).collect();
        assert_eq!(few, [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4)]);
        let many: Vec<_> = pairs(5, 2).collect();
        assert_eq!(many, [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]);
        assert_eq!(pairs(0, 3).count(), 0);
        assert_eq!(pairs(3, 0).count(), 0);
    }

    #[test]
    fn a_capture_becomes_scripts_from_its_start_and_undecodable_frames_go() {
        let path = std::env::temp_dir().join(format!("playback-{}.jsonl", std::process::id()));
        let mo = |p: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(p)
        };
        let status = sim::status_report(1_700_000_000);
        let lines = [
            (1_000, "a", "tcp", mo(&status)),
            (1_500, "b", "quic", mo(&status)),
            (2_250, "a", "tcp", mo(b"not cbor")),
            (3_000, "a", "tcp", mo(&status)),
        ];
        let text: String = lines
            .iter()
            .map(|(t, imei, tr, m)| {
                format!(
                    "{{\"t_ms\":{t},\"imei\":\"{imei}\",\"transport\":\"{tr}\",\"mo\":\"{m}\"}}\n"
                )
            })
            .collect();
        std::fs::write(&path, text).unwrap();
        let mut c = Capture::load(&path, None).unwrap();
        assert_eq!((c.frames, c.len(), c.units.len()), (4, 4, 2));
        let offsets: Vec<u64> = c.units[0].script.iter().map(|f| f.0).collect();
        assert_eq!(offsets, [0, 1_250, 2_000]);
        assert!(!c.units[0].quic && c.units[1].quic);
        assert_eq!(c.retain_decodable(), 1);
        assert_eq!(c.len(), 3);
        let short = Capture::load(&path, Some(2)).unwrap();
        assert_eq!((short.frames, short.units.len()), (2, 2));
        let _ = std::fs::remove_file(&path);
    }
}
