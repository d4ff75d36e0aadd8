//! Per-unit protocol state without I/O, in the manner of `quinn-proto`: inputs arrive through
//! `handle_*(…, now)`, outputs leave through `poll_*()`, and time is a parameter, so every rule
//! here is tested deterministically with a fake clock.
//!
//! - [`handshake`]: hello → (directory lookup) → challenge → proof → welcome / refused.
//! - [`mt`]: the ordered MT queue of one unit: send, wait for the reply, retry with backoff,
//!   report the unit unreachable (fallback), expire.
//! - [`rate`]: a token bucket for per-connection rate limits.

pub mod handshake;
pub mod mt;
pub mod rate;
