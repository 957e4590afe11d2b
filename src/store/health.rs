//! The probes of `GET /health`, `healthsync check` and `healthsync report
//! --alert`: the server answers, its version, the schema version it
//! holds, the last minute a request was counted, and on a Galera cluster
//! node the cluster's state.

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

/// A Galera node's view of its cluster, from `SHOW GLOBAL STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    /// `wsrep_cluster_size`: nodes in this node's component.
    pub size: u32,
    /// `wsrep_ready`: the node accepts queries.
    pub ready: bool,
    /// `wsrep_cluster_status`: `Primary` when the component has quorum.
    pub status: String,
    /// `wsrep_local_state_comment`: `Synced` when the node is current.
    pub local_state: String,
    /// `wsrep_local_cert_failures` + `wsrep_local_bf_aborts`: this node's
    /// transactions that lost to another node's (each one retried).
    pub conflicts: u64,
    /// Settings Galera needs, as this node has them.
    pub binlog_format: String,
    pub autoinc_lock_mode: String,
}

/// The cluster this server belongs to, or `None` when it is a single
/// server (MySQL, or MariaDB without `wsrep_on`).
pub fn cluster_state(db: &mut Db) -> Result<Option<ClusterState>, StoreError> {
    let variables: Vec<(String, String)> = db.query(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
         ('wsrep_on', 'binlog_format', 'innodb_autoinc_lock_mode')",
    )?;
    let variable = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if !variable("wsrep_on").eq_ignore_ascii_case("ON") {
        return Ok(None);
    }
    let status: Vec<(String, String)> = db.query("SHOW GLOBAL STATUS LIKE 'wsrep\\_%'")?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let number = |name: &str| get(name).parse::<u64>().unwrap_or(0);
    Ok(Some(ClusterState {
        size: u32::try_from(number("wsrep_cluster_size")).unwrap_or(u32::MAX),
        ready: get("wsrep_ready").eq_ignore_ascii_case("ON"),
        status: get("wsrep_cluster_status"),
        local_state: get("wsrep_local_state_comment"),
        conflicts: number("wsrep_local_cert_failures") + number("wsrep_local_bf_aborts"),
        binlog_format: variable("binlog_format"),
        autoinc_lock_mode: variable("innodb_autoinc_lock_mode"),
    }))
}
