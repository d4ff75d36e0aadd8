//! MO (mobile-originated, unit → server) messages: `[type, body]` CBOR, protocol §4.2.
//!
//! Decoding borrows: every `&str`/`&[u8]` in a decoded message points into the input, and
//! variable-length parts are [`Seq`]s over the input, so [`decode_mo`] allocates nothing on
//! success.

use minicbor::Decoder;

use crate::cbor::{self, count_some, Container, Writer};
use crate::seq::{Item, Seq};
use crate::{CorrelationId, DecodeError, Number};

/// MO message type numbers (protocol §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MoType {
    /// 1: enable/tamper state, software, limits, DCM balance.
    StatusReport = 1,
    /// 2: telemetry records.
    Telemetry = 2,
    /// 3: serving and neighbour cells, location.
    CellReport = 3,
    /// 4: event log of `[unix_time, text]` pairs (legacy shape).
    EventLog = 4,
    /// 5: acknowledgement of an MT message.
    Reply = 5,
    /// 6: output of a command request.
    CommandResponse = 6,
    /// 7: final balance after a zero-command.
    FinalBalance = 7,
    /// 8: the unit is going offline.
    OfflineNotice = 8,
}

impl MoType {
    /// Short name for logs, metrics labels and `rtc_mo_message_history`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StatusReport => "status_report",
            Self::Telemetry => "telemetry",
            Self::CellReport => "cell_report",
            Self::EventLog => "event_log",
            Self::Reply => "reply",
            Self::CommandResponse => "command_response",
            Self::FinalBalance => "final_balance",
            Self::OfflineNotice => "offline_notice",
        }
    }
}

/// Any MO message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MoMessage<'a> {
    /// Type 1.
    StatusReport(StatusReport<'a>),
    /// Type 2.
    Telemetry(TelemetryBatch<'a>),
    /// Type 3.
    CellReport(CellReport<'a>),
    /// Type 4.
    EventLog(EventLog<'a>),
    /// Type 5.
    Reply(MtReply<'a>),
    /// Type 6.
    CommandResponse(CommandResponse<'a>),
    /// Type 7.
    FinalBalance(FinalBalance<'a>),
    /// Type 8.
    OfflineNotice(OfflineNotice<'a>),
}

impl MoMessage<'_> {
    /// The message's type number.
    pub const fn message_type(&self) -> MoType {
        match self {
            Self::StatusReport(_) => MoType::StatusReport,
            Self::Telemetry(_) => MoType::Telemetry,
            Self::CellReport(_) => MoType::CellReport,
            Self::EventLog(_) => MoType::EventLog,
            Self::Reply(_) => MoType::Reply,
            Self::CommandResponse(_) => MoType::CommandResponse,
            Self::FinalBalance(_) => MoType::FinalBalance,
            Self::OfflineNotice(_) => MoType::OfflineNotice,
        }
    }

    /// The MT message this answers, for replies, command responses and final balances.
    pub const fn correlation_id(&self) -> Option<CorrelationId> {
        match self {
            Self::Reply(r) => Some(r.correlation_id),
            Self::CommandResponse(r) => Some(r.correlation_id),
            Self::FinalBalance(r) => Some(r.correlation_id),
            _ => None,
        }
    }
}

/// Type 1: the unit's current state. Every field is optional: absent means "not reported".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatusReport<'a> {
    /// Key 0: unit clock, unix seconds.
    pub time: Option<u64>,
    /// Key 1: current enable state (`product.current_enable_flag`).
    pub enabled: Option<bool>,
    /// Key 2: tamper switch armed.
    pub tamper_enabled: Option<bool>,
    /// Key 3: tamper switch currently tripped.
    pub tamper_triggered: Option<bool>,
    /// Key 4: software version name, e.g. `"3.6a"`.
    pub software_version: Option<&'a str>,
    /// Key 5: energy limit (Wh).
    pub energy_limit: Option<f64>,
    /// Key 6: capacity limit.
    pub capacity_limit: Option<f64>,
    /// Key 7: DCM balance, seconds of credit left.
    pub balance: Option<i64>,
    /// Key 8: DCM expected expiry, unix seconds.
    pub expected_expiry: Option<u64>,
}

impl StatusReport<'static> {
    /// A typical enabled unit's report at `time` (~50 bytes encoded): the message the unit
    /// simulator sends and the tests and fuzz seeds decode, written once.
    pub fn typical(time: u64) -> Self {
        Self {
            time: Some(time),
            enabled: Some(true),
            tamper_enabled: Some(true),
            tamper_triggered: Some(false),
            software_version: Some("3.6a"),
            energy_limit: Some(120.5),
            capacity_limit: Some(80.0),
            balance: Some(432_000),
            expected_expiry: Some(time + 432_000),
        }
    }
}

/// Type 2: a batch of telemetry records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TelemetryBatch<'a> {
    /// The records, oldest first.
    pub records: Seq<'a, TelemetryRecord<'a>>,
}

impl TelemetryBatch<'static> {
    /// A typical batch: two records, fifteen minutes apart, of the six
    /// [`TYPICAL_TELEMETRY_VALUES`] (109 bytes encoded). The one fixture the benches, the
    /// instruction-count gate and the allocation test encode.
    pub const fn typical() -> Self {
        Self {
            records: Seq::new(&TYPICAL_TELEMETRY_RECORDS),
        }
    }
}

/// The values of a typical telemetry record (see [`TelemetryBatch::typical`]).
pub const TYPICAL_TELEMETRY_VALUES: [TelemetryValue<'static>; 6] = [
    TelemetryValue {
        field: "voltage",
        value: Number::Float(12.9),
    },
    TelemetryValue {
        field: "current",
        value: Number::Float(1.25),
    },
    TelemetryValue {
        field: "panel_voltage",
        value: Number::Float(18.4),
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
        field: "fan_rpm",
        value: Number::Int(1200),
    },
];

const TYPICAL_TELEMETRY_RECORDS: [TelemetryRecord<'static>; 2] = [
    TelemetryRecord {
        time: 1_518_543_688,
        values: Seq::new(&TYPICAL_TELEMETRY_VALUES),
    },
    TelemetryRecord {
        time: 1_518_544_588,
        values: Seq::new(&TYPICAL_TELEMETRY_VALUES),
    },
];

/// One telemetry record: a time and the fields measured at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelemetryRecord<'a> {
    /// Unix seconds.
    pub time: u64,
    /// Field values (a CBOR map field → number).
    pub values: Seq<'a, TelemetryValue<'a>>,
}

/// One field value of a telemetry record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelemetryValue<'a> {
    /// Field name: one of [`TELEMETRY_FIELDS`] (sent as its id) or any other name.
    pub field: &'a str,
    /// The value.
    pub value: Number,
}

/// The spec's `telemetry` measurement fields; the index is the field's wire id (protocol §4.2,
/// type 2). Append-only: ids are never reused.
pub const TELEMETRY_FIELDS: [&str; 22] = [
    "ac_current",
    "ac_voltage",
    "active_power",
    "apparent_power",
    "charge_current",
    "current",
    "current_in",
    "current_out",
    "dc_load_current",
    "energy",
    "pack_current",
    "panel_voltage",
    "pulse_count",
    "state_of_charge_percent",
    "state_of_charge_wh",
    "temperature",
    "usb_current",
    "voltage",
    "voltage_cell_1",
    "voltage_cell_2",
    "voltage_cell_3",
    "voltage_cell_4",
];

/// Wire id of a well-known telemetry field.
pub fn telemetry_field_id(name: &str) -> Option<u8> {
    TELEMETRY_FIELDS
        .iter()
        .position(|f| *f == name)
        .map(|i| i as u8)
}

/// Type 3: cells and location, the fields of the `connection` table.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CellReport<'a> {
    /// Key 0: unix seconds (`connection.date`).
    pub time: Option<u64>,
    /// Key 1.
    pub mcc: Option<u32>,
    /// Key 2.
    pub mnc: Option<u32>,
    /// Key 3: serving cell first, at most [`MAX_CELLS`] (`cell_1_*` .. `cell_7_*`).
    pub cells: Seq<'a, Cell>,
    /// Key 4.
    pub frequency: Option<u32>,
    /// Key 5.
    pub timing_advance: Option<u32>,
    /// Key 6: degrees.
    pub latitude: Option<f64>,
    /// Key 7: degrees.
    pub longitude: Option<f64>,
    /// Key 8: metres.
    pub error_radius: Option<u32>,
    /// Key 9: `connection.location_failed_flag`.
    pub location_failed: Option<bool>,
    /// Key 10.
    pub country_code: Option<u32>,
}

/// The `connection` table has columns for seven cells.
pub const MAX_CELLS: usize = 7;

/// One cell: `[lac, cid, signal]` or `[lac, cid, signal, mcc, mnc]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// Location area code.
    pub lac: u32,
    /// Cell id.
    pub cid: u32,
    /// Signal strength (dBm or the modem's scale, as reported).
    pub signal: i32,
    /// Present only when it differs from the report's.
    pub mcc: Option<u32>,
    /// Present only when it differs from the report's.
    pub mnc: Option<u32>,
}

/// Type 4: the unit's event log.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventLog<'a> {
    /// Events, oldest first.
    pub events: Seq<'a, Event<'a>>,
}

/// One `[unix_time, text]` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Unix seconds.
    pub time: u64,
    /// Free text, e.g. `"Charger sn=HQ17048RPII pid=a04c"`.
    pub text: &'a str,
}

/// Type 5: the unit's answer to an MT message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MtReply<'a> {
    /// Key 0: the MT message answered.
    pub correlation_id: CorrelationId,
    /// Key 1.
    pub result: ReplyResult,
    /// Key 2: detail text.
    pub info: Option<&'a str>,
    /// Key 3: DCM balance after applying payment commands.
    pub balance: Option<i64>,
    /// Key 4: DCM expected expiry, unix seconds.
    pub expected_expiry: Option<u64>,
}

/// Outcome code of an [`MtReply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyResult {
    /// 0: applied.
    Ok,
    /// 1: refused by the unit (e.g. a setting it cannot take). Not for a payment command it
    /// already applied: that MT is answered `Ok` (protocol §4.4), or its ack would never arrive.
    Rejected,
    /// 2: the unit does not support this message.
    Unsupported,
    /// 3: the unit found the message invalid.
    Invalid,
    /// 4: the unit is busy; retry later.
    Busy,
    /// A code from a newer unit; kept rather than dead-lettered so the ack still settles.
    Other(u64),
}

impl ReplyResult {
    /// The wire code.
    pub const fn code(self) -> u64 {
        match self {
            Self::Ok => 0,
            Self::Rejected => 1,
            Self::Unsupported => 2,
            Self::Invalid => 3,
            Self::Busy => 4,
            Self::Other(c) => c,
        }
    }

    /// From a wire code.
    pub const fn from_code(code: u64) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::Rejected,
            2 => Self::Unsupported,
            3 => Self::Invalid,
            4 => Self::Busy,
            c => Self::Other(c),
        }
    }

    /// `rtc_message_history.delivery_status` for this outcome.
    pub const fn delivery_status(self) -> &'static str {
        match self {
            Self::Ok => "delivered",
            _ => "failed",
        }
    }
}

/// Type 6: output of a command request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandResponse<'a> {
    /// Key 0: the command request answered.
    pub correlation_id: CorrelationId,
    /// Key 1: the command's output.
    pub output: &'a str,
    /// Key 2: exit status, 0 = success.
    pub status: Option<i64>,
}

/// Type 7: the balance a zero-command removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalBalance<'a> {
    /// Key 0: the payment-commands MT that carried the zero-command.
    pub correlation_id: CorrelationId,
    /// Key 1: the zero-command's transaction id.
    pub transaction_id: &'a str,
    /// Key 2: seconds of credit left when zeroed.
    pub final_balance: i64,
    /// Key 3: total credit ever added.
    pub total_added: i64,
}

/// Type 8: the unit is about to go offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineNotice<'a> {
    /// Key 0.
    pub reason: OfflineReason,
    /// Key 1.
    pub info: Option<&'a str>,
}

/// Unit-reported reasons for going offline (`rtc_connection_history.connection_status_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfflineReason {
    /// 0, or any code this version does not know.
    Unknown,
    /// 1.
    LowBatteryVoltage,
    /// 2.
    SleepMode,
}

impl OfflineReason {
    /// The spec's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::LowBatteryVoltage => "low-battery-voltage",
            Self::SleepMode => "sleep-mode",
        }
    }

    const fn code(self) -> u64 {
        match self {
            Self::Unknown => 0,
            Self::LowBatteryVoltage => 1,
            Self::SleepMode => 2,
        }
    }

    const fn from_code(code: u64) -> Self {
        match code {
            1 => Self::LowBatteryVoltage,
            2 => Self::SleepMode,
            _ => Self::Unknown,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decode one MO message (one frame's payload, or an MO queue envelope's decoded `message`).
///
/// Never panics; any error is meant to become a dead letter with `err.to_string()` as reason.
pub fn decode_mo(input: &[u8]) -> Result<MoMessage<'_>, DecodeError> {
    let d = &mut Decoder::new(input);
    let (top, ty) = cbor::open_message(d, "MO message")?;
    let msg = match ty {
        1 => MoMessage::StatusReport(decode_status(d)?),
        2 => MoMessage::Telemetry(TelemetryBatch {
            records: Seq::decode(d, usize::MAX, "telemetry batch", "records")?,
        }),
        3 => MoMessage::CellReport(decode_cells(d)?),
        4 => MoMessage::EventLog(EventLog {
            events: Seq::decode(d, usize::MAX, "event log", "events")?,
        }),
        5 => MoMessage::Reply(decode_reply(d)?),
        6 => MoMessage::CommandResponse(decode_command_response(d)?),
        7 => MoMessage::FinalBalance(decode_final_balance(d)?),
        8 => MoMessage::OfflineNotice(decode_offline(d)?),
        other => return Err(DecodeError::UnknownMoType(other)),
    };
    cbor::close_message(d, top)?;
    Ok(msg)
}

fn decode_status<'a>(d: &mut Decoder<'a>) -> Result<StatusReport<'a>, DecodeError> {
    let mut s = StatusReport::default();
    cbor::int_map(d, |key, d| {
        match key {
            0 => s.time = Some(cbor::uint(d)?),
            1 => s.enabled = Some(cbor::boolean(d)?),
            2 => s.tamper_enabled = Some(cbor::boolean(d)?),
            3 => s.tamper_triggered = Some(cbor::boolean(d)?),
            4 => s.software_version = Some(cbor::text(d)?),
            5 => s.energy_limit = Some(cbor::float(d)?),
            6 => s.capacity_limit = Some(cbor::float(d)?),
            7 => s.balance = Some(cbor::int(d)?),
            8 => s.expected_expiry = Some(cbor::uint(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(s)
}

fn decode_cells<'a>(d: &mut Decoder<'a>) -> Result<CellReport<'a>, DecodeError> {
    const M: &str = "cell report";
    let mut r = CellReport::default();
    cbor::int_map(d, |key, d| {
        match key {
            0 => r.time = Some(cbor::uint(d)?),
            1 => r.mcc = Some(cbor::uint32(d, M, "mcc")?),
            2 => r.mnc = Some(cbor::uint32(d, M, "mnc")?),
            3 => r.cells = Seq::decode(d, MAX_CELLS, M, "cells")?,
            4 => r.frequency = Some(cbor::uint32(d, M, "frequency")?),
            5 => r.timing_advance = Some(cbor::uint32(d, M, "timing_advance")?),
            6 => r.latitude = Some(cbor::float(d)?),
            7 => r.longitude = Some(cbor::float(d)?),
            8 => r.error_radius = Some(cbor::uint32(d, M, "error_radius")?),
            9 => r.location_failed = Some(cbor::boolean(d)?),
            10 => r.country_code = Some(cbor::uint32(d, M, "country_code")?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(r)
}

fn decode_reply<'a>(d: &mut Decoder<'a>) -> Result<MtReply<'a>, DecodeError> {
    const M: &str = "MT reply";
    let (mut cid, mut result) = (None, None);
    let (mut info, mut balance, mut expected_expiry) = (None, None, None);
    cbor::int_map(d, |key, d| {
        match key {
            0 => cid = Some(cbor::correlation_id(d, M)?),
            1 => result = Some(ReplyResult::from_code(cbor::uint(d)?)),
            2 => info = Some(cbor::text(d)?),
            3 => balance = Some(cbor::int(d)?),
            4 => expected_expiry = Some(cbor::uint(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(MtReply {
        correlation_id: required(cid, M, "correlation_id")?,
        result: required(result, M, "result")?,
        info,
        balance,
        expected_expiry,
    })
}

fn decode_command_response<'a>(d: &mut Decoder<'a>) -> Result<CommandResponse<'a>, DecodeError> {
    const M: &str = "command response";
    let (mut cid, mut output, mut status) = (None, None, None);
    cbor::int_map(d, |key, d| {
        match key {
            0 => cid = Some(cbor::correlation_id(d, M)?),
            1 => output = Some(cbor::text(d)?),
            2 => status = Some(cbor::int(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(CommandResponse {
        correlation_id: required(cid, M, "correlation_id")?,
        output: required(output, M, "output")?,
        status,
    })
}

fn decode_final_balance<'a>(d: &mut Decoder<'a>) -> Result<FinalBalance<'a>, DecodeError> {
    const M: &str = "final balance";
    let (mut cid, mut tx, mut fb, mut total) = (None, None, None, None);
    cbor::int_map(d, |key, d| {
        match key {
            0 => cid = Some(cbor::correlation_id(d, M)?),
            1 => tx = Some(cbor::text(d)?),
            2 => fb = Some(cbor::int(d)?),
            3 => total = Some(cbor::int(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(FinalBalance {
        correlation_id: required(cid, M, "correlation_id")?,
        transaction_id: required(tx, M, "transaction_id")?,
        final_balance: required(fb, M, "final_balance")?,
        total_added: required(total, M, "total_added")?,
    })
}

fn decode_offline<'a>(d: &mut Decoder<'a>) -> Result<OfflineNotice<'a>, DecodeError> {
    let mut n = OfflineNotice {
        reason: OfflineReason::Unknown,
        info: None,
    };
    cbor::int_map(d, |key, d| {
        match key {
            0 => n.reason = OfflineReason::from_code(cbor::uint(d)?),
            1 => n.info = Some(cbor::text(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(n)
}

pub(crate) fn required<T>(
    v: Option<T>,
    message: &'static str,
    field: &'static str,
) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::MissingField { message, field })
}

impl<'a> Item<'a> for Event<'a> {
    const NAME: &'static str = "event";

    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let mut pair = Container::array(d)?;
        if !pair.next(d)? {
            return Err(DecodeError::MissingField {
                message: "event",
                field: "time",
            });
        }
        let time = cbor::uint(d)?;
        if !pair.next(d)? {
            return Err(DecodeError::MissingField {
                message: "event",
                field: "text",
            });
        }
        let text = cbor::text(d)?;
        pair.skip_rest(d)?;
        Ok(Self { time, text })
    }

    fn encode(&self, w: &mut Writer<'_>) {
        w.array(2).uint(self.time).text(self.text);
    }
}

impl<'a> Item<'a> for TelemetryRecord<'a> {
    const NAME: &'static str = "telemetry record";

    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        const M: &str = "telemetry record";
        let mut rec = Container::array(d)?;
        if !rec.next(d)? {
            return Err(DecodeError::MissingField {
                message: M,
                field: "time",
            });
        }
        let time = cbor::uint(d)?;
        if !rec.next(d)? {
            return Err(DecodeError::MissingField {
                message: M,
                field: "values",
            });
        }
        let values = Seq::decode(d, usize::MAX, M, "values")?;
        rec.skip_rest(d)?;
        Ok(Self { time, values })
    }

    fn decode_validated(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let mut rec = Container::array(d)?;
        rec.next(d)?;
        let time = cbor::uint(d)?;
        rec.next(d)?;
        let values = Seq::decode_validated(d)?;
        rec.skip_rest(d)?;
        Ok(Self { time, values })
    }

    fn encode(&self, w: &mut Writer<'_>) {
        w.array(2).uint(self.time);
        self.values.encode(w);
    }
}

impl<'a> Item<'a> for TelemetryValue<'a> {
    const IN_MAP: bool = true;
    const NAME: &'static str = "telemetry value";

    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        let at = d.position();
        // Major type 3 (text): a field name; anything else must be a well-known field id.
        let field = match cbor::peek(d) {
            Some(b) if b >> 5 == 3 => cbor::text(d)?,
            _ => {
                let id = cbor::uint(d)?;
                *usize::try_from(id)
                    .ok()
                    .and_then(|i| TELEMETRY_FIELDS.get(i))
                    .ok_or_else(|| DecodeError::InvalidField {
                        message: "telemetry record",
                        field: "field id",
                        at,
                        reason: format!("unknown telemetry field id {id}"),
                    })?
            }
        };
        Ok(Self {
            field,
            value: cbor::number(d)?,
        })
    }

    fn encode(&self, w: &mut Writer<'_>) {
        match telemetry_field_id(self.field) {
            Some(id) => w.uint(id.into()),
            None => w.text(self.field),
        };
        w.number(self.value);
    }
}

impl<'a> Item<'a> for Cell {
    const NAME: &'static str = "cell";

    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        const M: &str = "cell";
        let mut c = Container::array(d)?;
        let mut cell = Self::default();
        for field in ["lac", "cid", "signal"] {
            if !c.next(d)? {
                return Err(DecodeError::MissingField { message: M, field });
            }
            match field {
                "lac" => cell.lac = cbor::uint32(d, M, field)?,
                "cid" => cell.cid = cbor::uint32(d, M, field)?,
                _ => cell.signal = cbor::int32(d, M, field)?,
            }
        }
        if c.next(d)? {
            cell.mcc = Some(cbor::uint32(d, M, "mcc")?);
            if !c.next(d)? {
                return Err(DecodeError::MissingField {
                    message: M,
                    field: "mnc",
                });
            }
            cell.mnc = Some(cbor::uint32(d, M, "mnc")?);
        }
        c.skip_rest(d)?;
        Ok(cell)
    }

    fn encode(&self, w: &mut Writer<'_>) {
        match (self.mcc, self.mnc) {
            (Some(mcc), Some(mnc)) => {
                w.array(5)
                    .uint(self.lac.into())
                    .uint(self.cid.into())
                    .int(self.signal.into());
                w.uint(mcc.into()).uint(mnc.into());
            }
            // A lone mcc or mnc cannot be expressed positionally; the pair is all or nothing.
            _ => {
                w.array(3)
                    .uint(self.lac.into())
                    .uint(self.cid.into())
                    .int(self.signal.into());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Append the CBOR encoding of `msg` to `out`.
pub fn encode_mo(msg: &MoMessage<'_>, out: &mut Vec<u8>) {
    let w = &mut Writer::new(out);
    w.message(msg.message_type() as u64);
    match msg {
        MoMessage::StatusReport(s) => {
            w.map(count_some(&[
                s.time.is_some(),
                s.enabled.is_some(),
                s.tamper_enabled.is_some(),
                s.tamper_triggered.is_some(),
                s.software_version.is_some(),
                s.energy_limit.is_some(),
                s.capacity_limit.is_some(),
                s.balance.is_some(),
                s.expected_expiry.is_some(),
            ]));
            if let Some(v) = s.time {
                w.uint(0).uint(v);
            }
            if let Some(v) = s.enabled {
                w.uint(1).bool(v);
            }
            if let Some(v) = s.tamper_enabled {
                w.uint(2).bool(v);
            }
            if let Some(v) = s.tamper_triggered {
                w.uint(3).bool(v);
            }
            if let Some(v) = s.software_version {
                w.uint(4).text(v);
            }
            if let Some(v) = s.energy_limit {
                w.uint(5).float(v);
            }
            if let Some(v) = s.capacity_limit {
                w.uint(6).float(v);
            }
            if let Some(v) = s.balance {
                w.uint(7).int(v);
            }
            if let Some(v) = s.expected_expiry {
                w.uint(8).uint(v);
            }
        }
        MoMessage::Telemetry(t) => t.records.encode(w),
        MoMessage::CellReport(r) => {
            w.map(count_some(&[
                r.time.is_some(),
                r.mcc.is_some(),
                r.mnc.is_some(),
                true,
                r.frequency.is_some(),
                r.timing_advance.is_some(),
                r.latitude.is_some(),
                r.longitude.is_some(),
                r.error_radius.is_some(),
                r.location_failed.is_some(),
                r.country_code.is_some(),
            ]));
            if let Some(v) = r.time {
                w.uint(0).uint(v);
            }
            if let Some(v) = r.mcc {
                w.uint(1).uint(v.into());
            }
            if let Some(v) = r.mnc {
                w.uint(2).uint(v.into());
            }
            w.uint(3);
            r.cells.encode(w);
            if let Some(v) = r.frequency {
                w.uint(4).uint(v.into());
            }
            if let Some(v) = r.timing_advance {
                w.uint(5).uint(v.into());
            }
            if let Some(v) = r.latitude {
                w.uint(6).float(v);
            }
            if let Some(v) = r.longitude {
                w.uint(7).float(v);
            }
            if let Some(v) = r.error_radius {
                w.uint(8).uint(v.into());
            }
            if let Some(v) = r.location_failed {
                w.uint(9).bool(v);
            }
            if let Some(v) = r.country_code {
                w.uint(10).uint(v.into());
            }
        }
        MoMessage::EventLog(l) => l.events.encode(w),
        MoMessage::Reply(r) => {
            w.map(
                2 + count_some(&[
                    r.info.is_some(),
                    r.balance.is_some(),
                    r.expected_expiry.is_some(),
                ]),
            );
            w.uint(0).bytes(&r.correlation_id.0);
            w.uint(1).uint(r.result.code());
            if let Some(v) = r.info {
                w.uint(2).text(v);
            }
            if let Some(v) = r.balance {
                w.uint(3).int(v);
            }
            if let Some(v) = r.expected_expiry {
                w.uint(4).uint(v);
            }
        }
        MoMessage::CommandResponse(r) => {
            w.map(2 + count_some(&[r.status.is_some()]));
            w.uint(0).bytes(&r.correlation_id.0);
            w.uint(1).text(r.output);
            if let Some(v) = r.status {
                w.uint(2).int(v);
            }
        }
        MoMessage::FinalBalance(f) => {
            w.map(4);
            w.uint(0).bytes(&f.correlation_id.0);
            w.uint(1).text(f.transaction_id);
            w.uint(2).int(f.final_balance);
            w.uint(3).int(f.total_added);
        }
        MoMessage::OfflineNotice(n) => {
            w.map(1 + count_some(&[n.info.is_some()]));
            w.uint(0).uint(n.reason.code());
            if let Some(v) = n.info {
                w.uint(1).text(v);
            }
        }
    }
}

/// Encode `msg` into a new `Vec`.
pub fn mo_to_vec(msg: &MoMessage<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_mo(msg, &mut out);
    out
}
