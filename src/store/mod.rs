//! All SQL lives under this module: the connection, packets and
//! transactions (`db`), schema migrations (`migrate`), and one module per
//! table family. Everything here answers in `db::StoreError`; what a
//! client is told about it is decided above (`error.rs`), once.

pub mod clock;
pub mod conflicts;
pub mod db;
pub mod guesses;
pub mod health;
pub mod idempotency;
pub mod migrate;
pub mod purge;
pub mod ratelimit;
pub mod records;
pub mod repair;
pub mod tokens;
pub mod users;
