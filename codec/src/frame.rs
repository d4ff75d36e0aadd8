//! Length-prefixed framing for TCP and QUIC streams (protocol §2): a big-endian `u32` payload
//! length, then the payload. A zero-length payload is a keepalive.
//!
//! Framing is separate from the message format: [`check`] and [`parse`] only find frame
//! boundaries, and the payload is handed on as bytes. "Not enough bytes yet" is the everyday
//! case on a stream, so it is the cheap [`Status::Incomplete`] value, not an error.

use crate::DecodeError;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Default maximum payload. Typical messages are ~100 bytes; the largest legitimate ones
/// (command output, long event logs) fit easily, and a bound keeps per-connection buffers small.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024;

/// What [`check`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A whole frame is present; it occupies `len` bytes of the buffer (header included).
    Complete {
        /// Header plus payload.
        len: usize,
    },
    /// More bytes are needed: at least `needed` more before a frame can be complete.
    Incomplete {
        /// Lower bound on the missing bytes (exact once the header has arrived).
        needed: usize,
    },
}

/// Is a whole frame at the start of `buf`? Rejects an announced length above `max` as soon as
/// the header arrives, so a hostile length is never buffered.
pub fn check(buf: &[u8], max: usize) -> Result<Status, DecodeError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Status::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    // u32 always fits usize on the 32/64-bit targets this runs on.
    let payload = u32::from_be_bytes(*header) as usize;
    if payload > max {
        return Err(DecodeError::FrameTooLarge { len: payload, max });
    }
    let len = HEADER_LEN + payload;
    Ok(if buf.len() >= len {
        Status::Complete { len }
    } else {
        Status::Incomplete {
            needed: len - buf.len(),
        }
    })
}

/// What [`parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A frame; `consumed` bytes of the buffer may be dropped.
    Frame {
        /// The payload (empty for a keepalive).
        payload: &'a [u8],
        /// Header plus payload.
        consumed: usize,
    },
    /// See [`Status::Incomplete`].
    Incomplete {
        /// Lower bound on the missing bytes.
        needed: usize,
    },
}

/// Split the first frame off `buf`, borrowing its payload.
pub fn parse(buf: &[u8], max: usize) -> Result<Parsed<'_>, DecodeError> {
    Ok(match check(buf, max)? {
        Status::Complete { len } => Parsed::Frame {
            payload: &buf[HEADER_LEN..len],
            consumed: len,
        },
        Status::Incomplete { needed } => Parsed::Incomplete { needed },
    })
}

/// The header for a payload of `len` bytes.
pub fn header(len: usize, max: usize) -> Result<[u8; HEADER_LEN], DecodeError> {
    match u32::try_from(len) {
        Ok(n) if len <= max => Ok(n.to_be_bytes()),
        _ => Err(DecodeError::FrameTooLarge { len, max }),
    }
}

/// Append a frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.extend_from_slice(&header(payload.len(), max)?);
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(feature = "tokio-codec")]
pub use self::tokio_codec::FrameCodec;

#[cfg(feature = "tokio-codec")]
mod tokio_codec {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::{check, header, Status, DEFAULT_MAX_FRAME, HEADER_LEN};
    use crate::DecodeError;

    /// `tokio_util` adapter over [`check`]: yields each payload as `BytesMut` split off the read
    /// buffer (no copy). Errors end the stream; the gateway then closes the connection.
    #[derive(Debug, Clone, Copy)]
    pub struct FrameCodec {
        max_frame: usize,
    }

    impl FrameCodec {
        /// A codec accepting payloads up to `max_frame` bytes.
        pub const fn new(max_frame: usize) -> Self {
            Self { max_frame }
        }

        /// The configured limit.
        pub const fn max_frame(&self) -> usize {
            self.max_frame
        }
    }

    impl Default for FrameCodec {
        fn default() -> Self {
            Self::new(DEFAULT_MAX_FRAME)
        }
    }

    impl Decoder for FrameCodec {
        type Item = BytesMut;
        type Error = DecodeError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, DecodeError> {
            match check(src, self.max_frame)? {
                Status::Complete { len } => {
                    let mut frame = src.split_to(len);
                    frame.advance(HEADER_LEN);
                    Ok(Some(frame))
                }
                Status::Incomplete { needed } => {
                    // The length is already checked against the limit, so reserving the rest of
                    // the frame now saves re-allocating as it trickles in.
                    src.reserve(needed);
                    Ok(None)
                }
            }
        }
    }

    impl Encoder<&[u8]> for FrameCodec {
        type Error = DecodeError;

        fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), DecodeError> {
            let h = header(payload.len(), self.max_frame)?;
            dst.reserve(HEADER_LEN + payload.len());
            dst.put_slice(&h);
            dst.put_slice(payload);
            Ok(())
        }
    }

    impl Encoder<Bytes> for FrameCodec {
        type Error = DecodeError;

        fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), DecodeError> {
            self.encode(&payload[..], dst)
        }
    }
}
