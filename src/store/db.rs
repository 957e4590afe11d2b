//! The MySQL connection as the rest of the binary sees it: `Db`, which runs
//! statements, times them (the `db` part of `Server-Timing`), turns every
//! driver error into a `StoreError`, and carries the connection's
//! transaction state; `Packet`, several statements sent in one round trip;
//! and `transaction`, which retries a whole transaction on deadlock.
//!
//! CGI opens one connection per request. FastCGI keeps one per process in a
//! `DbSlot` and re-opens it when MySQL dropped it (hosts close idle
//! connections) or when the configuration changed.
//!
//! A transaction is begun lazily: `START TRANSACTION` rides in the first
//! packet, and `COMMIT` may ride in the last, so a push costs two round
//! trips, not the five of begin / lock / read / write / commit.

use std::time::{Duration, Instant};

use mysql::prelude::{FromRow, Queryable};
use mysql::{Conn, OptsBuilder, Params, Row, Value};

use crate::config::DbConfig;

/// How long a connect may take before the request is a 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A statement that takes longer than this is treated as a dead server.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept connection idle for longer is pinged before use: MySQL (or a
/// host's proxy) drops idle connections, and a request should not be the
/// one to find out. Back-to-back requests skip the round trip.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// Tries of one transaction that deadlocks or waits on a lock.
pub const TRANSACTION_ATTEMPTS: u32 = 4;
/// Largest statement the client will send. Batches are written in chunks
/// well below it, and below a host's likely server setting.
const MAX_ALLOWED_PACKET: usize = 16 * 1024 * 1024;

/// MySQL error codes that mean "run the whole transaction again".
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// A unique key already holds the value.
pub const ER_DUP_ENTRY: u16 = 1062;

/// Server errors about the statement or its data, not the server's state.
const NEVER_BETTER_ON_RETRY: &[u16] = &[
    1048, // column cannot be null
    1052, // ambiguous column
    1054, // unknown column
    1062, // duplicate entry
    1064, // syntax
    1136, // column count does not match value count
    1210, // wrong arguments to a statement
    1264, // out of range value
    1265, // data truncated
    1292, // incorrect (date, number) value
    1364, // field has no default value
    1366, // incorrect value for a column (e.g. charset)
    1406, // data too long
    1451, // a foreign key refuses the delete
    1452, // a foreign key refuses the insert
    3140, // invalid JSON text (MySQL)
    3819, // check constraint violated (MySQL)
    4025, // CONSTRAINT ... failed (MariaDB: a JSON_VALID check)
];

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
///
/// The sql_mode is set whole, without NO_BACKSLASH_ESCAPES: `Packet`
/// escapes literals for exactly this mode.
///
/// The last statement asks whether the server is a Galera cluster node,
/// in the same round trip: `/*M! ... */` is run by MariaDB alone, so MySQL
/// answers 0 and MariaDB `@@wsrep_on` (1 on a cluster node). A variable
/// read costs what `SELECT 1` does; `SHOW VARIABLES LIKE 'wsrep_on'` was
/// measured 0.27 ms more, which every CGI request would pay.
const SESSION_SETUP: &str = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
     SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ENGINE_SUBSTITUTION', \
     time_zone = '+00:00', innodb_lock_wait_timeout = 2; \
     SELECT 0 /*M!+ @@wsrep_on */";

/// "Unknown system variable": a MariaDB built without wsrep has no
/// `@@wsrep_on`, and is no cluster node.
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// On a Galera node, the first round trip of every request starts with
/// these: one causal read (`wsrep_sync_wait` for one `SELECT`), which
/// waits until this node has applied every transaction the cluster had
/// committed when it was asked. Everything the request reads after it, on
/// this node, is at least that recent: a write acknowledged through any
/// front end is seen by the next request through any other (read your
/// writes), and a login revoked through one is refused by all. Later
/// statements of the request need no wait of their own; writes are
/// checked by certification at commit anyway.
const CAUSAL_READ: &str =
    "SET SESSION wsrep_sync_wait = 1; SELECT 1; SET SESSION wsrep_sync_wait = 0";
/// The results `CAUSAL_READ` adds to a packet.
const CAUSAL_READ_RESULTS: usize = 3;

/// What went wrong talking to MySQL, in the store's own terms. The layer
/// above decides what a client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub kind: StoreErrorKind,
    /// For the log only: may name tables, hosts or SQL.
    pub cause: String,
    /// The server's error number, when the server answered with one.
    pub code: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A deadlock or lock-wait timeout: the transaction may be run again.
    Contention,
    /// The server is down, refused us, dropped the connection, or is out
    /// of something: nothing the request did wrong.
    Unavailable,
    /// A statement or a row the binary itself got wrong: a bug.
    Broken,
}

impl StoreError {
    pub fn broken(cause: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Broken,
            cause: cause.into(),
            code: None,
        }
    }

    pub fn unavailable(cause: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Unavailable,
            cause: cause.into(),
            code: None,
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cause)
    }
}

impl From<mysql::Error> for StoreError {
    /// A database fault is `Unavailable`: the server being unreachable,
    /// refusing us, dropping the connection, running out of connections,
    /// space or locks; running the request again later may succeed. An
    /// error that the same statement would meet again (a malformed
    /// statement, a type mismatch in a row, a duplicate key, a value too
    /// long, invalid JSON, a failed constraint) is `Broken`: a 503 would
    /// send every device into retrying the same batch forever.
    fn from(error: mysql::Error) -> StoreError {
        let cause = format!("mysql: {error}");
        let (kind, code) = match &error {
            mysql::Error::MySqlError(e) => (
                match e.code {
                    ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT => StoreErrorKind::Contention,
                    code if NEVER_BETTER_ON_RETRY.contains(&code) => StoreErrorKind::Broken,
                    _ => StoreErrorKind::Unavailable,
                },
                Some(e.code),
            ),
            mysql::Error::FromValueError(_) | mysql::Error::FromRowError(_) => {
                (StoreErrorKind::Broken, None)
            }
            _ => (StoreErrorKind::Unavailable, None),
        };
        StoreError { kind, cause, code }
    }
}

/// An error a transaction's work may end with: the store's own, or the
/// caller's (a refusal decided inside the transaction).
pub trait TxError: From<StoreError> {
    /// True when running the whole transaction again may succeed.
    fn is_contention(&self) -> bool;

    /// The error of the last attempt, saying how many there were.
    fn after_attempts(self, attempts: u32) -> Self;
}

impl TxError for StoreError {
    fn is_contention(&self) -> bool {
        self.kind == StoreErrorKind::Contention
    }

    fn after_attempts(mut self, attempts: u32) -> Self {
        self.cause = format!("{} (after {attempts} attempts)", self.cause);
        self
    }
}

pub fn connect(config: &DbConfig) -> Result<Db, StoreError> {
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
        .write_timeout(Some(IO_TIMEOUT));
    if config.tls {
        builder = with_tls(builder, config.tls_ca.as_deref());
    }
    let started = Instant::now();
    // Any failure to connect is an outage to the client; the server's code
    // stays for the operator's hints (`healthsync check`).
    let connect_error = |error: mysql::Error| StoreError {
        kind: StoreErrorKind::Unavailable,
        code: match &error {
            mysql::Error::MySqlError(e) => Some(e.code),
            _ => None,
        },
        cause: format!("mysql connect: {error}"),
    };
    let mut conn = Conn::new(builder).map_err(connect_error)?;
    let galera = session_setup(&mut conn).map_err(connect_error)?;
    Ok(Db {
        conn,
        spent: started.elapsed(),
        tx: TxState::None,
        galera,
        causal_pending: galera,
    })
}

/// Runs `SESSION_SETUP` and says whether the server is a Galera node.
fn session_setup(conn: &mut Conn) -> mysql::Result<bool> {
    let sets = match read_sets(conn, SESSION_SETUP) {
        Ok(sets) => sets,
        // The statements before the probe ran: the session is set up.
        Err(mysql::Error::MySqlError(e)) if e.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
            return Ok(false)
        }
        Err(error) => return Err(error),
    };
    let mut galera = false;
    for set in sets {
        if let Set::Rows(rows) = set {
            for row in rows {
                let (on,): (i64,) = mysql::from_row_opt(row)?;
                galera = on == 1;
            }
        }
    }
    Ok(galera)
}

/// TLS with the server's certificate verified, name included, against the
/// public roots and the configured CA file if any. Never unverified: a
/// certificate that does not check out is a failed connect.
#[cfg(feature = "tls")]
fn with_tls(builder: OptsBuilder, ca: Option<&std::path::Path>) -> OptsBuilder {
    let opts = mysql::SslOpts::default()
        .with_root_cert_path(ca.map(|path| std::borrow::Cow::Owned(path.to_owned())));
    builder.ssl_opts(opts)
}

#[cfg(not(feature = "tls"))]
fn with_tls(builder: OptsBuilder, _ca: Option<&std::path::Path>) -> OptsBuilder {
    // Unreachable in practice: config refuses DB_TLS=true in such a build,
    // and the crate would panic on TLS options without TLS support.
    builder
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxState {
    /// Autocommit: each statement commits on its own.
    None,
    /// `begin` was called; `START TRANSACTION` goes out with the next
    /// statement.
    Pending,
    /// The server has an open transaction.
    Open,
}

/// One MySQL connection, with the time spent waiting on it.
pub struct Db {
    conn: Conn,
    spent: Duration,
    tx: TxState,
    /// The server is a Galera cluster node (`wsrep_on`), asked at connect.
    galera: bool,
    /// The next round trip starts with `CAUSAL_READ` (Galera only).
    causal_pending: bool,
}

/// What an `INSERT`/`UPDATE`/`DELETE` reported in its OK packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub affected_rows: u64,
    pub last_insert_id: Option<u64>,
}

impl Db {
    /// Time spent in MySQL since the last call (connect included), for
    /// `Server-Timing`.
    pub fn take_spent(&mut self) -> Duration {
        std::mem::take(&mut self.spent)
    }

    /// True when the server is a node of a Galera cluster.
    pub fn is_galera(&self) -> bool {
        self.galera
    }

    /// A new request begins: on Galera its first round trip carries a
    /// causal read (`CAUSAL_READ`). A single server is never asked.
    pub fn start_request(&mut self) {
        self.causal_pending = self.galera;
    }

    fn timed<T>(
        &mut self,
        work: impl FnOnce(&mut Conn) -> mysql::Result<T>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = work(&mut self.conn);
        self.spent += started.elapsed();
        result.map_err(StoreError::from)
    }

    /// Sends what is owed before a statement that cannot share its packet
    /// (a prepared statement, or a text one read on its own): the causal
    /// read of a Galera request, then the deferred `START TRANSACTION`.
    fn open_pending(&mut self) -> Result<(), StoreError> {
        if self.causal_pending {
            self.timed(|conn| conn.query_drop(CAUSAL_READ))?;
            self.causal_pending = false;
        }
        if self.tx == TxState::Pending {
            self.timed(|conn| conn.query_drop("START TRANSACTION"))?;
            self.tx = TxState::Open;
        }
        Ok(())
    }

    /// Rows of a prepared statement.
    pub fn exec<T: FromRow>(
        &mut self,
        sql: &str,
        params: impl Into<Params>,
    ) -> Result<Vec<T>, StoreError> {
        self.open_pending()?;
        let params = params.into();
        self.timed(|conn| conn.exec(sql, params))
    }

    pub fn exec_first<T: FromRow>(
        &mut self,
        sql: &str,
        params: impl Into<Params>,
    ) -> Result<Option<T>, StoreError> {
        self.open_pending()?;
        let params = params.into();
        self.timed(|conn| conn.exec_first(sql, params))
    }

    /// A prepared statement that returns no rows.
    pub fn exec_write(
        &mut self,
        sql: &str,
        params: impl Into<Params>,
    ) -> Result<Written, StoreError> {
        self.open_pending()?;
        let params = params.into();
        self.timed(|conn| {
            let result = conn.exec_iter(sql, params)?;
            Ok(Written {
                affected_rows: result.affected_rows(),
                last_insert_id: result.last_insert_id(),
            })
        })
    }

    /// Rows of a prepared statement handed to `each` as they arrive from
    /// the server, none kept: a result of any size costs one row's memory.
    /// An error from `each` ends the reading (the rest is drained) and is
    /// returned. The time spent in `each` is not counted as MySQL's.
    pub fn exec_each<E: From<StoreError>>(
        &mut self,
        sql: &str,
        params: impl Into<Params>,
        mut each: impl FnMut(Row) -> Result<(), E>,
    ) -> Result<(), E> {
        self.open_pending()?;
        let params = params.into();
        let started = Instant::now();
        let mut outside = Duration::ZERO;
        let conn = &mut self.conn;
        let read = || -> Result<(), E> {
            let rows = conn.exec_iter(sql, params).map_err(StoreError::from)?;
            for row in rows {
                let row = row.map_err(StoreError::from)?;
                let handed = Instant::now();
                each(row)?;
                outside += handed.elapsed();
            }
            Ok(())
        };
        let result = read();
        self.spent += started.elapsed().saturating_sub(outside);
        result
    }

    /// Text-protocol statements with no parameters (DDL, locks, probes).
    pub fn query<T: FromRow>(&mut self, sql: &str) -> Result<Vec<T>, StoreError> {
        self.open_pending()?;
        self.timed(|conn| conn.query(sql))
    }

    pub fn query_first<T: FromRow>(&mut self, sql: &str) -> Result<Option<T>, StoreError> {
        self.open_pending()?;
        self.timed(|conn| conn.query_first(sql))
    }

    pub fn query_drop(&mut self, sql: &str) -> Result<(), StoreError> {
        self.open_pending()?;
        self.timed(|conn| conn.query_drop(sql))
    }

    /// Every statement of the packet in one round trip, in order; the
    /// first to fail ends it (MySQL runs none after it) and is the error.
    pub fn run(&mut self, packet: Packet) -> Result<Sets, StoreError> {
        if self.galera && (self.tx != TxState::None || packet.commits) {
            return self.run_apart(packet);
        }
        let mut parts: Vec<&str> = Vec::with_capacity(4);
        let mut leading = 0;
        let causal = self.causal_pending;
        if causal {
            parts.push(CAUSAL_READ);
            leading += CAUSAL_READ_RESULTS;
        }
        let begins = self.tx == TxState::Pending;
        if begins {
            parts.push("START TRANSACTION");
            leading += 1;
        }
        if packet.statements > 0 {
            parts.push(&packet.text);
        }
        let commits = packet.commits;
        if commits {
            parts.push("COMMIT");
        }
        if parts.is_empty() {
            return Ok(Sets(Vec::new()));
        }
        let text = parts.join(";");
        let expected = leading + packet.statements + usize::from(commits);
        let outcome = self.timed(|conn| read_sets(conn, &text));
        // Once sent, the transaction is open whether or not a statement
        // failed: the caller rolls it back.
        if begins {
            self.tx = TxState::Open;
        }
        let mut sets = outcome?;
        if causal {
            self.causal_pending = false;
        }
        if sets.len() != expected {
            return Err(StoreError::broken(format!(
                "a packet of {expected} statements answered {} results",
                sets.len()
            )));
        }
        if commits {
            self.tx = TxState::None;
            sets.pop();
        }
        sets.drain(..leading);
        Ok(Sets(sets.into_iter().map(Some).collect()))
    }

    /// `run` inside a transaction on a Galera node: one statement per
    /// command, `COMMIT` alone. Measured on MariaDB 10.11 with galera-4
    /// 26.4: with `...; COMMIT` in one multi-statement command, a push that
    /// lost certification to another node's was answered OK at `COMMIT`
    /// and its writes were gone (the other push's records held its
    /// versions), in 5 of 8 runs of 10-15 s of concurrent pushes of one
    /// user through two nodes. A command of its own is answered 1213, which
    /// the transaction helper retries. Outside a transaction (the causal
    /// read, a pull's page) packets stay whole.
    fn run_apart(&mut self, packet: Packet) -> Result<Sets, StoreError> {
        if self.causal_pending {
            self.timed(|conn| conn.query_drop(CAUSAL_READ))?;
            self.causal_pending = false;
        }
        if self.tx == TxState::Pending {
            // Once sent, the transaction is open whatever the answer: the
            // caller rolls it back.
            self.tx = TxState::Open;
            self.timed(|conn| conn.query_drop("START TRANSACTION"))?;
        }
        let mut sets = Vec::with_capacity(packet.statements);
        let mut start = 0;
        for &end in &packet.ends {
            let statement = &packet.text[start..end];
            start = end + 1;
            let mut one = self.timed(|conn| read_sets(conn, statement))?;
            if one.len() != 1 {
                return Err(StoreError::broken(format!(
                    "a statement answered {} results",
                    one.len()
                )));
            }
            sets.push(one.pop());
        }
        if packet.commits {
            self.timed(|conn| conn.query_drop("COMMIT"))?;
            self.tx = TxState::None;
        }
        Ok(Sets(sets))
    }

    /// Starts a transaction; nothing is sent until the first statement.
    pub fn begin(&mut self) {
        self.tx = TxState::Pending;
    }

    /// Commits the open transaction, if one is open (a packet may have
    /// committed it already).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let state = std::mem::replace(&mut self.tx, TxState::None);
        if state == TxState::Open {
            self.timed(|conn| conn.query_drop("COMMIT"))?;
        }
        Ok(())
    }

    /// Rolls back what is open. A failed rollback leaves the connection in
    /// doubt: the error says so, and the caller drops the connection.
    pub fn rollback(&mut self) -> Result<(), StoreError> {
        let state = std::mem::replace(&mut self.tx, TxState::None);
        if state == TxState::Open {
            self.timed(|conn| conn.query_drop("ROLLBACK"))?;
        }
        Ok(())
    }

    /// True while a transaction is begun and not yet ended.
    pub fn in_transaction(&self) -> bool {
        self.tx != TxState::None
    }

    pub fn ping(&mut self) -> bool {
        self.conn.ping().is_ok()
    }
}

fn read_sets(conn: &mut Conn, text: &str) -> mysql::Result<Vec<Set>> {
    let mut result = conn.query_iter(text)?;
    let mut sets = Vec::new();
    while let Some(mut set) = result.iter() {
        let has_columns = !set.columns().as_ref().is_empty();
        let written = Written {
            affected_rows: set.affected_rows(),
            last_insert_id: set.last_insert_id(),
        };
        let mut rows = Vec::new();
        for row in set.by_ref() {
            rows.push(row?);
        }
        sets.push(if has_columns {
            Set::Rows(rows)
        } else {
            Set::Written(written)
        });
    }
    Ok(sets)
}

/// Several statements for one round trip. Values are written into the
/// text as literals escaped by the driver (`Value::as_sql`) for the
/// session's own sql_mode (set at connect, without NO_BACKSLASH_ESCAPES),
/// never formatted by hand; SQL text itself comes only from `store/`.
#[derive(Default)]
pub struct Packet {
    text: String,
    statements: usize,
    /// Where each statement ends in `text` (a `;` follows all but the last).
    ends: Vec<usize>,
    commits: bool,
}

/// Appends `sql` to `out` with its `?` placeholders replaced by `values`
/// as literals escaped by the driver. The statement text must hold no `?`
/// but the placeholders.
fn inline_values(out: &mut String, sql: &str, values: &[Value]) -> Result<(), StoreError> {
    let mut values_left = values.iter();
    for piece in sql.split_inclusive('?') {
        match piece.strip_suffix('?') {
            Some(before) => {
                let value = values_left
                    .next()
                    .ok_or_else(|| StoreError::broken(format!("too few values for: {sql}")))?;
                out.push_str(before);
                out.push_str(&value.as_sql(false));
            }
            None => out.push_str(piece),
        }
    }
    if values_left.next().is_some() {
        return Err(StoreError::broken(format!("too many values for: {sql}")));
    }
    Ok(())
}

/// Where a statement's result will be in the packet's `Sets`.
#[derive(Clone, Copy, Debug)]
pub struct Slot(usize);

impl Packet {
    pub fn new() -> Packet {
        Packet::default()
    }

    /// Adds a statement whose `?` placeholders take `values` in order.
    /// The statement text must hold no `?` but the placeholders.
    pub fn push(&mut self, sql: &str, values: &[Value]) -> Result<Slot, StoreError> {
        if self.statements > 0 {
            self.text.push(';');
        }
        inline_values(&mut self.text, sql, values)?;
        self.ends.push(self.text.len());
        let slot = Slot(self.statements);
        self.statements += 1;
        Ok(slot)
    }

    /// Ends the packet with `COMMIT`: the transaction commits in the same
    /// round trip as its last writes, or not at all if one failed.
    pub fn commit(&mut self) {
        self.commits = true;
    }

    pub fn is_empty(&self) -> bool {
        self.statements == 0 && !self.commits
    }
}

enum Set {
    Rows(Vec<Row>),
    Written(Written),
}

/// The results of a packet, taken out by slot.
pub struct Sets(Vec<Option<Set>>);

impl Sets {
    fn take(&mut self, slot: Slot) -> Result<Set, StoreError> {
        self.0
            .get_mut(slot.0)
            .and_then(Option::take)
            .ok_or_else(|| StoreError::broken(format!("no result {} in the packet", slot.0)))
    }

    pub fn rows(&mut self, slot: Slot) -> Result<Vec<Row>, StoreError> {
        match self.take(slot)? {
            Set::Rows(rows) => Ok(rows),
            Set::Written(_) => Err(StoreError::broken("a statement without rows was read")),
        }
    }

    pub fn written(&mut self, slot: Slot) -> Result<Written, StoreError> {
        match self.take(slot)? {
            Set::Written(written) => Ok(written),
            Set::Rows(_) => Err(StoreError::broken(
                "a statement with rows was read as a write",
            )),
        }
    }
}

/// The process's connection: none yet, or one opened for a configuration.
#[derive(Default)]
pub struct DbSlot {
    kept: Option<Kept>,
}

struct Kept {
    config: DbConfig,
    db: Db,
    last_used: Instant,
}

impl DbSlot {
    /// The connection for this configuration, opened or re-opened as needed.
    pub fn get(&mut self, config: &DbConfig) -> Result<&mut Db, StoreError> {
        let reusable = match &mut self.kept {
            Some(kept) if kept.config == *config => {
                kept.last_used.elapsed() < IDLE_BEFORE_PING || kept.db.ping()
            }
            _ => false,
        };
        if !reusable {
            self.kept = None;
            let db = connect(config)?;
            self.kept = Some(Kept {
                config: config.clone(),
                db,
                last_used: Instant::now(),
            });
        }
        match &mut self.kept {
            Some(kept) => {
                kept.last_used = Instant::now();
                Ok(&mut kept.db)
            }
            None => Err(StoreError::broken("connection slot empty after connect")),
        }
    }

    /// A new request begins (see `Db::start_request`). A connection
    /// opened later for it starts the same way.
    pub fn start_request(&mut self) {
        if let Some(kept) = self.kept.as_mut() {
            kept.db.start_request();
        }
    }

    /// Time the kept connection spent in MySQL during this request.
    pub fn take_spent(&mut self) -> Option<Duration> {
        let spent = self.kept.as_mut().map(|kept| kept.db.take_spent())?;
        (!spent.is_zero()).then_some(spent)
    }

    /// Drops the connection: after a panic or a connection-level error its
    /// state is unknown, and the next request opens a fresh one.
    pub fn reset(&mut self) {
        self.kept = None;
    }
}

/// Runs `work` in a read-only transaction over one consistent snapshot:
/// REPEATABLE READ for this transaction alone (the session stays READ
/// COMMITTED), so every read in it sees the same committed state, and no
/// row is locked, so the user's devices go on writing while it reads. Not
/// retried: plain reads meet no deadlock.
pub fn read_snapshot<T, E: From<StoreError>>(
    db: &mut Db,
    work: impl FnOnce(&mut Db) -> Result<T, E>,
) -> Result<T, E> {
    db.query_drop(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
         START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    )?;
    db.tx = TxState::Open;
    match work(db) {
        Ok(value) => {
            db.commit()?;
            Ok(value)
        }
        Err(error) => {
            db.rollback()?;
            Err(error)
        }
    }
}

/// Runs `work` in one transaction and commits it (unless its last packet
/// already did). A deadlock or lock-wait timeout anywhere in it, commit
/// included, runs the whole transaction again, up to
/// `TRANSACTION_ATTEMPTS` times; `work` learns the attempt's number (from
/// 1), so what must happen once per request (a rate-limit count) can. Any
/// other error rolls back and is returned.
pub fn transaction<T, E: TxError>(
    db: &mut Db,
    mut work: impl FnMut(&mut Db, u32) -> Result<T, E>,
) -> Result<T, E> {
    let mut attempt = 1;
    loop {
        db.begin();
        let outcome = work(db, attempt).and_then(|value| {
            db.commit()?;
            Ok(value)
        });
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        db.rollback()?;
        if !error.is_contention() {
            return Err(error);
        }
        if attempt >= TRANSACTION_ATTEMPTS {
            return Err(error.after_attempts(attempt));
        }
        attempt += 1;
        std::thread::sleep(retry_pause(attempt));
    }
}

/// The pause before try `attempt` (from 2): growing, so the other
/// transaction can finish, and randomized, so two writers that met (on a
/// Galera cluster: through two nodes, whose conflicts fail at commit rather
/// than wait) do not retry in step and meet again. The randomness is the
/// clock's nanoseconds: enough to tell two processes apart.
fn retry_pause(attempt: u32) -> Duration {
    let step = 5 * u64::from(attempt);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::from(since.subsec_nanos()));
    Duration::from_millis(step + (nanos / 1_000) % (2 * step + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_escape_every_value_and_count_placeholders() {
        let mut packet = Packet::new();
        let first = packet.push(
            "SELECT ? FROM t WHERE a = ?",
            &[Value::from(1u64), Value::from("x'; DROP TABLE t; --")],
        );
        assert!(first.is_ok());
        assert_eq!(
            packet.text,
            r"SELECT 1 FROM t WHERE a = 'x\'; DROP TABLE t; --'"
        );
        assert!(packet.push("SELECT ?", &[]).is_err());
        assert!(packet.push("SELECT 1", &[Value::from(1u64)]).is_err());
    }

    #[test]
    fn retry_pauses_grow_and_stay_bounded() {
        for attempt in 2..=TRANSACTION_ATTEMPTS {
            let pause = retry_pause(attempt);
            let step = Duration::from_millis(5 * u64::from(attempt));
            assert!(pause >= step && pause <= 3 * step, "{attempt}: {pause:?}");
        }
    }

    #[test]
    fn store_errors_sort_driver_errors_by_what_can_be_done() {
        let server = |code: u16| {
            StoreError::from(mysql::Error::MySqlError(mysql::MySqlError {
                state: String::new(),
                message: String::new(),
                code,
            }))
            .kind
        };
        assert_eq!(server(1213), StoreErrorKind::Contention);
        assert_eq!(server(1205), StoreErrorKind::Contention);
        assert_eq!(server(1064), StoreErrorKind::Broken);
        assert_eq!(server(1040), StoreErrorKind::Unavailable);
        assert_eq!(server(ER_DUP_ENTRY), StoreErrorKind::Broken);
        assert_eq!(server(1406), StoreErrorKind::Broken);
        assert_eq!(server(4025), StoreErrorKind::Broken);
        assert_eq!(server(3140), StoreErrorKind::Broken);
        assert_eq!(server(1452), StoreErrorKind::Broken);
        // Outages and resource limits stay retryable.
        assert_eq!(server(1053), StoreErrorKind::Unavailable);
        assert_eq!(server(1114), StoreErrorKind::Unavailable);
        assert_eq!(server(1927), StoreErrorKind::Unavailable);
    }
}
