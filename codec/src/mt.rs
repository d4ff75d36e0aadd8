//! MT (mobile-terminated, server → unit) messages: `[type, body]` CBOR, protocol §4.3.
//!
//! Every MT body carries a correlation id at key 0, echoed by the unit's [`MtReply`]. The gateway
//! encodes these; the unit simulator (and the fuzz targets) decode them.
//!
//! [`MtReply`]: crate::mo::MtReply

use minicbor::Decoder;

use crate::cbor::{self, count_some, Container, Writer};
use crate::mo::required;
use crate::seq::{Item, Seq};
use crate::{CorrelationId, DecodeError};

/// MT message type numbers (protocol §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MtType {
    /// 16: desired enable/tamper state, limits, parameters.
    StatusUpdate = 16,
    /// 17: ask for a status report, telemetry and a cell report now.
    Sync = 17,
    /// 18: a debug/diagnostic (AT) command.
    CommandRequest = 18,
    /// 19: DCM payment commands, including the zero-command.
    PaymentCommands = 19,
    /// 20: install another software version.
    SoftwareUpdate = 20,
}

impl MtType {
    /// Short name for logs, metrics labels and `rtc_message_history`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StatusUpdate => "status_update",
            Self::Sync => "sync",
            Self::CommandRequest => "command_request",
            Self::PaymentCommands => "payment_commands",
            Self::SoftwareUpdate => "software_update",
        }
    }
}

/// Any MT message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MtMessage<'a> {
    /// Type 16.
    StatusUpdate(StatusUpdate<'a>),
    /// Type 17.
    Sync(SyncRequest),
    /// Type 18.
    CommandRequest(CommandRequest<'a>),
    /// Type 19.
    PaymentCommands(PaymentCommands<'a>),
    /// Type 20.
    SoftwareUpdate(SoftwareUpdate<'a>),
}

impl MtMessage<'_> {
    /// The message's type number.
    pub const fn message_type(&self) -> MtType {
        match self {
            Self::StatusUpdate(_) => MtType::StatusUpdate,
            Self::Sync(_) => MtType::Sync,
            Self::CommandRequest(_) => MtType::CommandRequest,
            Self::PaymentCommands(_) => MtType::PaymentCommands,
            Self::SoftwareUpdate(_) => MtType::SoftwareUpdate,
        }
    }

    /// The id the unit will echo in its reply.
    pub const fn correlation_id(&self) -> CorrelationId {
        match self {
            Self::StatusUpdate(m) => m.correlation_id,
            Self::Sync(m) => m.correlation_id,
            Self::CommandRequest(m) => m.correlation_id,
            Self::PaymentCommands(m) => m.correlation_id,
            Self::SoftwareUpdate(m) => m.correlation_id,
        }
    }
}

/// Type 16: the settings the unit should have. Absent fields mean "leave as is".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StatusUpdate<'a> {
    /// Key 0.
    pub correlation_id: CorrelationId,
    /// Key 1: `product.desired_enable_flag`.
    pub enabled: Option<bool>,
    /// Key 2: tamper switch armed.
    pub tamper_enabled: Option<bool>,
    /// Key 3: energy limit (Wh).
    pub energy_limit: Option<f64>,
    /// Key 4: capacity limit.
    pub capacity_limit: Option<f64>,
    /// Key 5: active `product_parameter` values by parameter name.
    pub parameters: Option<Seq<'a, Parameter<'a>>>,
    /// Key 6: server clock, unix seconds.
    pub server_time: Option<u64>,
}

/// One parameter of a status update (an entry of a CBOR map text → text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter<'a> {
    /// Parameter type name.
    pub name: &'a str,
    /// Value, as the `product_parameter.value` string.
    pub value: &'a str,
}

/// Type 17.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncRequest {
    /// Key 0.
    pub correlation_id: CorrelationId,
}

/// Type 18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRequest<'a> {
    /// Key 0.
    pub correlation_id: CorrelationId,
    /// Key 1: e.g. `"atc 60 AT+CPOL=?;+COPS=?"`.
    pub command: &'a str,
}

/// Type 19: payment commands to apply in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentCommands<'a> {
    /// Key 0.
    pub correlation_id: CorrelationId,
    /// Key 1.
    pub commands: Seq<'a, PaymentCommand<'a>>,
}

/// One `[category, value, transaction_id]` payment command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentCommand<'a> {
    /// What the command does; constrains the sign of `value`.
    pub category: PaymentCategory,
    /// Seconds of credit: > 0 for payment, < 0 for bad-payment, 0 for zero-command.
    pub value: i64,
    /// `payment_command.transaction_id`; the unit ignores duplicates.
    pub transaction_id: &'a str,
}

/// `payment_command.category`, minus `force-reset`, which is never sent to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentCategory {
    /// 0: add credit.
    Payment,
    /// 1: remove credit.
    BadPayment,
    /// 2: zero the balance and report the final balance.
    ZeroCommand,
}

impl PaymentCategory {
    /// The spec's spelling (`payment`, `bad-payment`, `zero-command`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::BadPayment => "bad-payment",
            Self::ZeroCommand => "zero-command",
        }
    }

    /// From the spec's spelling.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "payment" => Some(Self::Payment),
            "bad-payment" => Some(Self::BadPayment),
            "zero-command" => Some(Self::ZeroCommand),
            _ => None,
        }
    }

    const fn code(self) -> u64 {
        match self {
            Self::Payment => 0,
            Self::BadPayment => 1,
            Self::ZeroCommand => 2,
        }
    }

    /// Does `value` have the sign this category requires (DCM rules)?
    pub const fn allows(self, value: i64) -> bool {
        match self {
            Self::Payment => value > 0,
            Self::BadPayment => value < 0,
            Self::ZeroCommand => value == 0,
        }
    }
}

/// Type 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftwareUpdate<'a> {
    /// Key 0.
    pub correlation_id: CorrelationId,
    /// Key 1: software version name.
    pub version: &'a str,
    /// Key 2: where to download it.
    pub url: Option<&'a str>,
    /// Key 3: SHA-256 of the image.
    pub sha256: Option<[u8; 32]>,
    /// Key 4: image size in bytes.
    pub size: Option<u64>,
}

/// Decode one MT message.
pub fn decode_mt(input: &[u8]) -> Result<MtMessage<'_>, DecodeError> {
    let d = &mut Decoder::new(input);
    let (top, ty) = cbor::open_message(d, "MT message")?;
    let msg = match ty {
        16 => MtMessage::StatusUpdate(decode_status_update(d)?),
        17 => {
            const M: &str = "sync request";
            let mut cid = None;
            cbor::int_map(d, |key, d| {
                if key != 0 {
                    return Ok(false);
                }
                cid = Some(cbor::correlation_id(d, M)?);
                Ok(true)
            })?;
            MtMessage::Sync(SyncRequest {
                correlation_id: required(cid, M, "correlation_id")?,
            })
        }
        18 => {
            const M: &str = "command request";
            let (mut cid, mut command) = (None, None);
            cbor::int_map(d, |key, d| {
                match key {
                    0 => cid = Some(cbor::correlation_id(d, M)?),
                    1 => command = Some(cbor::text(d)?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            MtMessage::CommandRequest(CommandRequest {
                correlation_id: required(cid, M, "correlation_id")?,
                command: required(command, M, "command")?,
            })
        }
        19 => {
            const M: &str = "payment commands";
            let (mut cid, mut commands) = (None, None);
            cbor::int_map(d, |key, d| {
                match key {
                    0 => cid = Some(cbor::correlation_id(d, M)?),
                    1 => commands = Some(Seq::decode(d, usize::MAX, M, "commands")?),
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
            MtMessage::PaymentCommands(PaymentCommands {
                correlation_id: required(cid, M, "correlation_id")?,
                commands: required(commands, M, "commands")?,
            })
        }
        20 => MtMessage::SoftwareUpdate(decode_software_update(d)?),
        other => return Err(DecodeError::UnknownMtType(other)),
    };
    cbor::close_message(d, top)?;
    Ok(msg)
}

fn decode_status_update<'a>(d: &mut Decoder<'a>) -> Result<StatusUpdate<'a>, DecodeError> {
    const M: &str = "status update";
    let mut cid = None;
    let mut u = StatusUpdate::default();
    cbor::int_map(d, |key, d| {
        match key {
            0 => cid = Some(cbor::correlation_id(d, M)?),
            1 => u.enabled = Some(cbor::boolean(d)?),
            2 => u.tamper_enabled = Some(cbor::boolean(d)?),
            3 => u.energy_limit = Some(cbor::float(d)?),
            4 => u.capacity_limit = Some(cbor::float(d)?),
            5 => u.parameters = Some(Seq::decode(d, usize::MAX, M, "parameters")?),
            6 => u.server_time = Some(cbor::uint(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    u.correlation_id = required(cid, M, "correlation_id")?;
    Ok(u)
}

fn decode_software_update<'a>(d: &mut Decoder<'a>) -> Result<SoftwareUpdate<'a>, DecodeError> {
    const M: &str = "software update";
    let (mut cid, mut version, mut url, mut sha256, mut size) = (None, None, None, None, None);
    cbor::int_map(d, |key, d| {
        match key {
            0 => cid = Some(cbor::correlation_id(d, M)?),
            1 => version = Some(cbor::text(d)?),
            2 => url = Some(cbor::text(d)?),
            3 => {
                let at = d.position();
                let b = cbor::bytes(d)?;
                sha256 = Some(
                    <[u8; 32]>::try_from(b).map_err(|_| DecodeError::InvalidField {
                        message: M,
                        field: "sha256",
                        at,
                        reason: format!("expected 32 bytes, found {}", b.len()),
                    })?,
                );
            }
            4 => size = Some(cbor::uint(d)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(SoftwareUpdate {
        correlation_id: required(cid, M, "correlation_id")?,
        version: required(version, M, "version")?,
        url,
        sha256,
        size,
    })
}

impl<'a> Item<'a> for Parameter<'a> {
    const IN_MAP: bool = true;
    const NAME: &'static str = "parameter";

    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: cbor::text(d)?,
            value: cbor::text(d)?,
        })
    }

    fn encode(&self, w: &mut Writer<'_>) {
        w.text(self.name).text(self.value);
    }
}

impl<'a> Item<'a> for PaymentCommand<'a> {
    const NAME: &'static str = "payment command";

    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        const M: &str = "payment command";
        let mut c = Container::array(d)?;
        if !c.next(d)? {
            return Err(DecodeError::MissingField {
                message: M,
                field: "category",
            });
        }
        let at = d.position();
        let category = match cbor::uint(d)? {
            0 => PaymentCategory::Payment,
            1 => PaymentCategory::BadPayment,
            2 => PaymentCategory::ZeroCommand,
            other => {
                return Err(DecodeError::InvalidField {
                    message: M,
                    field: "category",
                    at,
                    reason: format!("unknown category {other}"),
                })
            }
        };
        if !c.next(d)? {
            return Err(DecodeError::MissingField {
                message: M,
                field: "value",
            });
        }
        let at = d.position();
        let value = cbor::int(d)?;
        if !category.allows(value) {
            return Err(DecodeError::InvalidField {
                message: M,
                field: "value",
                at,
                reason: format!("{value} is not allowed for category {}", category.as_str()),
            });
        }
        if !c.next(d)? {
            return Err(DecodeError::MissingField {
                message: M,
                field: "transaction_id",
            });
        }
        let transaction_id = cbor::text(d)?;
        c.skip_rest(d)?;
        Ok(Self {
            category,
            value,
            transaction_id,
        })
    }

    fn encode(&self, w: &mut Writer<'_>) {
        w.array(3)
            .uint(self.category.code())
            .int(self.value)
            .text(self.transaction_id);
    }
}

/// Append the CBOR encoding of `msg` to `out`.
pub fn encode_mt(msg: &MtMessage<'_>, out: &mut Vec<u8>) {
    let w = &mut Writer::new(out);
    w.message(msg.message_type() as u64);
    match msg {
        MtMessage::StatusUpdate(u) => {
            w.map(
                1 + count_some(&[
                    u.enabled.is_some(),
                    u.tamper_enabled.is_some(),
                    u.energy_limit.is_some(),
                    u.capacity_limit.is_some(),
                    u.parameters.is_some(),
                    u.server_time.is_some(),
                ]),
            );
            w.uint(0).bytes(&u.correlation_id.0);
            if let Some(v) = u.enabled {
                w.uint(1).bool(v);
            }
            if let Some(v) = u.tamper_enabled {
                w.uint(2).bool(v);
            }
            if let Some(v) = u.energy_limit {
                w.uint(3).float(v);
            }
            if let Some(v) = u.capacity_limit {
                w.uint(4).float(v);
            }
            if let Some(p) = &u.parameters {
                w.uint(5);
                p.encode(w);
            }
            if let Some(v) = u.server_time {
                w.uint(6).uint(v);
            }
        }
        MtMessage::Sync(s) => {
            w.map(1).uint(0).bytes(&s.correlation_id.0);
        }
        MtMessage::CommandRequest(c) => {
            w.map(2)
                .uint(0)
                .bytes(&c.correlation_id.0)
                .uint(1)
                .text(c.command);
        }
        MtMessage::PaymentCommands(p) => {
            w.map(2).uint(0).bytes(&p.correlation_id.0).uint(1);
            p.commands.encode(w);
        }
        MtMessage::SoftwareUpdate(s) => {
            w.map(2 + count_some(&[s.url.is_some(), s.sha256.is_some(), s.size.is_some()]));
            w.uint(0).bytes(&s.correlation_id.0).uint(1).text(s.version);
            if let Some(v) = s.url {
                w.uint(2).text(v);
            }
            if let Some(v) = &s.sha256 {
                w.uint(3).bytes(v);
            }
            if let Some(v) = s.size {
                w.uint(4).uint(v);
            }
        }
    }
}

/// Encode `msg` into a new `Vec`.
pub fn mt_to_vec(msg: &MtMessage<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_mt(msg, &mut out);
    out
}
