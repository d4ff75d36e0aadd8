//! One demo unit on the network: connects (QUIC or TCP), proves its key, reports and answers
//! MT commands like a unit, and reconnects after it drops off.

use std::net::SocketAddr;
use std::time::Duration;

use codec::mo::{
    Cell, CellReport, Event, EventLog, MtReply, OfflineReason, ReplyResult, StatusReport,
    TelemetryBatch, TelemetryRecord, TelemetryValue,
};
use codec::mt::PaymentCategory;
use codec::{decode_mt, mo_to_vec, MoMessage, MtMessage, Number, Seq};
use sim::{SimError, UnitConn};
use tokio_util::sync::CancellationToken;

use crate::model::{Happening, Model};

/// How a unit reaches the gateway.
#[derive(Clone)]
pub(crate) enum Transport {
    Tcp(SocketAddr),
    /// TLS over TCP, trusting the gateway's certificate (DER).
    TcpTls(SocketAddr, Vec<u8>),
    Quic(quinn::Endpoint, SocketAddr),
}

impl Transport {
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Self::Tcp(_) | Self::TcpTls(..) => "tcp",
            Self::Quic(..) => "quic",
        }
    }

    async fn connect(&self) -> Result<UnitConn, SimError> {
        match self {
            Self::Tcp(addr) => UnitConn::tcp(*addr).await,
            Self::TcpTls(addr, cert) => UnitConn::tcp_tls(*addr, cert).await,
            Self::Quic(endpoint, addr) => UnitConn::quic(endpoint, *addr).await,
        }
    }
}

/// What a unit needs to run.
pub(crate) struct UnitSpec {
    pub(crate) imei: String,
    pub(crate) device_key: String,
    pub(crate) transport: Transport,
    /// Between two telemetry reports.
    pub(crate) report_every: Duration,
    /// Simulated hours per report.
    pub(crate) sim_hours_per_report: f64,
    /// Where the unit is installed (its GPS fix), for the map.
    pub(crate) location: (f64, f64),
}

/// Runs the unit until `stop`: (re)connects, reports, answers. Connection failures are
/// logged and retried, as a unit in the field would.
pub(crate) async fn run(spec: UnitSpec, mut model: Model, stop: CancellationToken) {
    let mut backoff = Duration::from_secs(2);
    while !stop.is_cancelled() {
        let pause = match session(&spec, &mut model, &stop).await {
            Ok(Some(offline)) => {
                tracing::info!(imei = %spec.imei, secs = offline.as_secs(), "demo unit went offline");
                backoff = Duration::from_secs(2);
                offline
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(imei = %spec.imei, transport = spec.transport.name(), error = %e, "demo unit connection failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One connection: `Ok(Some(pause))` when the unit chose to go offline for `pause`,
/// `Ok(None)` when stopped.
async fn session(
    spec: &UnitSpec,
    model: &mut Model,
    stop: &CancellationToken,
) -> Result<Option<Duration>, SimError> {
    let mut conn = spec.transport.connect().await?;
    conn.handshake(Some(&spec.imei), &spec.device_key).await?;
    conn.send_raw(&status_report(model)).await?;
    conn.send_raw(&cell_report(spec)).await?;
    conn.send_raw(&telemetry(model)).await?;
    let mut tick = tokio::time::interval(spec.report_every);
    tick.tick().await;
    let mut reports: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                conn.go_offline(OfflineReason::SleepMode).await?;
                return Ok(None);
            }
            _ = tick.tick() => {
                let events = model.advance(spec.report_every, spec.sim_hours_per_report);
                conn.send_raw(&telemetry(model)).await?;
                if !events.is_empty() {
                    conn.send_raw(&event_log(&events)).await?;
                }
                reports += 1;
                // A status report every sixth telemetry report (a minute by default).
                if reports.is_multiple_of(6) {
                    conn.send_raw(&status_report(model)).await?;
                }
                if model.drops_off() {
                    conn.go_offline(OfflineReason::LowBatteryVoltage).await?;
                    return Ok(Some(spec.report_every * 6));
                }
            }
            frame = conn.recv() => {
                let frame = frame?.ok_or_else(|| SimError::Protocol("gateway closed".into()))?;
                if !frame.is_empty() {
                    answer(&mut conn, model, &frame).await?;
                }
            }
        }
    }
}

/// Answers one MT command as a unit does: applies payments and status updates and says so
/// with its new balance; other commands are answered by the simulator's standard replies.
async fn answer(conn: &mut UnitConn, model: &mut Model, frame: &[u8]) -> Result<(), SimError> {
    let msg = decode_mt(frame).map_err(|e| SimError::Protocol(e.to_string()))?;
    match msg {
        MtMessage::PaymentCommands(p) => {
            for c in &p.commands {
                let value = match c.category {
                    PaymentCategory::ZeroCommand => 0,
                    _ => c.value,
                };
                model.apply_payment(value, c.transaction_id);
            }
            let now = sim::now_s();
            conn.send_mo(&MoMessage::Reply(MtReply {
                correlation_id: p.correlation_id,
                result: ReplyResult::Ok,
                info: None,
                balance: Some(model.balance),
                expected_expiry: Some(now + model.balance.max(0) as u64),
            }))
            .await?;
            tracing::info!(balance = model.balance, "demo unit applied a payment");
            conn.send_raw(&status_report(model)).await
        }
        MtMessage::StatusUpdate(u) => {
            if let Some(enabled) = u.enabled {
                model.enabled = enabled;
            }
            if let Some(tamper) = u.tamper_enabled {
                model.tamper_enabled = tamper;
            }
            conn.send_mo(&MoMessage::Reply(MtReply {
                correlation_id: u.correlation_id,
                result: ReplyResult::Ok,
                info: None,
                balance: None,
                expected_expiry: None,
            }))
            .await?;
            conn.send_raw(&status_report(model)).await
        }
        _ => conn.answer(frame, ReplyResult::Ok).await.map(drop),
    }
}

fn status_report(m: &Model) -> Vec<u8> {
    let now = sim::now_s();
    mo_to_vec(&MoMessage::StatusReport(StatusReport {
        time: Some(now),
        enabled: Some(m.enabled),
        tamper_enabled: Some(m.tamper_enabled),
        tamper_triggered: Some(m.tamper_triggered()),
        software_version: Some("demo-1.0"),
        energy_limit: None,
        capacity_limit: None,
        balance: Some(m.balance),
        expected_expiry: Some(now + m.balance.max(0) as u64),
    }))
}

/// The serving cell and the unit's GPS fix, as a unit reports after connecting.
fn cell_report(spec: &UnitSpec) -> Vec<u8> {
    let cid = spec.imei[7..].parse::<u32>().unwrap_or(0) % 60_000 + 1;
    let cells = [Cell {
        lac: 1000 + cid % 50,
        cid,
        signal: -70 - (cid % 30) as i32,
        mcc: None,
        mnc: None,
    }];
    mo_to_vec(&MoMessage::CellReport(CellReport {
        time: Some(sim::now_s()),
        // Kenya, Safaricom.
        mcc: Some(639),
        mnc: Some(2),
        cells: Seq::new(&cells),
        frequency: None,
        timing_advance: None,
        latitude: Some(spec.location.0),
        longitude: Some(spec.location.1),
        error_radius: Some(20),
        location_failed: Some(false),
        country_code: Some(254),
    }))
}

fn telemetry(m: &Model) -> Vec<u8> {
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let mut values = vec![
        TelemetryValue {
            field: "voltage",
            value: Number::Float(round(m.voltage())),
        },
        TelemetryValue {
            field: "current",
            value: Number::Float(round(m.current())),
        },
        TelemetryValue {
            field: "temperature",
            value: Number::Float(round(m.temperature)),
        },
        TelemetryValue {
            field: "state_of_charge_percent",
            value: Number::Int(m.state_of_charge.round() as i64),
        },
        TelemetryValue {
            field: "solar_power_w",
            value: Number::Float(round(m.solar_w)),
        },
        TelemetryValue {
            field: "load_power_w",
            value: Number::Float(round(m.load_w)),
        },
        TelemetryValue {
            field: "pulse_count",
            value: Number::Int(m.pulses as i64),
        },
    ];
    if m.tamper_triggered() {
        values.push(TelemetryValue {
            field: "tamper_triggered",
            value: Number::Int(1),
        });
    }
    let records = [TelemetryRecord {
        time: sim::now_s(),
        values: Seq::new(&values),
    }];
    mo_to_vec(&MoMessage::Telemetry(TelemetryBatch {
        records: Seq::new(&records),
    }))
}

fn event_log(happenings: &[Happening]) -> Vec<u8> {
    let now = sim::now_s();
    let events: Vec<Event<'_>> = happenings
        .iter()
        .map(|h| Event {
            time: now,
            text: h.text(),
        })
        .collect();
    mo_to_vec(&MoMessage::EventLog(EventLog {
        events: Seq::new(&events),
    }))
}
