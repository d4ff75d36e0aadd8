//! The database: SQLite (the embedded default) or PostgreSQL, behind one type.
//!
//! Statements are built with sea-query and their values are always bound
//! parameters. Rows are decoded by the catalogue's column types into JSON
//! objects in catalogue order, so both backends return identical bodies.
//!
//! SQLite runs in WAL mode with a pool of readers and a single writer
//! connection: write transactions queue for the writer instead of failing
//! with `SQLITE_BUSY`, which gives them the same serialisable behaviour the
//! PostgreSQL paths get from row locks.
//!
//! Writes on SQLite are group-committed (see [`Writer`]): each [`Tx`] is a
//! savepoint inside a batch transaction on the writer, and the batch commits
//! once for every transaction that queued behind it. Transactions still run
//! one at a time, in queue order within each [`Priority`] (API requests ahead of
//! ingest's background writes); a [`Tx::commit`] returns only after the batch
//! holding it is durable, so nobody learns of a write before it commits.
//!
//! # Layout
//! - `pool`: [`Db`] itself: opening either backend (the SQLite reader and writer pools, the
//!   PostgreSQL connection budget), migrations, `/ready`'s ping.
//! - `readers`: the single-statement reads ([`Db::fetch_all`] and its kin) on reader
//!   connections kept outside sqlx's pool, the `read!` macro that reads again on a new
//!   connection when one was found dead, and `connection_lost`, which decides that.
//! - `tx`: [`Tx`], read and write transactions ([`Db::begin`], [`Db::begin_read`]).
//! - `writer`: the SQLite writer and its group commit ([`SqliteTx`]).
//! - `checkpoint`: SQLite's WAL checkpoints in the background, off the writer's path.
//! - `gate`: who holds the writer next: interactive transactions ahead of background ones
//!   ([`Priority`]).
//! - `conn`: a borrowed connection of either backend, where every statement runs (and is
//!   timed).
//! - `render`: SQL rendering, and the cache of SQL rendered once per key ([`RenderCache`]).
//! - `bind`: sea-query values bound for each backend.
//! - `decode`: rows decoded by catalogue column type ([`Row`]) or as typed rows
//!   ([`TypedRow`]).
//! - `error`: [`DbError`], the classification of database failures.

mod bind;
mod checkpoint;
mod conn;
mod decode;
mod error;
mod gate;
mod pool;
mod readers;
mod render;
mod tx;
mod writer;

pub use decode::{Row, TypedRow};
pub use error::DbError;
pub use gate::Priority;
pub use pool::Db;
pub use render::{query_builder, RenderCache, Rendered};
pub use tx::Tx;
pub use writer::SqliteTx;
