//! A unit simulator: speaks QUIC, framed TCP and legacy HTTP like a real unit (hello/proof,
//! status reports, telemetry, event logs, replies to MT commands). Used by the tests, the load
//! test and the demo fleet; it trusts the gateway's certificate explicitly (no CA needed).
//!
//! Its own crate, written from the protocol (`codec`) alone: it depends on nothing of the
//! gateway, so the gateway's production build carries no QUIC client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codec::frame::{FrameCodec, HEADER_LEN};
use codec::handshake::{compute_proof, HandshakeMessage, Hello, Proof, RefuseReason, Welcome};
use codec::mo::{
    CommandResponse, Event, EventLog, MtReply, OfflineNotice, OfflineReason, ReplyResult,
    StatusReport, TelemetryBatch, TelemetryRecord, TelemetryValue, TYPICAL_TELEMETRY_VALUES,
};
use codec::{
    decode_handshake, decode_mt, encode_handshake, mo_to_vec, MoMessage, MtMessage, Number, Seq,
};
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// What can go wrong for a simulated unit.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Socket trouble.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway refused the handshake.
    #[error("refused: {0:?}")]
    Refused(RefuseReason),
    /// The gateway said something unexpected, or closed.
    #[error("protocol: {0}")]
    Protocol(String),
    /// QUIC connect failure.
    #[error("quic: {0}")]
    Quic(String),
    /// TLS (over TCP) setup failure.
    #[error("tls: {0}")]
    Tls(String),
}

/// The DER of the first certificate in a PEM file (the gateway's, to pin it).
pub fn pem_certificate(path: &std::path::Path) -> Result<Vec<u8>, SimError> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .map(|c| c.to_vec())
        .map_err(|e| SimError::Tls(format!("{}: {e}", path.display())))
}

type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, FrameCodec>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A simulated unit's connection (after or before the handshake).
pub struct UnitConn {
    reader: Reader,
    writer: Writer,
    /// Keeps the QUIC connection open while the streams are used.
    quic: Option<quinn::Connection>,
    /// Protocol version 2 (after [`UnitConn::handshake_v2`]): the unit's unacknowledged MOs.
    window: Option<MoWindow>,
    /// Frames other than acknowledgements read while waiting for window room; [`UnitConn::recv`]
    /// returns them first.
    stash: std::collections::VecDeque<BytesMut>,
}

/// The default window of a version-2 unit (protocol §8.4).
pub const DEFAULT_WINDOW: usize = 256;

/// A version-2 unit's numbering and its unacknowledged MO messages (protocol §8.4): bounded,
/// kept across connections (take it out of a dead connection with
/// [`UnitConn::take_window`] and hand it to the next handshake), resent after every welcome.
#[derive(Debug, Clone)]
pub struct MoWindow {
    boot: u32,
    next_seq: u64,
    acked: u64,
    cap: usize,
    pending: std::collections::VecDeque<(u64, Vec<u8>)>,
}

impl MoWindow {
    /// A fresh numbering (a boot): `boot` is the hello's boot id, numbers start at 1.
    pub fn new(boot: u32, cap: usize) -> Self {
        Self {
            boot,
            next_seq: 1,
            acked: 0,
            cap: cap.max(1),
            pending: Default::default(),
        }
    }

    /// The boot id.
    pub const fn boot(&self) -> u32 {
        self.boot
    }

    /// Whether another message must wait for an acknowledgement.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.cap
    }

    /// Numbers `message` and keeps it until acknowledged; `None` when the window is full.
    pub fn push(&mut self, message: Vec<u8>) -> Option<u64> {
        if self.is_full() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back((seq, message));
        Some(seq)
    }

    /// An acknowledgement of every message up to `seq`: drops them; returns how many.
    pub fn ack(&mut self, seq: u64) -> usize {
        let before = self.pending.len();
        while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
            self.pending.pop_front();
        }
        self.acked = self.acked.max(seq);
        before - self.pending.len()
    }

    /// The highest number acknowledged so far.
    pub const fn acked(&self) -> u64 {
        self.acked
    }

    /// The highest number given out (0 before the first message).
    pub const fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The unacknowledged messages, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.pending.iter().map(|(s, m)| (*s, m.as_slice()))
    }

    /// How many messages wait for an acknowledgement.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether every message is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The receive buffer asked for a simulated client socket: the kernel's usual default
/// (`net.core.rmem_default`), which Linux doubles for its bookkeeping when it is set, so the
/// socket gets ~416 KiB, twice what an untouched socket has. Many simulated units
/// share one socket, which real units never do; given the gateway's 8 MiB, packets for all of
/// them queued behind each other while the load generator was busy, and the measured MT round
/// trip at 50,000 units became the queue's (p99 120 ms against 0.8 ms in the same-day A/B). The
/// gateway's own buffer is what keeps a connect storm from losing handshakes.
const CLIENT_SOCKET_BUFFER: usize = 212_992;

/// A QUIC client endpoint that trusts exactly `cert_der` (the gateway's certificate), sends
/// QUIC keep-alives every `keep_alive` (idle timeout four times that) and serves many connections from one UDP socket.
pub fn quic_endpoint(cert_der: &[u8], keep_alive: Duration) -> Result<quinn::Endpoint, SimError> {
    let tls = pinned_tls(cert_der, codec::handshake::ALPN).map_err(SimError::Quic)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| SimError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout((keep_alive * 4).try_into().ok())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(64_000u32.into())
        .receive_window(64_000u32.into())
        .send_window(64_000)
        .datagram_receive_buffer_size(None);
    client.transport_config(Arc::new(transport));
    let socket = client_socket(CLIENT_SOCKET_BUFFER)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| SimError::Quic("no async runtime".into()))?;
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// A TLS 1.3 client configuration that trusts exactly `cert_der` (the gateway's pinned
/// certificate) and offers `alpn` (the unit protocol's for QUIC and TLS over TCP).
fn pinned_tls(cert_der: &[u8], alpn: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert_der.to_vec()))
        .map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// TCP to `addr`, then TLS trusting exactly `cert_der` with server name `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    cert_der: &[u8],
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SimError> {
    let tls = pinned_tls(cert_der, alpn).map_err(SimError::Tls)?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .map_err(|e| SimError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, stream)
        .await?)
}

/// A loopback UDP socket on an ephemeral port with `buffer` bytes asked for each direction.
fn client_socket(buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // Best effort, as the kernel caps it: a smaller buffer only means more loss under load.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    Ok(socket.into())
}

impl UnitConn {
    /// Opens a framed TCP connection (no handshake yet).
    pub async fn tcp(addr: SocketAddr) -> Result<Self, SimError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        Ok(Self::from_parts(Box::new(rd), Box::new(wr), None))
    }

    /// Opens a framed TCP connection inside TLS 1.3 that trusts exactly `cert_der` (the
    /// gateway's pinned certificate), with the unit protocol's ALPN (no handshake yet).
    pub async fn tcp_tls(addr: SocketAddr, cert_der: &[u8]) -> Result<Self, SimError> {
        let stream = tls_connect(addr, cert_der, codec::handshake::ALPN).await?;
        let (rd, wr) = tokio::io::split(stream);
        Ok(Self::from_parts(Box::new(rd), Box::new(wr), None))
    }

    /// Opens a QUIC connection and its one bidirectional stream (no handshake yet).
    pub async fn quic(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Result<Self, SimError> {
        let conn = endpoint
            .connect(addr, "localhost")
            .map_err(|e| SimError::Quic(e.to_string()))?
            .await
            .map_err(|e| SimError::Quic(e.to_string()))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| SimError::Quic(e.to_string()))?;
        Ok(Self::from_parts(Box::new(recv), Box::new(send), Some(conn)))
    }

    fn from_parts(
        rd: Box<dyn AsyncRead + Send + Unpin>,
        wr: Writer,
        quic: Option<quinn::Connection>,
    ) -> Self {
        Self {
            reader: FramedRead::with_capacity(rd, FrameCodec::new(1 << 20), 256),
            writer: wr,
            quic,
            window: None,
            stash: Default::default(),
        }
    }

    /// hello → challenge → proof → welcome, protocol version 1. `imei: None` for IP identity.
    pub async fn handshake(
        &mut self,
        imei: Option<&str>,
        device_key: &str,
    ) -> Result<Welcome, SimError> {
        self.handshake_as(imei, device_key, 1, None).await
    }

    /// The handshake in protocol version 2 with `window` (a fresh [`MoWindow`], or the one of
    /// the previous connection), then every unacknowledged message of the window sent again
    /// in order (protocol §8.4). From then on every MO this connection sends is numbered and
    /// kept until acknowledged; [`UnitConn::recv`] applies acknowledgements on its own.
    pub async fn handshake_v2(
        &mut self,
        imei: Option<&str>,
        device_key: &str,
        window: MoWindow,
    ) -> Result<Welcome, SimError> {
        let boot = window.boot;
        // Kept in the connection at once, so a failed handshake still hands it back.
        self.window = Some(window);
        let welcome = self.handshake_as(imei, device_key, 2, Some(boot)).await?;
        if welcome.version < 2 {
            return Err(SimError::Protocol(format!(
                "gateway speaks version {}, not 2",
                welcome.version
            )));
        }
        let resend: Vec<(u64, Vec<u8>)> = self
            .window
            .iter()
            .flat_map(|w| w.unacked().map(|(s, m)| (s, m.to_vec())))
            .collect();
        for (seq, message) in resend {
            self.send_numbered(seq, &message).await?;
        }
        Ok(welcome)
    }

    /// The version-2 window (after [`UnitConn::handshake_v2`]), to carry it to the next
    /// connection.
    pub fn take_window(&mut self) -> Option<MoWindow> {
        self.window.take()
    }

    /// The version-2 window, to look at.
    pub fn window(&self) -> Option<&MoWindow> {
        self.window.as_ref()
    }

    /// Reads (keeping any MT for [`UnitConn::recv`]) until every message of the window is
    /// acknowledged; `false` if that did not happen within `limit` or the gateway closed.
    pub async fn await_acks(&mut self, limit: Duration) -> bool {
        let wait = async {
            while self.window.as_ref().is_some_and(|w| !w.is_empty()) {
                match self.read_one().await {
                    Ok(Some(None)) => {}
                    Ok(Some(Some(f))) => self.stash.push_back(f),
                    _ => return false,
                }
            }
            true
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    async fn send_numbered(&mut self, seq: u64, message: &[u8]) -> Result<(), SimError> {
        self.send_numbered_then(seq, message, false).await
    }

    /// The numbered frame, and with `keepalive` an empty frame after it in the same write.
    async fn send_numbered_then(
        &mut self,
        seq: u64,
        message: &[u8],
        keepalive: bool,
    ) -> Result<(), SimError> {
        let mut payload = Vec::with_capacity(9 + message.len());
        codec::ack::encode_sequenced(seq, message, &mut payload);
        if !keepalive {
            return self.send_raw(&payload).await;
        }
        let mut frames = Vec::with_capacity(2 * HEADER_LEN + payload.len());
        frames.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frames.extend_from_slice(&payload);
        frames.extend_from_slice(&0u32.to_be_bytes());
        self.writer.write_all(&frames).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Sends one MO message: as is in version 1; in version 2 numbered and kept in the window,
    /// first waiting (reading acknowledgements) while the window is full. Returns the number
    /// given (0 in version 1).
    pub async fn send_message(&mut self, message: &[u8]) -> Result<u64, SimError> {
        self.send_message_then(message, false).await
    }

    /// [`UnitConn::send_message`] in version 2 with a keepalive in the same write, so the
    /// gateway reads both at once: the acknowledgement must not wait behind the keepalive.
    pub async fn send_message_and_keepalive(&mut self, message: &[u8]) -> Result<u64, SimError> {
        self.send_message_then(message, true).await
    }

    async fn send_message_then(
        &mut self,
        message: &[u8],
        keepalive: bool,
    ) -> Result<u64, SimError> {
        if self.window.is_none() {
            self.send_raw(message).await?;
            return Ok(0);
        }
        while self.window.as_ref().is_some_and(MoWindow::is_full) {
            match self.read_one().await? {
                None => return Err(SimError::Protocol("closed while the window is full".into())),
                Some(None) => {}
                Some(Some(f)) => self.stash.push_back(f),
            }
        }
        let seq = match self.window.as_mut().and_then(|w| w.push(message.to_vec())) {
            Some(seq) => seq,
            None => return Err(SimError::Protocol("window full".into())),
        };
        self.send_numbered_then(seq, message, keepalive).await?;
        Ok(seq)
    }

    /// Reads one frame: `Ok(Some(None))` for an acknowledgement (applied to the window),
    /// `Ok(Some(Some(frame)))` for anything else, `Ok(None)` when the gateway closed.
    async fn read_one(&mut self) -> Result<Option<Option<BytesMut>>, SimError> {
        let frame = match self.reader.next().await {
            None => return Ok(None),
            Some(Ok(f)) => f,
            Some(Err(codec::DecodeError::Io(e))) => return Err(SimError::Io(e)),
            Some(Err(e)) => return Err(SimError::Protocol(e.to_string())),
        };
        if let Some(w) = self.window.as_mut() {
            if let Ok(Some(ack)) = codec::ack::decode_ack(&frame) {
                w.ack(ack.seq);
                return Ok(Some(None));
            }
        }
        Ok(Some(Some(frame)))
    }

    /// Reads until a frame that is not an acknowledgement.
    async fn read_frame(&mut self) -> Result<Option<BytesMut>, SimError> {
        loop {
            match self.read_one().await? {
                None => return Ok(None),
                Some(None) => continue,
                Some(Some(f)) => return Ok(Some(f)),
            }
        }
    }

    /// hello (of `version`, with `boot` when version 2) → challenge → proof → welcome.
    async fn handshake_as(
        &mut self,
        imei: Option<&str>,
        device_key: &str,
        version: u32,
        boot: Option<u32>,
    ) -> Result<Welcome, SimError> {
        let mut out = Vec::new();
        encode_handshake(
            &HandshakeMessage::Hello(Hello {
                version,
                imei,
                software_version: Some("sim-1.0"),
                boot,
            }),
            &mut out,
        );
        self.send_raw(&out).await?;
        loop {
            let frame = self
                .recv()
                .await?
                .ok_or_else(|| SimError::Protocol("closed during handshake".into()))?;
            match decode_handshake(&frame).map_err(|e| SimError::Protocol(e.to_string()))? {
                HandshakeMessage::Challenge(c) => {
                    let imei = imei
                        .ok_or_else(|| SimError::Protocol("challenged without an IMEI".into()))?;
                    let hmac = compute_proof(device_key.as_bytes(), c.nonce, imei);
                    out.clear();
                    encode_handshake(&HandshakeMessage::Proof(Proof { hmac }), &mut out);
                    self.send_raw(&out).await?;
                }
                HandshakeMessage::Welcome(w) => return Ok(w),
                HandshakeMessage::Refused(r) => return Err(SimError::Refused(r.reason)),
                other => return Err(SimError::Protocol(format!("unexpected {other:?}"))),
            }
        }
    }

    /// Sends one frame.
    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<(), SimError> {
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.writer.write_all(&frame).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Sends a frame header announcing `len` bytes (to test the size limit).
    pub async fn send_header_only(&mut self, len: u32) -> Result<(), SimError> {
        self.writer.write_all(&len.to_be_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Sends an MO message (numbered and windowed in version 2, [`UnitConn::send_message`]).
    pub async fn send_mo(&mut self, msg: &MoMessage<'_>) -> Result<(), SimError> {
        self.send_message(&mo_to_vec(msg)).await.map(drop)
    }

    /// Sends a keepalive (empty frame).
    pub async fn keepalive(&mut self) -> Result<(), SimError> {
        self.send_raw(&[]).await
    }

    /// The next frame; `None` when the gateway closed. In version 2, acknowledgements are
    /// applied to the window and not returned.
    pub async fn recv(&mut self) -> Result<Option<BytesMut>, SimError> {
        if let Some(f) = self.stash.pop_front() {
            return Ok(Some(f));
        }
        self.read_frame().await
    }

    /// The next frame or acknowledgement: `Ok(Some(None))` when an acknowledgement was read
    /// (and applied to the window), `Ok(Some(Some(frame)))` for any other frame, `Ok(None)`
    /// when the gateway closed. For a unit that reports acknowledgements as they come, where
    /// [`UnitConn::recv`] would wait silently past them. Cancel-safe like `recv`.
    pub async fn recv_or_ack(&mut self) -> Result<Option<Option<BytesMut>>, SimError> {
        if let Some(f) = self.stash.pop_front() {
            return Ok(Some(Some(f)));
        }
        self.read_one().await
    }

    /// Waits for the gateway to close the connection (`true`) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let wait = async {
            loop {
                match self.recv().await {
                    Ok(Some(_)) => continue,
                    _ => return,
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Answers one MT message like a unit: an MT reply (`result`), plus a command response for
    /// command requests and a status report for sync requests. Returns the MT's type.
    pub async fn answer(
        &mut self,
        mt: &[u8],
        result: ReplyResult,
    ) -> Result<codec::MtType, SimError> {
        let msg = decode_mt(mt).map_err(|e| SimError::Protocol(e.to_string()))?;
        let id = msg.correlation_id();
        self.send_mo(&MoMessage::Reply(MtReply {
            correlation_id: id,
            result,
            info: None,
            balance: None,
            expected_expiry: None,
        }))
        .await?;
        match msg {
            MtMessage::CommandRequest(c) => {
                let output = format!("OK {}", c.command);
                self.send_mo(&MoMessage::CommandResponse(CommandResponse {
                    correlation_id: id,
                    output: &output,
                    status: Some(0),
                }))
                .await?;
            }
            MtMessage::Sync(_) => {
                self.send_message(&status_report(now_s())).await?;
            }
            _ => {}
        }
        Ok(msg.message_type())
    }

    /// Says goodbye with an offline notice and closes.
    pub async fn go_offline(mut self, reason: OfflineReason) -> Result<(), SimError> {
        self.send_mo(&MoMessage::OfflineNotice(OfflineNotice {
            reason,
            info: None,
        }))
        .await?;
        self.close().await
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) -> Result<(), SimError> {
        self.writer.shutdown().await?;
        if let Some(c) = self.quic.take() {
            // Give the stream's FIN a moment to be delivered before closing.
            let _ = tokio::time::timeout(Duration::from_millis(200), c.closed()).await;
            c.close(0u32.into(), b"bye");
        }
        Ok(())
    }

    /// Closes abruptly (QUIC: connection close without finishing the stream).
    pub fn abort(self) {
        if let Some(c) = &self.quic {
            c.close(0u32.into(), b"abort");
        }
    }
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A typical status report (~50 bytes).
pub fn status_report(time: u64) -> Vec<u8> {
    mo_to_vec(&MoMessage::StatusReport(StatusReport::typical(time)))
}

/// A typical telemetry batch: one record of five values, the last a pulse count `seq`.
pub fn telemetry(time: u64, seq: u64) -> Vec<u8> {
    let [voltage, current, _panel_voltage, temperature, state_of_charge, _fan_rpm] =
        TYPICAL_TELEMETRY_VALUES;
    let values = [
        voltage,
        current,
        temperature,
        state_of_charge,
        TelemetryValue {
            field: "pulse_count",
            value: Number::Int(seq as i64),
        },
    ];
    let records = [TelemetryRecord {
        time,
        values: Seq::new(&values),
    }];
    mo_to_vec(&MoMessage::Telemetry(TelemetryBatch {
        records: Seq::new(&records),
    }))
}

/// An event log with one event.
pub fn event_log(time: u64, text: &str) -> Vec<u8> {
    let events = [Event { time, text }];
    mo_to_vec(&MoMessage::EventLog(EventLog {
        events: Seq::new(&events),
    }))
}

/// A minimal HTTP/1.1 request (what an HTTP-only unit does); returns status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, Bytes), SimError> {
    let stream = TcpStream::connect(addr).await?;
    http_exchange(stream, method, path, authorization, body).await
}

/// [`http_request`] over TLS that trusts exactly `cert_der` (the gateway's certificate, as
/// a unit pins it), server name `localhost`, ALPN `http/1.1`.
pub async fn https_request(
    addr: SocketAddr,
    cert_der: &[u8],
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, Bytes), SimError> {
    let stream = tls_connect(addr, cert_der, b"http/1.1").await?;
    http_exchange(stream, method, path, authorization, body).await
}

async fn http_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, Bytes), SimError> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| SimError::Protocol("no HTTP header end".into()))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SimError::Protocol(format!("bad status line: {head}")))?;
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, Bytes::from(body)))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if len == 0 {
            break;
        }
        let start = pos + 2;
        out.extend_from_slice(&b[start..(start + len).min(b.len())]);
        b = &b[(start + len + 2).min(b.len())..];
    }
    out
}
