//! The probes of `GET /health`, `healthsync check` and `healthsync report
//! --alert`: the server answers, its version, the schema version it
//! holds, and the last minute a request was counted.

use crate::store::db::{Db, StoreError};

/// The highest applied migration (0 for none).
pub fn schema_version(db: &mut Db) -> Result<u32, StoreError> {
    let version: Option<Option<u32>> =
        db.query_first("SELECT MAX(version) FROM schema_migrations")?;
    Ok(version.flatten().unwrap_or(0))
}

/// The server's version string (`SELECT VERSION()`).
pub fn server_version(db: &mut Db) -> Result<Option<String>, StoreError> {
    db.query_first("SELECT VERSION()")
}

/// The start (unix seconds) of the newest rate-limit window that counted a
/// request: every request but `/health` is counted, so requests came in
/// then. `None` when no window is held (none since MySQL last restarted,
/// the counters being a MEMORY table, or all swept).
pub fn last_counted_request(db: &mut Db) -> Result<Option<i64>, StoreError> {
    let start: Option<Option<i64>> = db.query_first("SELECT MAX(window_start) FROM rate_limits")?;
    Ok(start.flatten())
}
