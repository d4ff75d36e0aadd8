//! The front ends: each accepts connections and hands them to the session driver.

pub(crate) mod http;
pub(crate) mod quic;
pub(crate) mod tcp;
