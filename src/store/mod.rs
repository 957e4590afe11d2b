//! All SQL lives under this module: connections and transactions (`db`),
//! schema migrations (`migrate`), and one module per table family. MySQL
//! errors become `ApiError` here (`From<mysql::Error>`), so a database fault
//! is a 503 and never a 500.

pub mod clock;
pub mod db;
pub mod migrate;
pub mod purge;
pub mod ratelimit;
pub mod records;
pub mod tokens;
pub mod users;
