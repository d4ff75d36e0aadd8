//! Legacy HTTP for units that only speak HTTP (protocol §6): `POST /rm_data` (telemetry),
//! `POST /rc_data` (status up), `GET /rc_data` (settings down), with
//! `Authorization: Basic base64(imei:device_key)`.
//!
//! Uploads become the same CBOR MO messages a QUIC/TCP unit would send (telemetry batch,
//! status report, cell report) with transport `http`, so ingest has one path. `GET /rc_data`
//! answers with the MT commands this gateway holds for the unit, merged into the legacy
//! settings body (with what the database's record says the unit must still get, read first);
//! each is then settled with a gateway-written reply.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use codec::legacy::{
    decode_rc_status, decode_rm_data, encode_rc_settings, parse_basic_auth, LegacyPaymentCommand,
    LegacySoftware, RcSettings, RcStatus, RmData,
};
use codec::mo::{
    Cell, CellReport, ReplyResult, TelemetryBatch, TelemetryRecord, TelemetryValue, MAX_CELLS,
};
use codec::{
    decode_mt, encode_bus_envelope, mo_to_vec, BusEnvelope, CorrelationId, DecodeError, MoMessage,
    MtMessage, Seq, Transport,
};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics as m;
use crate::mt::outcome_envelope;
use crate::server::{Ctx, ShardMsg};

/// TLS handshakes the HTTPS listener runs at once.
const MAX_TLS_HANDSHAKES: usize = 1024;

/// Four hours of telemetry fits comfortably.
const BODY_LIMIT: usize = 1024 * 1024;

pub(crate) async fn serve(ctx: Arc<Ctx>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let stop = ctx.stop_accept.clone();
    let result = match tls {
        None => {
            let app = router(ctx);
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        Some(acceptor) => {
            let tls_listener = TlsListener::start(&ctx, listener, acceptor);
            let app = router(ctx);
            axum::serve(tls_listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// HTTPS for axum: a task accepts TCP connections and runs each TLS handshake in its own
/// task (bounded by the handshake timeout), so one slow or silent client never holds up
/// the others; finished handshakes queue up for axum's `accept`.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(ctx: &Arc<Ctx>, listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let stop = ctx.stop_accept.clone();
        let timeout = ctx.config.handshake_timeout();
        // Handshakes in progress are bounded: a flood of silent connections costs at most
        // this many tasks, each for at most the handshake timeout; beyond it a connection
        // is closed at once.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_TLS_HANDSHAKES));
        tokio::spawn(async move {
            while let Some((stream, peer)) = super::accept_until(&listener, &stop, "https").await {
                let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                    metrics::counter!(m::HANDSHAKE_FAILURES, "transport" => "http", "reason" => "busy")
                        .increment(1);
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        _ => {
                            metrics::counter!(m::HANDSHAKE_FAILURES, "transport" => "http", "reason" => "tls")
                                .increment(1);
                        }
                    }
                });
            }
        });
        Self { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): wait for axum's graceful shutdown to stop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/rm_data", post(rm_data))
        .route("/rc_data", post(rc_data_post).get(rc_data_get))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx)
}

fn status(code: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "status": if code.is_success() { "success" } else { "error" },
        "message": message,
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The unit named by the `Authorization` header, if its device key matches.
async fn authenticate(ctx: &Ctx, headers: &HeaderMap) -> Result<Arc<str>, Response> {
    metrics::counter!(m::CONNECTIONS_ACCEPTED, "transport" => "http").increment(1);
    let refuse = |reason: &'static str| {
        metrics::counter!(m::HTTP_AUTH_FAILURES).increment(1);
        metrics::counter!(m::HANDSHAKE_FAILURES, "transport" => "http", "reason" => reason)
            .increment(1);
        status(StatusCode::UNAUTHORIZED, "unauthorized")
    };
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| refuse("malformed"))?;
    let (imei, key) = parse_basic_auth(header).map_err(|_| refuse("malformed"))?;
    let unit = ctx
        .deps
        .directory
        .lookup_imei(&imei)
        .await
        .ok_or_else(|| refuse("unknown_unit"))?;
    if !bool::from(unit.device_key.as_bytes().ct_eq(key.as_bytes())) {
        return Err(refuse("bad_proof"));
    }
    metrics::counter!(m::HANDSHAKES, "transport" => "http").increment(1);
    // Route MT commands for this unit here: it polls this gateway.
    ctx.deps.registry.claim(&imei, &ctx.config.node_id).await;
    Ok(Arc::from(imei))
}

async fn publish_mo(ctx: &Ctx, imei: &str, message: &[u8]) -> Result<(), Response> {
    let ty = codec::decode_mo(message).map(|m| m.message_type().as_str());
    metrics::counter!(m::MO_MESSAGES, "type" => ty.unwrap_or("invalid"), "transport" => "http")
        .increment(1);
    metrics::counter!(m::MO_BYTES, "transport" => "http").increment(message.len() as u64);
    let received_at_ms = crate::unix_ms();
    if let Some(c) = &ctx.capture {
        c.record(imei, Transport::Http, received_at_ms, message);
    }
    let env = encode_bus_envelope(&BusEnvelope {
        imei,
        correlation_id: CorrelationId(rand::random()),
        received_at_ms,
        transport: Transport::Http,
        ident: None,
        message,
        // HTTP units number nothing: their 200 is the acknowledgement (protocol §8.6).
        mo_number: None,
    });
    ctx.deps
        .bus
        .publish(&ctx.config.topics.mo, imei.as_bytes(), &env)
        .await
        .map_err(|e| {
            // Not stored: the unit keeps the data and tries again (it deletes only after a 2xx).
            tracing::warn!(error = %e, imei, "bus refused an HTTP unit's message");
            let mut r = status(
                StatusCode::SERVICE_UNAVAILABLE,
                "not stored: the message bus cannot accept it now; send it again later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            r
        })
}

/// A decoded legacy upload, which names the unit it comes from.
trait Upload {
    fn unit(&self) -> &str;
}

impl Upload for RmData<'_> {
    fn unit(&self) -> &str {
        &self.imei
    }
}

impl Upload for RcStatus<'_> {
    fn unit(&self) -> &str {
        &self.imei
    }
}

/// The upload of the unit authenticated as `imei`: one naming another unit is refused (403),
/// one that did not decode is a 400, counted as a decode error.
// The error is the answer, returned at once by the handler (as `authenticate`'s is).
#[allow(clippy::result_large_err)]
fn from_unit<T: Upload>(imei: &str, decoded: Result<T, DecodeError>) -> Result<T, Response> {
    match decoded {
        Ok(d) if d.unit() == imei => Ok(d),
        Ok(_) => Err(status(
            StatusCode::FORBIDDEN,
            "imei does not match the credentials",
        )),
        Err(e) => {
            metrics::counter!(m::DECODE_ERRORS, "kind" => "http").increment(1);
            Err(status(StatusCode::BAD_REQUEST, &e.to_string()))
        }
    }
}

async fn rm_data(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let imei = match authenticate(&ctx, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let data = match from_unit(&imei, decode_rm_data(&body)) {
        Ok(d) => d,
        Err(r) => return r,
    };
    // Field-major (the legacy body) to time-major (telemetry records).
    let mut by_time: BTreeMap<u64, Vec<TelemetryValue<'_>>> = BTreeMap::new();
    for (field, samples) in &data.fields {
        for (time, value) in samples {
            by_time.entry(*time).or_default().push(TelemetryValue {
                field,
                value: *value,
            });
        }
    }
    let records: Vec<TelemetryRecord<'_>> = by_time
        .iter()
        .map(|(time, values)| TelemetryRecord {
            time: *time,
            values: Seq::new(values),
        })
        .collect();
    let cbor = mo_to_vec(&MoMessage::Telemetry(TelemetryBatch {
        records: Seq::new(&records),
    }));
    match publish_mo(&ctx, &imei, &cbor).await {
        Ok(()) => status(StatusCode::OK, "telemetry stored"),
        Err(r) => r,
    }
}

async fn rc_data_post(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let imei = match authenticate(&ctx, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let rc = match from_unit(&imei, decode_rc_status(&body)) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let report = mo_to_vec(&MoMessage::StatusReport(rc.status_report()));
    if let Err(r) = publish_mo(&ctx, &imei, &report).await {
        return r;
    }
    if let Some(c) = &rc.connection {
        let cells: Vec<Cell> = c.cells.iter().take(MAX_CELLS).map(|&c| c.into()).collect();
        let cbor = mo_to_vec(&MoMessage::CellReport(CellReport {
            time: c.time.or(rc.time),
            mcc: c.mcc,
            mnc: c.mnc,
            cells: Seq::new(&cells),
            frequency: c.frequency,
            timing_advance: c.timing_advance,
            latitude: c.latitude,
            longitude: c.longitude,
            error_radius: c.error_radius,
            location_failed: c.location_failed,
            country_code: c.country_code,
        }));
        if let Err(r) = publish_mo(&ctx, &imei, &cbor).await {
            return r;
        }
    }
    status(StatusCode::OK, "status stored")
}

async fn rc_data_get(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    let imei = match authenticate(&ctx, &headers).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    // The record of what the unit must still get goes into its queue first, so this poll
    // takes it even if this gateway restarted since the command was sent.
    ctx.load_pending(&imei).await;
    let (tx, rx) = oneshot::channel();
    ctx.to_shard(
        &imei,
        ShardMsg::HttpPoll {
            imei: Arc::clone(&imei),
            reply: tx,
        },
    )
    .await;
    let commands = rx.await.unwrap_or_default();
    let mut settings = RcSettings {
        server_time: Some((crate::unix_ms() / 1000) as u64),
        ..RcSettings::default()
    };
    let mut outcomes = Vec::with_capacity(commands.len());
    for c in &commands {
        let result = match decode_mt(&c.message) {
            Ok(MtMessage::StatusUpdate(s)) => {
                settings.enabled = s.enabled.or(settings.enabled);
                settings.tamper_enabled = s.tamper_enabled.or(settings.tamper_enabled);
                settings.energy_limit = s.energy_limit.or(settings.energy_limit);
                settings.capacity_limit = s.capacity_limit.or(settings.capacity_limit);
                for p in s.parameters.iter().flat_map(|p| p.iter()) {
                    settings
                        .parameters
                        .insert(Cow::Borrowed(p.name), Cow::Borrowed(p.value));
                }
                ReplyResult::Ok
            }
            Ok(MtMessage::PaymentCommands(p)) => {
                settings
                    .payment_commands
                    .extend(p.commands.iter().map(|pc| LegacyPaymentCommand {
                        category: Cow::Borrowed(pc.category.as_str()),
                        value: pc.value,
                        transaction_id: Cow::Borrowed(pc.transaction_id),
                    }));
                ReplyResult::Ok
            }
            Ok(MtMessage::SoftwareUpdate(s)) => {
                settings.software = Some(LegacySoftware {
                    version: Cow::Borrowed(s.version),
                    url: s.url.map(Cow::Borrowed),
                    sha256: s.sha256.map(|h| Cow::Owned(hex_lower(&h))),
                    size: s.size,
                });
                ReplyResult::Ok
            }
            // Sync and command requests have no legacy form.
            Ok(_) | Err(_) => ReplyResult::Unsupported,
        };
        outcomes.push((c.correlation_id, result));
    }
    let body = encode_rc_settings(&settings);
    for (correlation_id, result) in outcomes {
        metrics::counter!(m::MT_EVENTS, "event" => "http").increment(1);
        let info = if result == ReplyResult::Ok {
            "delivered over HTTP GET /rc_data"
        } else {
            "not expressible over HTTP GET /rc_data"
        };
        let env = outcome_envelope(&imei, correlation_id, Transport::Http, result, info);
        let _ = ctx
            .deps
            .bus
            .publish(&ctx.config.topics.mt_reply, imei.as_bytes(), &env)
            .await;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
