//! Forward-only schema migrations: `sql/NNNN_name.sql`, embedded in the
//! binary, applied in order by `healthsync migrate` (never per request:
//! every CGI request is a cold start) and checksummed in
//! `schema_migrations`, so an edited migration is refused, not re-run.

use sha2::{Digest, Sha256};

use crate::store::db::{Db, StoreError, StoreErrorKind};

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. A new one is appended, never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../sql/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "v2_security",
        sql: include_str!("../../sql/0002_v2_security.sql"),
    },
    Migration {
        version: 3,
        name: "exactly_once",
        sql: include_str!("../../sql/0003_exactly_once.sql"),
    },
    Migration {
        version: 4,
        name: "revoked_logins",
        sql: include_str!("../../sql/0004_revoked_logins.sql"),
    },
    Migration {
        version: 5,
        name: "byte_ids",
        sql: include_str!("../../sql/0005_byte_ids.sql"),
    },
];

/// The schema version this binary needs.
pub fn latest_version() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

impl Migration {
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    pub fn label(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

const CREATE_TABLE: &str = r"CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INT UNSIGNED NOT NULL,
    name        VARCHAR(200) CHARACTER SET ascii NOT NULL,
    checksum    CHAR(64)     CHARACTER SET ascii NOT NULL,
    applied_at  DATETIME(3)  NOT NULL,
    PRIMARY KEY (version)
) ENGINE=InnoDB";

/// What `schema_migrations` holds: `(version, checksum)` in order.
pub fn applied(db: &mut Db) -> Result<Vec<(u32, String)>, StoreError> {
    db.query("SELECT version, checksum FROM schema_migrations ORDER BY version")
}

/// The state of the schema against this binary's migrations.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaState {
    Current(u32),
    Behind {
        database: u32,
        binary: u32,
    },
    /// Migrations the binary does not know: it is older than the schema.
    Ahead {
        database: u32,
        binary: u32,
    },
    /// An applied migration whose text differs from the binary's.
    Edited(String),
    Empty,
}

pub fn state(db: &mut Db) -> Result<SchemaState, StoreError> {
    let exists: Option<u8> = db.query_first(
        "SELECT 1 FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
    )?;
    if exists.is_none() {
        return Ok(SchemaState::Empty);
    }
    let applied = applied(db)?;
    Ok(compare(&applied))
}

fn compare(applied: &[(u32, String)]) -> SchemaState {
    for (version, checksum) in applied {
        if let Some(migration) = MIGRATIONS.iter().find(|m| m.version == *version) {
            if migration.checksum() != *checksum {
                return SchemaState::Edited(migration.label());
            }
        }
    }
    let database = applied.iter().map(|(v, _)| *v).max().unwrap_or(0);
    let binary = latest_version();
    match database {
        0 => SchemaState::Empty,
        d if d == binary => SchemaState::Current(d),
        d if d < binary => SchemaState::Behind {
            database: d,
            binary,
        },
        d => SchemaState::Ahead {
            database: d,
            binary,
        },
    }
}

/// The lease that lets one `healthsync migrate` run at a time, cluster-wide.
///
/// Not `GET_LOCK`: on a Galera cluster a named lock is local to the node
/// that took it, so two deploys migrating through two nodes would both get
/// it. A row in an InnoDB table is one row everywhere: two nodes taking it
/// at once conflict at certification and one of them retries and finds it
/// taken; on a single server the row lock serializes them.
const CREATE_LOCK_TABLE: &str = r"CREATE TABLE IF NOT EXISTS schema_migrations_lock (
    id          TINYINT UNSIGNED NOT NULL,
    holder      CHAR(36)     CHARACTER SET ascii NOT NULL,
    expires_at  BIGINT       NOT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB";

/// How long a lease lasts unless renewed. A migrate that dies holding it
/// (killed, host rebooted) blocks the next one for at most this long; each
/// applied statement renews it.
pub const LEASE_SECONDS: i64 = 600;
/// How long `migrate` waits for another one's lease before giving up.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes the lease when it is free or expired: the row names `holder` if
/// and only if this call got it.
const TAKE_LEASE: &str = r"INSERT INTO schema_migrations_lock (id, holder, expires_at)
    VALUES (1, ?, UNIX_TIMESTAMP() + ?)
    ON DUPLICATE KEY UPDATE
      holder = IF(expires_at < UNIX_TIMESTAMP(), VALUES(holder), holder),
      expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at)";

/// Takes the migration lease for `holder`, waiting up to `LEASE_WAIT`
/// while another migrate holds it. `Ok(false)`: still held after the wait.
pub fn take_lease(db: &mut Db, holder: &str) -> Result<bool, StoreError> {
    let deadline = std::time::Instant::now() + LEASE_WAIT;
    loop {
        // A certification conflict with another node's take is a retry.
        match db.exec_write(TAKE_LEASE, (holder, LEASE_SECONDS)) {
            Ok(_) => {}
            Err(error) if error.kind == StoreErrorKind::Contention => {}
            Err(error) => return Err(error),
        }
        let current: Option<String> =
            db.exec_first("SELECT holder FROM schema_migrations_lock WHERE id = 1", ())?;
        if current.as_deref() == Some(holder) {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Extends the lease `holder` holds. `Ok(false)`: it is no longer theirs.
pub fn renew_lease(db: &mut Db, holder: &str) -> Result<bool, StoreError> {
    let written = db.exec_write(
        "UPDATE schema_migrations_lock SET expires_at = UNIX_TIMESTAMP() + ? \
         WHERE id = 1 AND holder = ?",
        (LEASE_SECONDS, holder),
    )?;
    // 0 rows also when the expiry did not change within the same second.
    let still: Option<u8> = db.exec_first(
        "SELECT 1 FROM schema_migrations_lock WHERE id = 1 AND holder = ?",
        (holder,),
    )?;
    Ok(written.affected_rows > 0 || still.is_some())
}

pub fn release_lease(db: &mut Db, holder: &str) -> Result<(), StoreError> {
    db.exec_write(
        "DELETE FROM schema_migrations_lock WHERE id = 1 AND holder = ?",
        (holder,),
    )?;
    Ok(())
}

/// Applies every pending migration, printing one line for each through
/// `progress`. Refuses to run when an applied migration was edited.
/// Serialized across processes, and across the nodes of a cluster, by the
/// lease in `schema_migrations_lock`, so two deploys racing do not both
/// apply the same migration: the second waits, then finds nothing to do.
pub fn migrate(db: &mut Db, progress: &mut dyn FnMut(&str)) -> Result<u32, String> {
    db.query_drop(CREATE_TABLE)
        .map_err(|e| format!("cannot create schema_migrations: {e}"))?;
    db.query_drop(CREATE_LOCK_TABLE)
        .map_err(|e| format!("cannot create schema_migrations_lock: {e}"))?;
    let holder = uuid::Uuid::new_v4().to_string();
    let taken =
        take_lease(db, &holder).map_err(|e| format!("cannot take the migration lease: {e}"))?;
    if !taken {
        return Err(format!(
            "another migration is running (schema_migrations_lock held for {} s); \
             if none is, it ended without releasing the lease, which expires \
             {LEASE_SECONDS} s after it was taken or last renewed",
            LEASE_WAIT.as_secs()
        ));
    }
    let result = apply_pending(db, &holder, progress).map_err(|e| match e {
        Failure::Db(error) => error.cause,
        Failure::Refused(message) => message,
    });
    let _ = release_lease(db, &holder);
    result
}

enum Failure {
    Db(StoreError),
    Refused(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure::Db(error)
    }
}

fn apply_pending(
    db: &mut Db,
    holder: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<u32, Failure> {
    let applied = applied(db)?;
    match compare(&applied) {
        SchemaState::Edited(label) => {
            return Err(Failure::Refused(format!(
                "migration {label} was changed after it was applied (checksum differs); \
                 migrations are forward-only: restore it and add a new one"
            )))
        }
        SchemaState::Ahead { database, binary } => {
            return Err(Failure::Refused(format!(
                "the database schema is at version {database}, newer than this binary's {binary}: \
                 deploy the newer binary"
            )))
        }
        _ => {}
    }
    let mut count = 0;
    for migration in MIGRATIONS {
        if applied
            .iter()
            .any(|(version, _)| *version == migration.version)
        {
            continue;
        }
        progress(&format!("applying {} ...", migration.label()));
        let started = std::time::Instant::now();
        // DDL commits implicitly in MySQL, so a migration is not atomic:
        // statements run one by one and a failure names the statement.
        for (index, statement) in statements(migration.sql).iter().enumerate() {
            if !renew_lease(db, holder)? {
                return Err(Failure::Refused(format!(
                    "the migration lease expired before {} statement {}: \
                     another migrate may have taken over; run `healthsync migrate` again",
                    migration.label(),
                    index + 1
                )));
            }
            db.query_drop(statement).map_err(|e| {
                Failure::Refused(format!(
                    "{} statement {} failed: {e}",
                    migration.label(),
                    index + 1
                ))
            })?;
        }
        db.exec_write(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
             VALUES (?, ?, ?, UTC_TIMESTAMP(3))",
            (migration.version, migration.name, migration.checksum()),
        )?;
        progress(&format!(
            "applied  {} in {} ms",
            migration.label(),
            started.elapsed().as_millis()
        ));
        count += 1;
    }
    Ok(count)
}

/// Splits a migration into statements: on `;` at the end of a line, with
/// `--` comment lines dropped. Migrations are written to that rule.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version as usize,
                index + 1,
                "{}",
                migration.label()
            );
        }
    }

    #[test]
    fn the_initial_migration_splits_into_its_tables() {
        let statements = statements(MIGRATIONS[0].sql);
        assert!(
            statements.iter().all(|s| s.starts_with("CREATE TABLE")),
            "{statements:?}"
        );
        assert_eq!(statements.len(), 9);
    }

    #[test]
    fn edited_migrations_are_detected() {
        let good: Vec<(u32, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.version, m.checksum()))
            .collect();
        assert_eq!(compare(&good), SchemaState::Current(latest_version()));
        assert_eq!(
            compare(&good[..1]),
            SchemaState::Behind {
                database: 1,
                binary: latest_version()
            }
        );
        let edited = vec![(1, "0".repeat(64))];
        assert_eq!(compare(&edited), SchemaState::Edited("0001_initial".into()));
        assert_eq!(compare(&[]), SchemaState::Empty);
    }
}
