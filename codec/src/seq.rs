//! [`Seq`]: a zero-copy sequence inside a message (events, telemetry records, cells, payment
//! commands, parameters).
//!
//! A decoded `Seq` keeps only the slice of input that holds its items plus their count; items are
//! decoded again, lazily, by its iterator. The decoder has already validated every item once, so
//! a message that decoded is known to iterate cleanly. This is what lets `decode_mo` return
//! variable-length messages without allocating a `Vec`.
//!
//! To *encode*, build a `Seq` over a slice of items with [`Seq::new`]; the same type then serves
//! both directions, and a decoded message re-encodes without conversion.

use core::fmt;

use minicbor::Decoder;

use crate::cbor::{self, Container, Writer};
use crate::DecodeError;

/// Element types that a [`Seq`] can hold: how one item is read and written.
pub(crate) trait Item<'a>: Copy {
    /// `true` when the items are the key/value pairs of a CBOR map rather than array elements.
    const IN_MAP: bool = false;
    /// Name used in error messages, e.g. `"cell"`.
    const NAME: &'static str;
    fn decode(d: &mut Decoder<'a>) -> Result<Self, DecodeError>;
    /// Decode an item that [`Item::decode`] has already accepted once. Items holding a nested
    /// `Seq` override this to skim it instead of validating it a second time.
    fn decode_validated(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Self::decode(d)
    }
    fn encode(&self, w: &mut Writer<'_>);
}

/// A sequence of message items, either borrowed from received bytes or from a slice.
pub struct Seq<'a, T> {
    repr: Repr<'a, T>,
}

enum Repr<'a, T> {
    /// Validated encoded items (without the container header or break byte).
    Encoded { bytes: &'a [u8], len: usize },
    /// Items supplied by the caller for encoding.
    Items(&'a [T]),
}

// Manual impls: a derive would demand `T: Clone`/`T: Copy`, but only references are copied.
impl<T> Clone for Seq<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Seq<'_, T> {}
impl<T> Clone for Repr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Repr<'_, T> {}

impl<T> Default for Seq<'_, T> {
    fn default() -> Self {
        Self {
            repr: Repr::Items(&[]),
        }
    }
}

impl<'a, T> Seq<'a, T> {
    /// A sequence over `items`, for encoding.
    pub const fn new(items: &'a [T]) -> Self {
        Self {
            repr: Repr::Items(items),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Encoded { len, .. } => len,
            Repr::Items(items) => items.len(),
        }
    }

    /// `true` when there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterate over the items (decoding them on the fly when the sequence came off the wire).
    pub fn iter(&self) -> SeqIter<'a, T> {
        SeqIter {
            repr: match self.repr {
                Repr::Encoded { bytes, len } => IterRepr::Encoded {
                    dec: Decoder::new(bytes),
                    remaining: len,
                },
                Repr::Items(items) => IterRepr::Items(items.iter()),
            },
        }
    }
}

// Everything in this impl is crate-private, so the private bound leaks nothing.
#[allow(private_bounds)]
impl<'a, T: Item<'a>> Seq<'a, T> {
    /// Read and validate a sequence of at most `max` items, keeping only its span of input.
    pub(crate) fn decode(
        d: &mut Decoder<'a>,
        max: usize,
        message: &'static str,
        field: &'static str,
    ) -> Result<Self, DecodeError> {
        Self::read_span(d, |d, len| {
            if len == max {
                return Err(DecodeError::InvalidField {
                    message,
                    field,
                    at: d.position(),
                    reason: format!("more than {max} {} items", T::NAME),
                });
            }
            T::decode(d).map(drop)
        })
    }

    /// Re-read a sequence that [`Seq::decode`] accepted before: find its extent by skipping
    /// items rather than decoding them.
    pub(crate) fn decode_validated(d: &mut Decoder<'a>) -> Result<Self, DecodeError> {
        Self::read_span(d, |d, _| {
            cbor::skip(d)?;
            if T::IN_MAP {
                cbor::skip(d)?;
            }
            Ok(())
        })
    }

    /// Reads the sequence's container, calling `read_item` with the decoder at each item and
    /// the number of items before it, and keeps the span of input the items take.
    fn read_span(
        d: &mut Decoder<'a>,
        mut read_item: impl FnMut(&mut Decoder<'a>, usize) -> Result<(), DecodeError>,
    ) -> Result<Self, DecodeError> {
        let mut c = if T::IN_MAP {
            Container::map(d)?
        } else {
            Container::array(d)?
        };
        let start = d.position();
        let mut end = start;
        let mut len = 0usize;
        while c.next(d)? {
            read_item(d, len)?;
            len += 1;
            end = d.position();
        }
        Ok(Self {
            repr: Repr::Encoded {
                bytes: &d.input()[start..end],
                len,
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) {
        if T::IN_MAP {
            w.map(self.len());
        } else {
            w.array(self.len());
        }
        for item in self.iter() {
            item.encode(w);
        }
    }
}

/// Iterator over a [`Seq`]; yields items by value (they are small `Copy` views).
pub struct SeqIter<'a, T> {
    repr: IterRepr<'a, T>,
}

enum IterRepr<'a, T> {
    Encoded { dec: Decoder<'a>, remaining: usize },
    Items(core::slice::Iter<'a, T>),
}

impl<'a, T: Item<'a>> Iterator for SeqIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            IterRepr::Encoded { dec, remaining } => {
                if *remaining == 0 {
                    return None;
                }
                *remaining -= 1;
                // Cannot fail: `Seq::decode` decoded these very bytes. Ending the iteration is
                // still the safe answer if it ever did.
                match T::decode_validated(dec) {
                    Ok(item) => Some(item),
                    Err(_) => {
                        *remaining = 0;
                        None
                    }
                }
            }
            IterRepr::Items(items) => items.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.repr {
            IterRepr::Encoded { remaining, .. } => *remaining,
            IterRepr::Items(items) => items.len(),
        };
        (n, Some(n))
    }
}

impl<'a, T: Item<'a>> ExactSizeIterator for SeqIter<'a, T> {}

impl<'a, T: Item<'a>> IntoIterator for Seq<'a, T> {
    type Item = T;
    type IntoIter = SeqIter<'a, T>;

    fn into_iter(self) -> SeqIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: Item<'a>> IntoIterator for &Seq<'a, T> {
    type Item = T;
    type IntoIter = SeqIter<'a, T>;

    fn into_iter(self) -> SeqIter<'a, T> {
        self.iter()
    }
}

/// Equal when the items are equal, whichever way each side is stored.
impl<'a, T: Item<'a> + PartialEq> PartialEq for Seq<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: Item<'a> + Eq> Eq for Seq<'a, T> {}

impl<'a, T: Item<'a> + fmt::Debug> fmt::Debug for Seq<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
