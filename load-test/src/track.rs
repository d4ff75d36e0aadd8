//! What every simulated unit sent, so target mode can prove what arrived.
//!
//! Each telemetry batch is identifiable: its record time is `t_base + seq` and its
//! `pulse_count` is `run_tag * 10^7 + seq`, `seq` counting 1, 2, 3… per unit. The data API
//! then shows exactly which of a unit's batches are stored, and how often (the time keeps
//! points of one unit apart in the store; the tag keeps runs apart when units are reused).
//! The other MO (status reports, event logs, MT replies) are counted per unit and compared
//! with the unit's `rtc_mo_message_history` rows.
//!
//! "Sent" and "acknowledged" are kept apart: a framed unit of protocol version 2 counts an MO
//! acknowledged when the gateway's cumulative acknowledgement covers its number (the gateway
//! sends it after the bus accepted the message); an HTTP unit when its upload was answered 200.
//! Version-1 units have no acknowledgement: what they wrote is all there is to compare.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use codec::MoMessage;

/// Telemetry sequence numbers per run tag (`pulse_count = run_tag * SEQ_SPAN + seq`).
pub(crate) const SEQ_SPAN: u64 = 10_000_000;

/// The key under which an enable (`true`) or disable of unit `i` through the API waits for
/// the unit to receive the status update carrying it.
pub(crate) fn switch_key(i: u32, enabled: bool) -> String {
    format!("switch-{i}-{enabled}")
}

/// A unit's identity, as provisioned.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) imei: String,
    pub(crate) key: String,
}

#[derive(Default)]
struct UnitTrack {
    /// Telemetry sequence numbers handed out (the last one).
    issued: AtomicU64,
    /// MO written without error (all kinds).
    written: AtomicU64,
    /// MO acknowledged (all kinds).
    acked: AtomicU64,
    /// MO whose write failed (they may or may not have arrived).
    failed: AtomicU64,
    /// Telemetry sequence numbers whose write failed.
    failed_seqs: Mutex<Vec<u64>>,
    /// Telemetry sequence numbers written and never acknowledged (version 2).
    unacked_seqs: Mutex<Vec<u64>>,
    /// The last telemetry that counts as arrived (acknowledged; written, for version-1
    /// units): its seq and when (ms since the run started).
    last_seq: AtomicU64,
    last_ms: AtomicU64,
    online: AtomicBool,
}

/// What one unit sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitSent {
    /// MO written without error.
    pub(crate) written: u64,
    /// Of those, acknowledged (version 2 and HTTP units; 0 for version-1 framed units).
    pub(crate) acked: u64,
    /// MO whose write failed (they may or may not have arrived).
    pub(crate) failed: u64,
    /// Telemetry sequence numbers that must be stored: acknowledged (written, without
    /// acknowledgements).
    pub(crate) telemetry: Vec<u64>,
}

impl UnitSent {
    /// MO that must be stored: the acknowledged ones, or (no acknowledgements) the written.
    pub(crate) const fn expected(&self, acks: bool) -> u64 {
        if acks {
            self.acked
        } else {
            self.written
        }
    }
}

/// Per-unit bookkeeping shared by all unit tasks, plus MT commands in flight.
pub(crate) struct Tracking {
    pub(crate) run_tag: u64,
    pub(crate) t_base: u64,
    started: Instant,
    units: Vec<UnitTrack>,
    /// Commands sent through the API and not yet seen by their unit: payment commands by
    /// transaction id, enable/disable by [`switch_key`] → when the API request was made.
    pending: Mutex<HashMap<String, Instant>>,
    pub(crate) mt_delivered: AtomicU64,
    /// MT latency: API request → the unit received the command (µs).
    pub(crate) mt_latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// Highest MT latency since the per-second sampler last took it (µs).
    pub(crate) mt_latency_max_window: AtomicU64,
    pub(crate) mo_acked_total: AtomicU64,
    pub(crate) mo_written_total: AtomicU64,
    /// Framed units get acknowledgements (protocol version 2).
    acks: bool,
    /// Target mode's replay phase.
    pub(crate) replayed: Replayed,
}

/// Captured MO played back by the units (target mode's replay phase). They are counted with
/// everything else the unit sent as well, so the verification covers them.
#[derive(Default)]
pub(crate) struct Replayed {
    /// Written without error.
    pub(crate) written: AtomicU64,
    /// Of those, acknowledged (version 2).
    pub(crate) acked: AtomicU64,
    /// Writes that failed.
    pub(crate) failed: AtomicU64,
    /// How late they were written against the playback's schedule.
    pub(crate) lateness: crate::playback::Lateness,
}

impl Tracking {
    /// `acks`: the framed units speak protocol version 2 (they get MO acknowledgements).
    pub(crate) fn new(units: u32, run_tag: u64, t_base: u64, acks: bool) -> Self {
        Self {
            run_tag,
            t_base,
            started: Instant::now(),
            units: (0..units).map(|_| UnitTrack::default()).collect(),
            pending: Mutex::default(),
            mt_delivered: AtomicU64::new(0),
            mt_latency: Mutex::new(load_test::latency_histogram()),
            mt_latency_max_window: AtomicU64::new(0),
            mo_acked_total: AtomicU64::new(0),
            mo_written_total: AtomicU64::new(0),
            acks,
            replayed: Replayed::default(),
        }
    }

    /// The next telemetry sequence number of unit `i`.
    pub(crate) fn next_seq(&self, i: u32) -> u64 {
        self.units[i as usize]
            .issued
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    /// Record time (unix seconds) and `pulse_count` of telemetry `seq`.
    pub(crate) fn stamp(&self, seq: u64) -> (u64, u64) {
        (self.t_base + seq, self.run_tag * SEQ_SPAN + seq)
    }

    /// The sequence number in a stored `pulse_count`, if it is this run's.
    pub(crate) fn seq_of(&self, pulses: u64) -> Option<u64> {
        (pulses / SEQ_SPAN == self.run_tag).then_some(pulses % SEQ_SPAN)
    }

    /// Telemetry batch `seq` (the simulator's, with this run's stamp).
    pub(crate) fn telemetry(&self, seq: u64) -> Vec<u8> {
        let (t, pulses) = self.stamp(seq);
        sim::telemetry(t, pulses)
    }

    /// Framed unit `i` wrote one MO without error (`Some(seq)`: telemetry `seq`). Without
    /// acknowledgements (version 1) its telemetry counts as arrived now.
    pub(crate) fn mo_written(&self, i: u32, seq: Option<u64>) {
        self.units[i as usize]
            .written
            .fetch_add(1, Ordering::Relaxed);
        self.mo_written_total.fetch_add(1, Ordering::Relaxed);
        if !self.acks {
            self.arrived(i, seq);
        }
    }

    /// The gateway acknowledged `n` more MO of framed unit `i`, the newest telemetry among
    /// them being `seq`.
    pub(crate) fn mo_acked(&self, i: u32, n: u64, seq: Option<u64>) {
        self.units[i as usize].acked.fetch_add(n, Ordering::Relaxed);
        self.mo_acked_total.fetch_add(n, Ordering::Relaxed);
        self.arrived(i, seq);
    }

    /// An HTTP upload answered 200: written and acknowledged at once.
    pub(crate) fn http_uploaded(&self, i: u32, seq: u64) {
        let u = &self.units[i as usize];
        u.written.fetch_add(1, Ordering::Relaxed);
        self.mo_written_total.fetch_add(1, Ordering::Relaxed);
        u.acked.fetch_add(1, Ordering::Relaxed);
        self.mo_acked_total.fetch_add(1, Ordering::Relaxed);
        self.arrived(i, Some(seq));
    }

    fn arrived(&self, i: u32, seq: Option<u64>) {
        if let Some(seq) = seq {
            let u = &self.units[i as usize];
            u.last_ms
                .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            u.last_seq.store(seq, Ordering::Relaxed);
        }
    }

    /// Telemetry `seq` of unit `i` was written and the unit left without its acknowledgement.
    pub(crate) fn never_acked(&self, i: u32, seq: u64) {
        self.units[i as usize]
            .unacked_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seq);
    }

    /// Unit `i`'s write of one MO failed (carrying telemetry `seqs`, if any).
    pub(crate) fn write_failed(&self, i: u32, seqs: &[u64]) {
        let u = &self.units[i as usize];
        u.failed.fetch_add(1, Ordering::Relaxed);
        u.failed_seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(seqs);
    }

    /// A captured MO for unit `i` (target mode's replay phase), made identifiable when it is
    /// telemetry: each record takes the unit's next sequence number's record time and
    /// `pulse_count` (added when the record had none); its other values, and every other
    /// kind of MO, as captured. The message to send and the sequence numbers it carries.
    pub(crate) fn restamp(&self, i: u32, mo: &[u8]) -> (Vec<u8>, Vec<u64>) {
        use codec::mo::{TelemetryBatch, TelemetryRecord, TelemetryValue};
        let Ok(MoMessage::Telemetry(batch)) = codec::decode_mo(mo) else {
            return (mo.to_vec(), Vec::new());
        };
        let seqs: Vec<u64> = batch.records.iter().map(|_| self.next_seq(i)).collect();
        let values: Vec<Vec<TelemetryValue<'_>>> = batch
            .records
            .iter()
            .zip(&seqs)
            .map(|(r, &seq)| {
                let pulses = TelemetryValue {
                    field: "pulse_count",
                    value: codec::Number::Int(self.stamp(seq).1 as i64),
                };
                r.values
                    .iter()
                    .filter(|v| v.field != "pulse_count")
                    .chain(std::iter::once(pulses))
                    .collect()
            })
            .collect();
        let records: Vec<TelemetryRecord<'_>> = values
            .iter()
            .zip(&seqs)
            .map(|(v, &seq)| TelemetryRecord {
                time: self.stamp(seq).0,
                values: codec::Seq::new(v),
            })
            .collect();
        let batch = TelemetryBatch {
            records: codec::Seq::new(&records),
        };
        (codec::mo_to_vec(&MoMessage::Telemetry(batch)), seqs)
    }

    pub(crate) fn set_online(&self, i: u32, on: bool) {
        self.units[i as usize].online.store(on, Ordering::Relaxed);
    }

    pub(crate) fn is_online(&self, i: u32) -> bool {
        self.units[i as usize].online.load(Ordering::Relaxed)
    }

    /// What unit `i` sent, for the verification.
    pub(crate) fn sent(&self, i: u32) -> UnitSent {
        let u = &self.units[i as usize];
        let failed = u.failed_seqs.lock().unwrap_or_else(|e| e.into_inner());
        let unacked = u.unacked_seqs.lock().unwrap_or_else(|e| e.into_inner());
        let telemetry = (1..=u.issued.load(Ordering::Relaxed))
            .filter(|s| !failed.contains(s) && !unacked.contains(s))
            .collect();
        UnitSent {
            written: u.written.load(Ordering::Relaxed),
            acked: u.acked.load(Ordering::Relaxed),
            failed: u.failed.load(Ordering::Relaxed),
            telemetry,
        }
    }

    /// MO acknowledged so far; written so far when framed units get no acknowledgement
    /// (version 1), which is all such a run can count.
    pub(crate) fn mo_confirmed_total(&self) -> u64 {
        if self.acks {
            self.mo_acked_total.load(Ordering::Relaxed)
        } else {
            self.mo_written_total.load(Ordering::Relaxed)
        }
    }

    /// Whether framed units get acknowledgements (protocol version 2).
    pub(crate) const fn acks(&self) -> bool {
        self.acks
    }

    /// Unit `i`'s last telemetry that counts as arrived: (seq, ms since the run started).
    pub(crate) fn last_telemetry(&self, i: u32) -> Option<(u64, u64)> {
        let u = &self.units[i as usize];
        let ms = u.last_ms.load(Ordering::Relaxed);
        let seq = u.last_seq.load(Ordering::Relaxed);
        (seq > 0).then_some((seq, ms))
    }

    /// Milliseconds since the run started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A command (transaction id or [`switch_key`]) is about to be sent through the API.
    pub(crate) fn mt_sent(&self, tx: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tx.to_owned(), Instant::now());
    }

    /// The API did not accept `tx`: no unit is to expect it.
    pub(crate) fn mt_rejected(&self, tx: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tx);
    }

    /// A unit received command `tx` (transaction id or [`switch_key`]); a repeat delivery,
    /// or a status update nobody asked for, is not counted.
    pub(crate) fn mt_received(&self, tx: &str) {
        let sent = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tx);
        if let Some(t) = sent {
            let us = (t.elapsed().as_micros() as u64).max(1);
            self.mt_delivered.fetch_add(1, Ordering::Relaxed);
            self.mt_latency_max_window.fetch_max(us, Ordering::Relaxed);
            let _ = self
                .mt_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(us);
        }
    }

    /// Commands sent and not yet received by their unit.
    pub(crate) fn mt_pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_pulse_count_names_its_run_and_sequence() {
        let t = Tracking::new(2, 1234, 1_000_000, true);
        assert_eq!(t.next_seq(1), 1);
        assert_eq!(t.next_seq(1), 2);
        let (time, pulses) = t.stamp(2);
        assert_eq!(time, 1_000_002);
        assert_eq!(t.seq_of(pulses), Some(2));
        // Another run's value (units reused from a CSV) is not this run's.
        assert_eq!(t.seq_of(1235 * SEQ_SPAN + 2), None);
        t.write_failed(1, &[1]);
        t.mo_written(1, Some(2));
        assert_eq!(t.last_telemetry(1), None, "written is not acknowledged");
        t.mo_acked(1, 1, Some(2));
        assert_eq!(t.last_telemetry(1).map(|l| l.0), Some(2));
        let sent = t.sent(1);
        assert_eq!((sent.written, sent.acked, sent.failed), (1, 1, 1));
        assert_eq!(sent.telemetry, vec![2]);
    }

    #[test]
    fn replayed_telemetry_records_take_the_units_next_stamps_and_other_mo_stay_as_captured() {
        use codec::mo::{TelemetryBatch, TelemetryRecord, TelemetryValue};
        let t = Tracking::new(1, 42, 1_000_000, true);
        assert_eq!(t.next_seq(0), 1, "the unit's own telemetry came first");
        let (a, b) = (
            [TelemetryValue {
                field: "voltage",
                value: codec::Number::Float(12.5),
            }],
            [
                TelemetryValue {
                    field: "pulse_count",
                    value: codec::Number::Int(7),
                },
                TelemetryValue {
                    field: "current",
                    value: codec::Number::Int(3),
                },
            ],
        );
        let records = [
            TelemetryRecord {
                time: 1_700_000_000,
                values: codec::Seq::new(&a),
            },
            TelemetryRecord {
                time: 1_700_000_015,
                values: codec::Seq::new(&b),
            },
        ];
        let captured = codec::mo_to_vec(&MoMessage::Telemetry(TelemetryBatch {
            records: codec::Seq::new(&records),
        }));
        let (mo, seqs) = t.restamp(0, &captured);
        assert_eq!(seqs, [2, 3]);
        let Ok(MoMessage::Telemetry(batch)) = codec::decode_mo(&mo) else {
            panic!("still telemetry");
        };
        let got: Vec<(u64, Vec<(String, String)>)> = batch
            .records
            .iter()
            .map(|r| {
                let values = r.values.iter();
                let values = values.map(|v| (v.field.to_owned(), format!("{:?}", v.value)));
                (r.time, values.collect())
            })
            .collect();
        let pulses = |seq: u64| format!("{:?}", codec::Number::Int((42 * SEQ_SPAN + seq) as i64));
        let field = |f: &str, v: String| (f.to_owned(), v);
        assert_eq!(
            got,
            [
                (
                    1_000_002,
                    vec![
                        field("voltage", format!("{:?}", codec::Number::Float(12.5))),
                        field("pulse_count", pulses(2)),
                    ]
                ),
                (
                    1_000_003,
                    vec![
                        field("current", format!("{:?}", codec::Number::Int(3))),
                        field("pulse_count", pulses(3)),
                    ]
                ),
            ]
        );
        let status = sim::status_report(1_700_000_000);
        assert_eq!(t.restamp(0, &status), (status, Vec::new()));
        assert_eq!(t.next_seq(0), 4, "a status report takes no number");
    }

    #[test]
    fn telemetry_never_acknowledged_is_not_expected_in_the_store() {
        let t = Tracking::new(1, 7, 1_000_000, true);
        let (a, b) = (t.next_seq(0), t.next_seq(0));
        t.mo_written(0, Some(a));
        t.mo_written(0, Some(b));
        t.mo_acked(0, 1, Some(a));
        t.never_acked(0, b);
        let sent = t.sent(0);
        assert_eq!((sent.written, sent.expected(true)), (2, 1));
        assert_eq!(sent.telemetry, vec![a]);
        // Without acknowledgements (version 1) what was written is what must be stored.
        let v1 = Tracking::new(1, 7, 1_000_000, false);
        let s = v1.next_seq(0);
        v1.mo_written(0, Some(s));
        assert_eq!(v1.sent(0).expected(false), 1);
        assert_eq!(v1.last_telemetry(0).map(|l| l.0), Some(s));
    }
}
