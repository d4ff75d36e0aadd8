//! Small CBOR helpers shared by the message modules: typed reads that turn minicbor errors into
//! [`DecodeError`]s naming the byte offset, a definite/indefinite container walker, the
//! integer-keyed map loop, and a tiny infallible writer.
//!
//! The writer is hand-rolled rather than `minicbor::Encoder` because writing into a `Vec` cannot
//! fail, and the encoder's generic error type would force every `encode_*` function to return a
//! `Result` that is never `Err`.

use minicbor::data::Type;
use minicbor::Decoder;

use crate::{CorrelationId, DecodeError};

/// Map a minicbor error for the item that started at `at` into our error.
pub(crate) fn cbor_err(
    e: &minicbor::decode::Error,
    d: &Decoder<'_>,
    at: usize,
    expected: &'static str,
) -> DecodeError {
    if e.is_end_of_input() {
        DecodeError::Truncated { at }
    } else if e.is_type_mismatch() {
        DecodeError::UnexpectedType {
            at,
            expected,
            found: type_at(d.input(), at),
        }
    } else {
        DecodeError::InvalidCbor {
            at,
            detail: e.to_string(),
        }
    }
}

/// Describe the CBOR type at `at` (for error messages only).
fn type_at(input: &[u8], at: usize) -> String {
    let mut t = Decoder::new(input);
    t.set_position(at);
    match t.datatype() {
        Ok(ty) => ty.to_string(),
        Err(_) => "end of input".to_owned(),
    }
}

/// Peek the type of the next item; end of input is a truncation error.
pub(crate) fn datatype(d: &Decoder<'_>) -> Result<Type, DecodeError> {
    let at = d.position();
    d.datatype().map_err(|e| cbor_err(&e, d, at, "a CBOR item"))
}

macro_rules! typed_read {
    ($(#[$m:meta])* $vis:vis $name:ident, $ret:ty, $method:ident, $expected:literal) => {
        $(#[$m])*
        #[inline(never)]
        $vis fn $name<'a>(d: &mut Decoder<'a>) -> Result<$ret, DecodeError> {
            let at = d.position();
            d.$method().map_err(|e| cbor_err(&e, d, at, $expected))
        }
    };
}

// The general (slow) paths: minicbor's decoder handles every encoding and reports errors.
// minicbor marks nothing `#[inline]`, so each call is out of line and returns a large
// `Result`; the hot paths below first try the shapes typical messages use (small integers in
// the initial byte, short strings, booleans, floats), decided from one peeked byte and inlined,
// and fall back to these for everything else, errors included.
typed_read!(uint_slow, u64, u64, "an unsigned integer");
typed_read!(int_slow, i64, i64, "an integer");
typed_read!(boolean_slow, bool, bool, "a bool");
typed_read!(text_slow, &'a str, str, "a text string");
typed_read!(
    /// A definite-length byte string, borrowed from the input (rare: correlation ids, nonces).
    pub(crate) bytes, &'a [u8], bytes, "a byte string"
);

/// The next byte, if any (the initial byte of the next item: major type in the top 3 bits).
#[inline]
pub(crate) fn peek(d: &Decoder<'_>) -> Option<u8> {
    d.input().get(d.position()).copied()
}

/// `n` bytes after the initial byte, if present.
#[inline]
fn after_initial<'a, const N: usize>(d: &Decoder<'a>) -> Option<&'a [u8; N]> {
    d.input().get(d.position() + 1..)?.first_chunk::<N>()
}

/// An unsigned integer.
#[inline]
pub(crate) fn uint(d: &mut Decoder<'_>) -> Result<u64, DecodeError> {
    match peek(d) {
        Some(b @ 0x00..=0x17) => {
            d.set_position(d.position() + 1);
            Ok(u64::from(b))
        }
        Some(0x18) => match after_initial::<1>(d) {
            Some(&[v]) => {
                d.set_position(d.position() + 2);
                Ok(u64::from(v))
            }
            None => uint_slow(d),
        },
        Some(0x1a) => match after_initial::<4>(d) {
            Some(v) => {
                let v = u32::from_be_bytes(*v);
                d.set_position(d.position() + 5);
                Ok(u64::from(v))
            }
            None => uint_slow(d),
        },
        _ => uint_slow(d),
    }
}

/// A signed or unsigned integer that fits an `i64`.
#[inline]
pub(crate) fn int(d: &mut Decoder<'_>) -> Result<i64, DecodeError> {
    match peek(d) {
        Some(0x00..=0x17 | 0x18 | 0x1a) => uint(d).map(|v| v as i64), // < 2^32: always fits
        Some(b @ 0x20..=0x37) => {
            d.set_position(d.position() + 1);
            Ok(-1 - i64::from(b - 0x20))
        }
        _ => int_slow(d),
    }
}

/// `true` or `false`.
#[inline]
pub(crate) fn boolean(d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
    match peek(d) {
        Some(b @ (0xf4 | 0xf5)) => {
            d.set_position(d.position() + 1);
            Ok(b == 0xf5)
        }
        _ => boolean_slow(d),
    }
}

/// A definite-length text string, borrowed from the input.
#[inline]
pub(crate) fn text<'a>(d: &mut Decoder<'a>) -> Result<&'a str, DecodeError> {
    if let Some(b @ 0x60..=0x77) = peek(d) {
        let start = d.position() + 1;
        let end = start + usize::from(b - 0x60);
        if let Some(Ok(s)) = d.input().get(start..end).map(core::str::from_utf8) {
            d.set_position(end);
            return Ok(s);
        }
    }
    text_slow(d)
}
/// An unsigned integer that must fit a `u32` (cell ids, mcc, versions, ...).
pub(crate) fn uint32(
    d: &mut Decoder<'_>,
    message: &'static str,
    field: &'static str,
) -> Result<u32, DecodeError> {
    let at = d.position();
    let v = uint(d)?;
    u32::try_from(v).map_err(|_| DecodeError::InvalidField {
        message,
        field,
        at,
        reason: format!("{v} does not fit 32 bits"),
    })
}

/// A signed integer that must fit an `i32` (signal strength).
pub(crate) fn int32(
    d: &mut Decoder<'_>,
    message: &'static str,
    field: &'static str,
) -> Result<i32, DecodeError> {
    let at = d.position();
    let v = int(d)?;
    i32::try_from(v).map_err(|_| DecodeError::InvalidField {
        message,
        field,
        at,
        reason: format!("{v} does not fit 32 bits"),
    })
}

/// A number: any integer or float, as the protocol's "number" (§4.1).
#[inline]
pub(crate) fn number(d: &mut Decoder<'_>) -> Result<crate::Number, DecodeError> {
    match peek(d) {
        Some(0x00..=0x1b | 0x20..=0x3b) => int(d).map(crate::Number::Int),
        Some(0xfa) => match after_initial::<4>(d) {
            Some(v) => {
                let v = f32::from_be_bytes(*v);
                d.set_position(d.position() + 5);
                Ok(crate::Number::Float(f64::from(v)))
            }
            None => number_slow(d),
        },
        Some(0xfb) => match after_initial::<8>(d) {
            Some(v) => {
                let v = f64::from_be_bytes(*v);
                d.set_position(d.position() + 9);
                Ok(crate::Number::Float(v))
            }
            None => number_slow(d),
        },
        _ => number_slow(d),
    }
}

#[inline(never)]
fn number_slow(d: &mut Decoder<'_>) -> Result<crate::Number, DecodeError> {
    let at = d.position();
    match datatype(d)? {
        Type::F16 | Type::F32 | Type::F64 => d
            .f64()
            .map(crate::Number::Float)
            .map_err(|e| cbor_err(&e, d, at, "a number")),
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => d
            .i64()
            .map(crate::Number::Int)
            .map_err(|e| cbor_err(&e, d, at, "a number")),
        other => Err(DecodeError::UnexpectedType {
            at,
            expected: "a number",
            found: other.to_string(),
        }),
    }
}

/// A number read as `f64` (limits, coordinates).
#[inline]
pub(crate) fn float(d: &mut Decoder<'_>) -> Result<f64, DecodeError> {
    number(d).map(crate::Number::as_f64)
}

/// A 16-byte correlation id.
pub(crate) fn correlation_id(
    d: &mut Decoder<'_>,
    message: &'static str,
) -> Result<CorrelationId, DecodeError> {
    let at = d.position();
    let b = bytes(d)?;
    <[u8; 16]>::try_from(b)
        .map(CorrelationId)
        .map_err(|_| DecodeError::InvalidField {
            message,
            field: "correlation_id",
            at,
            reason: format!("expected 16 bytes, found {}", b.len()),
        })
}

/// Skip one item of any shape (unknown map values, extra top-level elements).
///
/// Scalars and short strings are stepped over from their initial byte. Everything else goes to
/// minicbor's `skip`, which is iterative, so deep nesting cannot overflow the stack; it allocates
/// only when skipping indefinite containers nested inside other containers, which no typical
/// message has.
#[inline]
pub(crate) fn skip(d: &mut Decoder<'_>) -> Result<(), DecodeError> {
    if let Some(b) = peek(d) {
        let len = match b {
            0x00..=0x17 | 0x20..=0x37 | 0xf4..=0xf7 => Some(1),
            0x18 | 0x38 => Some(2),
            0x19 | 0x39 | 0xf9 => Some(3),
            0x1a | 0x3a | 0xfa => Some(5),
            0x1b | 0x3b | 0xfb => Some(9),
            0x40..=0x57 => Some(1 + usize::from(b - 0x40)),
            0x60..=0x77 => Some(1 + usize::from(b - 0x60)),
            _ => None,
        };
        if let Some(len) = len {
            let end = d.position() + len;
            if end <= d.input().len() {
                d.set_position(end);
                return Ok(());
            }
        }
    }
    skip_slow(d)
}

#[inline(never)]
fn skip_slow(d: &mut Decoder<'_>) -> Result<(), DecodeError> {
    let at = d.position();
    d.skip().map_err(|e| cbor_err(&e, d, at, "a CBOR item"))
}

/// Walks the elements of an array or the entries of a map, definite or indefinite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Container {
    /// `Some(n)`: n items left; `None`: indefinite, ends at a break byte.
    remaining: Option<u64>,
}

impl Container {
    /// Read an array header.
    #[inline]
    pub(crate) fn array(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if let Some(b @ (0x80..=0x97 | 0x9f)) = peek(d) {
            d.set_position(d.position() + 1);
            let remaining = (b != 0x9f).then_some(u64::from(b - 0x80));
            return Ok(Self { remaining });
        }
        let at = d.position();
        let remaining = d.array().map_err(|e| cbor_err(&e, d, at, "an array"))?;
        Ok(Self { remaining })
    }

    /// Read a map header; each `next` then stands for one key/value pair.
    #[inline]
    pub(crate) fn map(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if let Some(b @ (0xa0..=0xb7 | 0xbf)) = peek(d) {
            d.set_position(d.position() + 1);
            let remaining = (b != 0xbf).then_some(u64::from(b - 0xa0));
            return Ok(Self { remaining });
        }
        let at = d.position();
        let remaining = d.map().map_err(|e| cbor_err(&e, d, at, "a map"))?;
        Ok(Self { remaining })
    }

    /// Is there another item? Consumes the break byte of an indefinite container.
    #[inline]
    pub(crate) fn next(&mut self, d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
        match &mut self.remaining {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if peek(d) == Some(0xff) {
                    // The break is a single 0xff byte.
                    d.set_position(d.position() + 1);
                    Ok(false)
                } else if peek(d).is_none() {
                    Err(DecodeError::Truncated { at: d.position() })
                } else {
                    Ok(true)
                }
            }
        }
    }

    /// Skip whatever items are left (e.g. elements appended by a later protocol version).
    pub(crate) fn skip_rest(&mut self, d: &mut Decoder<'_>) -> Result<(), DecodeError> {
        while self.next(d)? {
            skip(d)?;
        }
        Ok(())
    }
}

/// Decode a body map with unsigned integer keys. `field` is called with each key and must
/// consume the value and return `true`, or return `false` without consuming for an unknown key,
/// which is then skipped (forward compatibility, §4.1).
pub(crate) fn int_map<'a>(
    d: &mut Decoder<'a>,
    mut field: impl FnMut(u64, &mut Decoder<'a>) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut map = Container::map(d)?;
    while map.next(d)? {
        let key = uint(d)?;
        if !field(key, d)? {
            skip(d)?;
        }
    }
    Ok(())
}

/// Read the `[type, ` of a top-level message; returns the container (positioned at the body)
/// and the type number.
pub(crate) fn open_message(
    d: &mut Decoder<'_>,
    message: &'static str,
) -> Result<(Container, u64), DecodeError> {
    let mut top = Container::array(d)?;
    if !top.next(d)? {
        return Err(DecodeError::MissingField {
            message,
            field: "type",
        });
    }
    let ty = uint(d)?;
    if !top.next(d)? {
        return Err(DecodeError::MissingField {
            message,
            field: "body",
        });
    }
    Ok((top, ty))
}

/// Finish a top-level message: skip appended elements, then insist nothing follows.
pub(crate) fn close_message(d: &mut Decoder<'_>, mut top: Container) -> Result<(), DecodeError> {
    top.skip_rest(d)?;
    if d.position() != d.input().len() {
        return Err(DecodeError::TrailingBytes { at: d.position() });
    }
    Ok(())
}

/// Appends CBOR to a `Vec`. Only what the protocol needs; always definite lengths.
pub(crate) struct Writer<'v> {
    out: &'v mut Vec<u8>,
}

impl<'v> Writer<'v> {
    pub(crate) fn new(out: &'v mut Vec<u8>) -> Self {
        Self { out }
    }

    fn head(&mut self, major: u8, v: u64) {
        let m = major << 5;
        if v < 24 {
            self.out.push(m | v as u8);
        } else if let Ok(v) = u8::try_from(v) {
            self.out.extend_from_slice(&[m | 24, v]);
        } else if let Ok(v) = u16::try_from(v) {
            self.out.push(m | 25);
            self.out.extend_from_slice(&v.to_be_bytes());
        } else if let Ok(v) = u32::try_from(v) {
            self.out.push(m | 26);
            self.out.extend_from_slice(&v.to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
    }

    pub(crate) fn uint(&mut self, v: u64) -> &mut Self {
        self.head(0, v);
        self
    }

    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            self.head(0, v.unsigned_abs());
        } else {
            // CBOR stores -1 - n; `!v` is exactly that for negative two's complement values.
            self.head(1, !v as u64);
        }
        self
    }

    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.out.push(if v { 0xf5 } else { 0xf4 });
        self
    }

    pub(crate) fn text(&mut self, s: &str) -> &mut Self {
        self.head(3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.head(2, b.len() as u64);
        self.out.extend_from_slice(b);
        self
    }

    pub(crate) fn array(&mut self, len: usize) -> &mut Self {
        self.head(4, len as u64);
        self
    }

    pub(crate) fn map(&mut self, len: usize) -> &mut Self {
        self.head(5, len as u64);
        self
    }

    /// Shortest exact float: single precision when it round-trips, else double.
    pub(crate) fn float(&mut self, v: f64) -> &mut Self {
        let single = v as f32;
        if f64::from(single) == v || v.is_nan() {
            self.out.push(0xfa);
            self.out.extend_from_slice(&single.to_be_bytes());
        } else {
            self.out.push(0xfb);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    pub(crate) fn number(&mut self, n: crate::Number) -> &mut Self {
        match n {
            crate::Number::Int(i) => self.int(i),
            crate::Number::Float(f) => self.float(f),
        }
    }

    /// Start a top-level `[type, body]` message.
    pub(crate) fn message(&mut self, ty: u64) -> &mut Self {
        self.array(2).uint(ty)
    }
}

/// Counts the present keys of an optional-field body so the map header can be definite.
pub(crate) fn count_some(flags: &[bool]) -> usize {
    flags.iter().filter(|f| **f).count()
}
