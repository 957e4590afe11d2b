//! The probes of `GET /health` and `healthsync check`: the server answers,
//! its version, and the schema version it holds.

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
