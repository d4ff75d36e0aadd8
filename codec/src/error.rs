//! The one error type of the codec.
//!
//! Every decoder returns [`DecodeError`]; its `Display` text is what goes into a dead letter's
//! `reason`, so each variant names the problem and, for CBOR, the byte offset where it was found.

/// Why some bytes could not be turned into a message (or a frame, envelope or handshake step).
///
/// Errors are built only on the failure path, so variants may own a `String`; the success path
/// of the CBOR decoders allocates nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of a CBOR item: a cut-off frame or a truncated payload.
    /// `at` is the offset of the item that could not be completed.
    #[error("truncated CBOR at byte {at}")]
    Truncated {
        /// Byte offset of the incomplete item.
        at: usize,
    },

    /// A CBOR item has a type the protocol does not allow at that place (e.g. a text string
    /// where the message type number should be).
    #[error("expected {expected} at byte {at}, found {found}")]
    UnexpectedType {
        /// Byte offset of the offending item.
        at: usize,
        /// What the protocol wants there.
        expected: &'static str,
        /// The CBOR type found instead.
        found: String,
    },

    /// The bytes are not well-formed CBOR, or use a form the protocol rejects (reserved header
    /// values, invalid UTF-8, chunked strings, integers out of range).
    #[error("invalid CBOR at byte {at}: {detail}")]
    InvalidCbor {
        /// Byte offset of the offending item.
        at: usize,
        /// What the CBOR decoder objected to.
        detail: String,
    },

    /// A complete message was decoded but more bytes follow it. A frame holds exactly one
    /// message, so this means corruption or a framing bug on the sender.
    #[error("trailing bytes after the message at byte {at}")]
    TrailingBytes {
        /// Offset of the first byte after the message.
        at: usize,
    },

    /// The first element of an MO message is a type number this version does not define.
    #[error("unknown MO message type {0}")]
    UnknownMoType(u64),

    /// The first element of an MT message is a type number this version does not define.
    #[error("unknown MT message type {0}")]
    UnknownMtType(u64),

    /// The first element of a handshake message is a type number this version does not define.
    #[error("unknown handshake message type {0}")]
    UnknownHandshakeType(u64),

    /// A field that the message type requires is absent.
    #[error("{message} is missing required field {field}")]
    MissingField {
        /// The message, e.g. `"MT reply"`.
        message: &'static str,
        /// The field, e.g. `"correlation_id"`.
        field: &'static str,
    },

    /// A field is present and well-typed but its value breaks a protocol rule (wrong length,
    /// too many cells, a payment value whose sign does not fit its category, ...).
    #[error("invalid {field} in {message} at byte {at}: {reason}")]
    InvalidField {
        /// The message being decoded.
        message: &'static str,
        /// The field at fault.
        field: &'static str,
        /// Byte offset of the field's value.
        at: usize,
        /// The rule that was broken.
        reason: String,
    },

    /// CBOR nests deeper than the renderer allows; refusing keeps recursion bounded so hostile
    /// input cannot overflow the stack.
    #[error("CBOR nested deeper than {max} levels at byte {at}")]
    TooDeep {
        /// Byte offset of the item that went too deep.
        at: usize,
        /// The nesting limit.
        max: usize,
    },

    /// A frame header announces more bytes than the receiver accepts. The connection should be
    /// closed: nothing after this point can be trusted to be aligned on a frame.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced (or, when encoding, actual) payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A JSON body or envelope (MO queue envelope, dead letter, legacy HTTP body) is invalid.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// A MessagePack bus envelope is invalid.
    #[error("invalid MessagePack bus envelope: {0}")]
    MsgPack(#[from] rmp_serde::decode::Error),

    /// The `message` of an MO queue envelope (or an `Authorization` header) is not valid base64.
    #[error("invalid base64: {0}")]
    Base64(#[from] base64::DecodeError),

    /// A correlation id is not 32 hex digits (text) or 16 bytes (binary).
    #[error("invalid correlation id {0:?}: expected 32 hex digits or 16 bytes")]
    InvalidCorrelationId(String),

    /// An ident is not of the form `<network>/<ip address>`, e.g. `Aeris/10.112.89.62`.
    #[error("invalid ident {0:?}: expected <network>/<ip address>")]
    InvalidIdent(String),

    /// A timestamp is not `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
    #[error("invalid timestamp {0:?}: expected YYYY-MM-DDTHH:MM:SS.ffffff")]
    InvalidTimestamp(String),

    /// The handshake proof is not HMAC-SHA256 of the challenge under the unit's device key.
    #[error("handshake proof does not match the unit's device key")]
    BadProof,

    /// A legacy HTTP `Authorization` header is not `Basic base64(imei:device_key)`.
    #[error("invalid Authorization header: {0}")]
    InvalidAuthorization(&'static str),

    /// The transport under the `tokio_util` framing adapter failed. The pure decoders never
    /// produce this; it exists because `tokio_util::codec::Decoder` requires `From<io::Error>`.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}
