//! Human-readable CBOR for the dead-letter `decode` endpoint: diagnostic notation without the
//! `_` markers of indefinite lengths, so the spec's example renders as
//! `[4, [[1517927343, "Connected"]]]`.

use std::fmt::Write as _;

use minicbor::data::Type;
use minicbor::Decoder;

use crate::cbor::{self, cbor_err, Container};
use crate::DecodeError;

/// Nesting limit: rendering recurses, and hostile input must not overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Render one CBOR item (any CBOR, not only protocol messages) as text.
pub fn render_cbor(input: &[u8]) -> Result<String, DecodeError> {
    let d = &mut Decoder::new(input);
    let mut out = String::with_capacity(input.len() * 2);
    item(d, &mut out, 0)?;
    if d.position() != input.len() {
        return Err(DecodeError::TrailingBytes { at: d.position() });
    }
    Ok(out)
}

fn item(d: &mut Decoder<'_>, out: &mut String, depth: usize) -> Result<(), DecodeError> {
    let at = d.position();
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep { at, max: MAX_DEPTH });
    }
    let ty = cbor::datatype(d)?;
    // `write!` into a String cannot fail, hence the ignored results below.
    match ty {
        Type::Bool => {
            let _ = write!(out, "{}", cbor::boolean(d)?);
        }
        Type::Null => {
            d.null().map_err(|e| cbor_err(&e, d, at, "null"))?;
            out.push_str("null");
        }
        Type::Undefined => {
            d.undefined()
                .map_err(|e| cbor_err(&e, d, at, "undefined"))?;
            out.push_str("undefined");
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let _ = write!(out, "{}", cbor::uint(d)?);
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            let v = d.int().map_err(|e| cbor_err(&e, d, at, "an integer"))?;
            let _ = write!(out, "{}", i128::from(v));
        }
        Type::F16 | Type::F32 | Type::F64 => {
            let v = d.f64().map_err(|e| cbor_err(&e, d, at, "a float"))?;
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
                let _ = write!(out, "{v:.1}");
            } else if v.is_nan() {
                out.push_str("NaN");
            } else if v.is_infinite() {
                out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
            } else {
                let _ = write!(out, "{v}");
            }
        }
        Type::Simple => {
            let v = d
                .simple()
                .map_err(|e| cbor_err(&e, d, at, "a simple value"))?;
            let _ = write!(out, "simple({v})");
        }
        Type::Bytes => {
            out.push_str("h'");
            out.push_str(&hex::encode(cbor::bytes(d)?));
            out.push('\'');
        }
        Type::BytesIndef => {
            out.push_str("h'");
            for chunk in d.bytes_iter().map_err(|e| chunk_err(&e, at))? {
                out.push_str(&hex::encode(chunk.map_err(|e| chunk_err(&e, at))?));
            }
            out.push('\'');
        }
        Type::String => {
            let _ = write!(out, "{:?}", cbor::text(d)?);
        }
        Type::StringIndef => {
            let mut s = String::new();
            for chunk in d.str_iter().map_err(|e| chunk_err(&e, at))? {
                s.push_str(chunk.map_err(|e| chunk_err(&e, at))?);
            }
            let _ = write!(out, "{s:?}");
        }
        Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef => {
            let is_map = matches!(ty, Type::Map | Type::MapIndef);
            let (mut c, open, close) = if is_map {
                (Container::map(d)?, '{', '}')
            } else {
                (Container::array(d)?, '[', ']')
            };
            out.push(open);
            let mut first = true;
            while c.next(d)? {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                item(d, out, depth + 1)?;
                if is_map {
                    out.push_str(": ");
                    item(d, out, depth + 1)?;
                }
            }
            out.push(close);
        }
        Type::Tag => {
            let tag = d.tag().map_err(|e| cbor_err(&e, d, at, "a tag"))?;
            let _ = write!(out, "{}(", tag.as_u64());
            item(d, out, depth + 1)?;
            out.push(')');
        }
        Type::Break => {
            return Err(DecodeError::InvalidCbor {
                at,
                detail: "unexpected break".to_owned(),
            })
        }
        Type::Unknown(b) => {
            return Err(DecodeError::InvalidCbor {
                at,
                detail: format!("reserved initial byte 0x{b:02x}"),
            })
        }
    }
    Ok(())
}

/// Errors inside chunked strings, where the decoder is still borrowed by the chunk iterator.
fn chunk_err(e: &minicbor::decode::Error, at: usize) -> DecodeError {
    if e.is_end_of_input() {
        DecodeError::Truncated { at }
    } else {
        DecodeError::InvalidCbor {
            at,
            detail: e.to_string(),
        }
    }
}
