//! Capture mode: every MO message units send is appended to a file, to be replayed later by
//! `load-test replay` (format in `docs/operations.md`, "Capturing and replaying traffic").
//!
//! One JSON object per line, in arrival order:
//! `{"t_ms":1700000000123,"imei":"350000000000007","transport":"tcp","mo":"<base64 CBOR>"}`.
//! Only MO payloads are written (after the handshake; keepalives are not), never device keys.
//!
//! The sessions must never wait on the disk: they hand frames to a bounded queue that one
//! thread drains into a buffered file; when the queue is full the frame is dropped and counted
//! (`smartsolar_gateway_capture_dropped_frames_total`). This is a `std` thread and channel,
//! not a tokio task, because the writes are blocking file I/O.

use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use base64::Engine as _;
use codec::Transport;
use serde::{Deserialize, Serialize};

use crate::metrics as m;

/// Frames buffered between the sessions and the writer thread.
const QUEUE: usize = 65_536;

/// One captured MO message (one line of the capture file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// When the gateway received it, unix milliseconds.
    pub t_ms: i64,
    /// The unit.
    pub imei: String,
    /// `quic`, `tcp` or `http`.
    pub transport: String,
    /// The MO payload (CBOR), base64 (standard alphabet, padded).
    pub mo: String,
}

impl CapturedFrame {
    /// The MO payload bytes.
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.mo)
    }
}

/// Reads a capture file (skipping blank lines); fails on the first malformed line.
pub fn read_capture(path: &Path) -> std::io::Result<Vec<CapturedFrame>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {e}", path.display(), i + 1),
                )
            })
        })
        .collect()
}

enum Msg {
    Frame(CapturedFrame),
    Flush(mpsc::Sender<()>),
}

/// The sessions' handle on the capture writer.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    tx: SyncSender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("capture message")
    }
}

impl Capture {
    /// Opens (appends to) `path` and starts the writer thread.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new()
            .name("gateway-capture".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(Msg::Frame(f)) => {
                            if serde_json::to_writer(&mut out, &f).is_ok() {
                                let _ = out.write_all(b"\n");
                            }
                        }
                        Ok(Msg::Flush(done)) => {
                            let _ = out.flush();
                            let _ = done.send(());
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            let _ = out.flush();
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = out.flush();
            })?;
        Ok(Self { tx })
    }

    /// Records one MO payload; never blocks.
    pub(crate) fn record(&self, imei: &str, transport: Transport, t_ms: i64, payload: &[u8]) {
        let f = CapturedFrame {
            t_ms,
            imei: imei.to_owned(),
            transport: transport.as_str().to_owned(),
            mo: base64::engine::general_purpose::STANDARD.encode(payload),
        };
        match self.tx.try_send(Msg::Frame(f)) {
            Ok(()) => {
                metrics::counter!(m::CAPTURED, "transport" => transport.as_str()).increment(1);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!(m::CAPTURE_DROPPED).increment(1);
            }
        }
    }

    /// Writes everything queued so far to the file (waits up to 5 s).
    pub(crate) fn flush_blocking(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }
}
