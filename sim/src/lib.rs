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
    StatusReport, TelemetryBatch, TelemetryRecord, TelemetryValue,
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
        }
    }

    /// hello → challenge → proof → welcome. `imei: None` for IP identity.
    pub async fn handshake(
        &mut self,
        imei: Option<&str>,
        device_key: &str,
    ) -> Result<Welcome, SimError> {
        let mut out = Vec::new();
        encode_handshake(
            &HandshakeMessage::Hello(Hello {
                version: 1,
                imei,
                software_version: Some("sim-1.0"),
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

    /// Sends an MO message.
    pub async fn send_mo(&mut self, msg: &MoMessage<'_>) -> Result<(), SimError> {
        self.send_raw(&mo_to_vec(msg)).await
    }

    /// Sends a keepalive (empty frame).
    pub async fn keepalive(&mut self) -> Result<(), SimError> {
        self.send_raw(&[]).await
    }

    /// The next frame; `None` when the gateway closed.
    pub async fn recv(&mut self) -> Result<Option<BytesMut>, SimError> {
        match self.reader.next().await {
            None => Ok(None),
            Some(Ok(f)) => Ok(Some(f)),
            Some(Err(codec::DecodeError::Io(e))) => Err(SimError::Io(e)),
            Some(Err(e)) => Err(SimError::Protocol(e.to_string())),
        }
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
            MtMessage::Sync(_) => self.send_raw(&status_report(now_s())).await?,
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
    mo_to_vec(&MoMessage::StatusReport(StatusReport {
        time: Some(time),
        enabled: Some(true),
        tamper_enabled: Some(true),
        tamper_triggered: Some(false),
        software_version: Some("3.6a"),
        energy_limit: Some(120.5),
        capacity_limit: Some(80.0),
        balance: Some(432_000),
        expected_expiry: Some(time + 432_000),
    }))
}

/// A typical telemetry batch (one record, five values).
pub fn telemetry(time: u64, seq: u64) -> Vec<u8> {
    let values = [
        TelemetryValue {
            field: "voltage",
            value: Number::Float(12.9),
        },
        TelemetryValue {
            field: "current",
            value: Number::Float(1.25),
        },
        TelemetryValue {
            field: "temperature",
            value: Number::Float(31.5),
        },
        TelemetryValue {
            field: "state_of_charge_percent",
            value: Number::Int(87),
        },
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
