//! Opening, keeping and re-opening the MySQL connection, and running a
//! transaction with retries on deadlock and lock-wait timeout.
//!
//! CGI opens one connection per request. FastCGI keeps one per process in a
//! `DbSlot` and re-opens it when MySQL dropped it (hosts close idle
//! connections) or when the configuration changed.

use std::time::{Duration, Instant};

use mysql::{Conn, OptsBuilder, Transaction, TxOpts};

use crate::config::DbConfig;
use crate::error::ApiError;

/// How long a connect may take before the request is a 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A statement that takes longer than this is treated as a dead server.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept connection idle for longer is pinged before use: MySQL (or a
/// host's proxy) drops idle connections, and a request should not be the
/// one to find out. Back-to-back requests skip the round trip.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// Tries of one transaction that deadlocks or waits on a lock.
const TRANSACTION_ATTEMPTS: u32 = 4;
/// Largest statement the client will send. Batches are written in chunks
/// well below it, and below a host's likely server setting.
const MAX_ALLOWED_PACKET: usize = 16 * 1024 * 1024;

/// Statements run once per new connection, in one round trip.
///
/// READ COMMITTED: REPEATABLE READ takes gap locks, and a `FOR UPDATE` of
/// ids that do not exist yet locks ranges reaching into a neighbouring
/// user's keys, deadlocking different users' pushes. The user-row lock
/// already serializes one user's writers, so nothing is lost by it.
///
/// A lock wait of 2 s (not the server's 50): one user's writers hold the
/// user row for milliseconds, so a longer wait means something is stuck,
/// and the transaction helper retries rather than hanging a CGI process.
const SESSION_SETUP: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
     SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', \
     time_zone = '+00:00', innodb_lock_wait_timeout = 2";

pub fn connect(config: &DbConfig) -> Result<Conn, ApiError> {
    let mut builder = OptsBuilder::new()
        .ip_or_hostname(Some(config.host.clone()))
        .tcp_port(config.port)
        .user(Some(config.user.clone()))
        .pass(Some(config.pass.clone()))
        .db_name(Some(config.name.clone()))
        .socket(config.socket.clone())
        // Else a loopback TCP address is re-opened over the local socket:
        // a second connect per request.
        .prefer_socket(false)
        // Else the crate asks the server for it: a round trip per connect.
        .max_allowed_packet(Some(MAX_ALLOWED_PACKET))
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .read_timeout(Some(IO_TIMEOUT))
        .write_timeout(Some(IO_TIMEOUT))
        .init(vec![SESSION_SETUP]);
    if config.tls {
        builder = with_tls(builder);
    }
    Conn::new(builder).map_err(|error| ApiError::Unavailable(format!("mysql connect: {error}")))
}

#[cfg(feature = "tls")]
fn with_tls(builder: OptsBuilder) -> OptsBuilder {
    builder.ssl_opts(mysql::SslOpts::default())
}

#[cfg(not(feature = "tls"))]
fn with_tls(builder: OptsBuilder) -> OptsBuilder {
    // Unreachable in practice: config refuses DB_TLS=true in such a build,
    // and the crate would panic on TLS options without TLS support.
    builder
}

/// The process's connection: none yet, or one opened for a configuration.
#[derive(Default)]
pub struct DbSlot {
    kept: Option<Kept>,
}

struct Kept {
    config: DbConfig,
    conn: Conn,
    last_used: Instant,
}

impl DbSlot {
    /// The connection for this configuration, opened or re-opened as needed.
    pub fn get(&mut self, config: &DbConfig) -> Result<&mut Conn, ApiError> {
        let reusable = match &mut self.kept {
            Some(kept) if kept.config == *config => {
                kept.last_used.elapsed() < IDLE_BEFORE_PING || kept.conn.ping().is_ok()
            }
            _ => false,
        };
        if !reusable {
            self.kept = None;
            let conn = connect(config)?;
            self.kept = Some(Kept {
                config: config.clone(),
                conn,
                last_used: Instant::now(),
            });
        }
        match &mut self.kept {
            Some(kept) => {
                kept.last_used = Instant::now();
                Ok(&mut kept.conn)
            }
            None => Err(ApiError::Internal(
                "connection slot empty after connect".into(),
            )),
        }
    }

    /// Drops the connection: after a panic or a connection-level error its
    /// state is unknown, and the next request opens a fresh one.
    pub fn reset(&mut self) {
        self.kept = None;
    }
}

/// Runs `work` in one transaction and commits it. A deadlock or lock-wait
/// timeout anywhere in it (commit included) runs the whole transaction
/// again, up to `TRANSACTION_ATTEMPTS` times, then it is a 503. Any other
/// error rolls back (the transaction's drop) and is returned.
pub fn transaction<T>(
    conn: &mut Conn,
    mut work: impl FnMut(&mut Transaction<'_>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut attempt = 1;
    loop {
        let outcome = run_once(conn, &mut work);
        match outcome {
            Err(ApiError::Contention(_)) if attempt < TRANSACTION_ATTEMPTS => {
                attempt += 1;
                // A short, growing pause lets the other transaction finish.
                std::thread::sleep(Duration::from_millis(5 * u64::from(attempt)));
            }
            Err(ApiError::Contention(cause)) => {
                return Err(ApiError::Contention(format!(
                    "{cause} (after {TRANSACTION_ATTEMPTS} attempts)"
                )))
            }
            other => return other,
        }
    }
}

fn run_once<T>(
    conn: &mut Conn,
    work: &mut impl FnMut(&mut Transaction<'_>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let value = work(&mut tx)?;
    tx.commit()?;
    Ok(value)
}
