//! The `users` table: accounts, the per-user change counter and token
//! version, and erasure of everything a user owns.

use mysql::{params, Row, Value};

use crate::store::clock;
use crate::store::db::{Db, Packet, Sets, Slot, StoreError, ER_DUP_ENTRY};
use crate::sync::Entity;

/// What a request needs of its user, read once (and locked for writes).
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub token_version: u32,
    pub sync_enabled: bool,
    pub change_counter: u64,
    pub last_write_at: Option<i64>,
    pub last_sync_at: Option<i64>,
    pub purged_version: u64,
    pub purged_before: Option<i64>,
    /// Rows the user holds over all five entities, tombstones included,
    /// and the bytes of their `data` as compact JSON: kept exact by every
    /// transaction that writes or purges records (the quotas).
    pub record_count: u64,
    pub data_bytes: u64,
    /// Per entity, in `Entity::ALL` order: the state digest (contract
    /// section 9.2) and the highest version ever written to it.
    pub digests: [u64; 5],
    pub entity_versions: [u64; 5],
    /// The last `seq` of the user's conflict log.
    pub conflict_seq: u64,
    /// Logins (refresh-token families) revoked recently enough that an
    /// access token of theirs may not have expired yet.
    pub revoked_logins: RevokedLogins,
}

const COLUMNS: &str = "id, email, name, password_hash, token_version, sync_enabled, \
     change_counter, last_write_at, last_sync_at, purged_version, purged_before, \
     record_count, data_bytes, \
     health_metrics_digest, medications_digest, meals_digest, exercises_digest, meal_plans_digest, \
     health_metrics_version, medications_version, meals_version, exercises_version, meal_plans_version, \
     conflict_seq, revoked_logins";

/// The column of an entity's digest and of the highest version written
/// to it (named from `Entity::table()`, never from input).
pub fn digest_column(entity: Entity) -> String {
    format!("{}_digest", entity.table())
}

pub fn version_column(entity: Entity) -> String {
    format!("{}_version", entity.table())
}

fn take_string(row: &mut Row, index: usize) -> Result<String, StoreError> {
    row.take_opt::<String, _>(index)
        .and_then(Result::ok)
        .ok_or_else(|| StoreError::broken(format!("users column {index} unreadable")))
}

fn take_u64(row: &mut Row, index: usize) -> Result<u64, StoreError> {
    row.take_opt::<u64, _>(index)
        .and_then(Result::ok)
        .ok_or_else(|| StoreError::broken(format!("users column {index} unreadable")))
}

fn take_time(row: &mut Row, index: usize) -> Option<i64> {
    row.take_opt::<Value, _>(index)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v))
}

fn take_revoked(row: &mut Row, index: usize) -> RevokedLogins {
    RevokedLogins::parse(
        &row.take_opt::<Option<String>, _>(index)
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_default(),
    )
}

fn from_row(mut row: Row) -> Result<User, StoreError> {
    let mut digests = [0u64; 5];
    for (index, digest) in digests.iter_mut().enumerate() {
        *digest = take_u64(&mut row, 13 + index)?;
    }
    let mut entity_versions = [0u64; 5];
    for (index, version) in entity_versions.iter_mut().enumerate() {
        *version = take_u64(&mut row, 18 + index)?;
    }
    Ok(User {
        id: take_string(&mut row, 0)?,
        email: take_string(&mut row, 1)?,
        name: take_string(&mut row, 2)?,
        password_hash: take_string(&mut row, 3)?,
        token_version: u32::try_from(take_u64(&mut row, 4)?).unwrap_or(u32::MAX),
        sync_enabled: take_u64(&mut row, 5)? != 0,
        change_counter: take_u64(&mut row, 6)?,
        last_write_at: take_time(&mut row, 7),
        last_sync_at: take_time(&mut row, 8),
        purged_version: take_u64(&mut row, 9)?,
        purged_before: take_time(&mut row, 10),
        record_count: take_u64(&mut row, 11)?,
        data_bytes: take_u64(&mut row, 12)?,
        digests,
        entity_versions,
        conflict_seq: take_u64(&mut row, 23)?,
        revoked_logins: take_revoked(&mut row, 24),
    })
}

/// `users.revoked_logins`: the logins (refresh-token families) revoked
/// while an access token of theirs could still be unexpired, as
/// `family@unix_seconds` entries separated by spaces (NULL for none). The
/// user row is read by every authenticated request, so refusing a revoked
/// login's access tokens costs no statement of its own; the list stays
/// short because an entry is dropped once every access token of its login
/// has expired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedLogins(Vec<(String, i64)>);

impl RevokedLogins {
    /// Reads the column. An entry whose time does not parse is kept for
    /// good: refusing a login too long is safe, forgetting it is not.
    pub fn parse(text: &str) -> RevokedLogins {
        RevokedLogins(
            text.split_ascii_whitespace()
                .map(|entry| match entry.rsplit_once('@') {
                    Some((family, secs)) => {
                        (family.to_owned(), secs.parse::<i64>().unwrap_or(i64::MAX))
                    }
                    None => (entry.to_owned(), i64::MAX),
                })
                .collect(),
        )
    }

    pub fn contains(&self, family: &str) -> bool {
        self.0.iter().any(|(revoked, _)| revoked == family)
    }

    /// The list with `family` revoked at `now_secs`, less the entries
    /// revoked before `forget_before_secs`.
    pub fn with(&self, family: &str, now_secs: i64, forget_before_secs: i64) -> RevokedLogins {
        let mut kept: Vec<(String, i64)> = self
            .0
            .iter()
            .filter(|(revoked, at)| *at >= forget_before_secs && revoked != family)
            .cloned()
            .collect();
        kept.push((family.to_owned(), now_secs));
        RevokedLogins(kept)
    }

    /// The column's value: `None` (NULL) for an empty list.
    pub fn to_column(&self) -> Option<String> {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(family, at)| format!("{family}@{at}"))
            .collect();
        (!entries.is_empty()).then(|| entries.join(" "))
    }
}

/// Stores the user's revoked logins (under the user-row lock the caller
/// holds, so no revocation overwrites another).
pub fn set_revoked_logins(
    db: &mut Db,
    user_id: &str,
    logins: &RevokedLogins,
) -> Result<(), StoreError> {
    db.exec_write(
        "UPDATE users SET revoked_logins = ? WHERE id = ?",
        (logins.to_column(), user_id),
    )?;
    Ok(())
}

impl User {
    /// The entity's state digest at the user's position.
    pub fn digest(&self, entity: Entity) -> u64 {
        self.digests[entity.index()]
    }

    /// The highest version ever written to the entity.
    pub fn entity_version(&self, entity: Entity) -> u64 {
        self.entity_versions[entity.index()]
    }

    /// Where the user's sequence stands.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            change_counter: self.change_counter,
            purged_version: self.purged_version,
            purged_before: self.purged_before,
        }
    }
}

/// The user's position and purge watermark: what a cursor is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub change_counter: u64,
    pub purged_version: u64,
    pub purged_before: Option<i64>,
}

impl Bounds {
    /// The oldest cursor accepted without 410 (contract section 9.5),
    /// `None` while nothing of the user's was purged.
    pub fn oldest_sync_token(&self) -> Option<u64> {
        match (self.purged_version, self.purged_before) {
            (0, None) => None,
            (version, _) => Some(version),
        }
    }
}

/// What a pull needs of its user: the credentials, the position, the last
/// sync time, and the pulled entity's digest and highest version (not the
/// id: the token has it). Pulls are the most frequent request, and this
/// is 9 of the row's 25 columns:
/// MariaDB sends fewer, and the binary decodes fewer (about 15 µs of
/// server CPU a pull).
#[derive(Debug, Clone)]
pub struct Position {
    pub token_version: u32,
    pub revoked_logins: RevokedLogins,
    pub sync_enabled: bool,
    pub last_sync_at: Option<i64>,
    pub bounds: Bounds,
    /// The entity's state digest at `bounds.change_counter`.
    pub digest: u64,
    /// The highest version ever written to the entity.
    pub entity_version: u64,
}

fn select_position(entity: Entity, lock: Lock) -> String {
    format!(
        "SELECT token_version, sync_enabled, change_counter, last_sync_at, \
         purged_version, purged_before, revoked_logins, {}, {} FROM users WHERE id = ?{}",
        digest_column(entity),
        version_column(entity),
        lock.suffix()
    )
}

/// The position read, as a statement of a larger packet.
pub fn push_find_position(
    packet: &mut Packet,
    id: &str,
    entity: Entity,
    lock: Lock,
) -> Result<Slot, StoreError> {
    packet.push(&select_position(entity, lock), &[Value::from(id)])
}

pub fn read_position(sets: &mut Sets, slot: Slot) -> Result<Option<Position>, StoreError> {
    let Some(mut row) = sets.rows(slot)?.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(Position {
        token_version: u32::try_from(take_u64(&mut row, 0)?).unwrap_or(u32::MAX),
        sync_enabled: take_u64(&mut row, 1)? != 0,
        bounds: Bounds {
            change_counter: take_u64(&mut row, 2)?,
            purged_version: take_u64(&mut row, 4)?,
            purged_before: take_time(&mut row, 5),
        },
        last_sync_at: take_time(&mut row, 3),
        revoked_logins: take_revoked(&mut row, 6),
        digest: take_u64(&mut row, 7)?,
        entity_version: take_u64(&mut row, 8)?,
    }))
}

/// How a read of the user row locks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    None,
    /// Waits for the user's writers to commit; taken by readers that must
    /// see a stable clock (`since` cursors, bulk).
    Share,
    /// Serializes the user's writers: taken first by every writing request.
    Update,
}

/// The user by id, with its revoked logins: refusing a revoked login's
/// access tokens needs no statement of its own.
fn select_by_id(lock: Lock) -> String {
    format!("SELECT {COLUMNS} FROM users WHERE id = ?{}", lock.suffix())
}

impl Lock {
    fn suffix(self) -> &'static str {
        match self {
            Lock::None => "",
            Lock::Share => " LOCK IN SHARE MODE",
            Lock::Update => " FOR UPDATE",
        }
    }
}

pub fn find_by_id(db: &mut Db, id: &str, lock: Lock) -> Result<Option<User>, StoreError> {
    let row: Option<Row> = db.exec_first(&select_by_id(lock), (id,))?;
    row.map(from_row).transpose()
}

/// The same read, as a statement of a larger packet.
pub fn push_find_by_id(packet: &mut Packet, id: &str, lock: Lock) -> Result<Slot, StoreError> {
    packet.push(&select_by_id(lock), &[Value::from(id)])
}

pub fn read_user(sets: &mut Sets, slot: Slot) -> Result<Option<User>, StoreError> {
    sets.rows(slot)?
        .into_iter()
        .next()
        .map(from_row)
        .transpose()
}

pub fn find_by_email(db: &mut Db, email: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE email = ?");
    let row: Option<Row> = db.exec_first(&sql, (email,))?;
    row.map(from_row).transpose()
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub now: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// The normalized email belongs to an account already.
    EmailTaken,
}

pub fn insert(db: &mut Db, user: &NewUser) -> Result<Inserted, StoreError> {
    let result = db.exec_write(
        r"INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
          VALUES (:id, :email, :name, :hash, :now, :now)",
        params! {
            "id" => user.id,
            "email" => user.email,
            "name" => user.name,
            "hash" => user.password_hash,
            "now" => clock::to_sql(user.now),
        },
    );
    match result {
        Ok(_) => Ok(Inserted::Created),
        Err(error) if error.code == Some(ER_DUP_ENTRY) => Ok(Inserted::EmailTaken),
        Err(error) => Err(error),
    }
}

pub fn set_password(
    db: &mut Db,
    id: &str,
    password_hash: &str,
    now: i64,
) -> Result<Option<u32>, StoreError> {
    db.exec_write(
        r"UPDATE users SET password_hash = ?, token_version = token_version + 1,
              revoked_logins = NULL, updated_at = ?
          WHERE id = ?",
        (password_hash, clock::to_sql(now), id),
    )?;
    current_token_version(db, id)
}

/// Refuses every token issued so far (logout everywhere).
pub fn bump_token_version(db: &mut Db, id: &str, now: i64) -> Result<Option<u32>, StoreError> {
    db.exec_write(
        "UPDATE users SET token_version = token_version + 1, revoked_logins = NULL, updated_at = ? \
         WHERE id = ?",
        (clock::to_sql(now), id),
    )?;
    current_token_version(db, id)
}

/// The user's token version; `None` when the account is gone.
fn current_token_version(db: &mut Db, id: &str) -> Result<Option<u32>, StoreError> {
    db.exec_first("SELECT token_version FROM users WHERE id = ?", (id,))
}

pub fn update_profile(
    db: &mut Db,
    id: &str,
    name: Option<&str>,
    sync_enabled: Option<bool>,
    now: i64,
) -> Result<(), StoreError> {
    db.exec_write(
        r"UPDATE users SET name = COALESCE(:name, name),
              sync_enabled = COALESCE(:sync_enabled, sync_enabled), updated_at = :now
          WHERE id = :id",
        params! {
            "name" => name,
            "sync_enabled" => sync_enabled,
            "now" => clock::to_sql(now),
            "id" => id,
        },
    )?;
    Ok(())
}

/// Tables whose rows belong to one user, keyed by `user_id`. Erasure walks
/// this list; a test checks it against every table with a `user_id` column.
pub fn owned_tables() -> Vec<&'static str> {
    let mut tables: Vec<&'static str> = Entity::ALL.iter().map(|e| e.table()).collect();
    tables.extend([
        "refresh_tokens",
        "sync_status",
        "idempotency_keys",
        "conflict_log",
    ]);
    tables
}

/// Erases the user and everything they own. Runs inside the caller's
/// transaction, which holds the user's row lock.
pub fn erase(db: &mut Db, user: &User) -> Result<(), StoreError> {
    for table in owned_tables() {
        db.exec_write(
            &format!("DELETE FROM {table} WHERE user_id = ?"),
            (&user.id,),
        )?;
    }
    let user_bucket = format!("u:{}", user.id).into_bytes();
    db.exec_write("DELETE FROM rate_limits WHERE bucket = ?", (user_bucket,))?;
    db.exec_write("DELETE FROM users WHERE id = ?", (&user.id,))?;
    Ok(())
}

/// Counts an export against the user's hourly allowance, under the user's
/// row lock (the caller's transaction). `Ok(None)` when it fits; else
/// `Ok(Some(ms))`, the time until the window ends.
pub fn count_export(
    db: &mut Db,
    user_id: &str,
    now_ms: i64,
    limit: u32,
    window_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let row: Option<(Option<i64>, u32)> = db.exec_first(
        "SELECT exports_since, exports_count FROM users WHERE id = ? FOR UPDATE",
        (user_id,),
    )?;
    let Some((since, count)) = row else {
        return Ok(None);
    };
    let (since, count) = match since {
        Some(since) if now_ms - since < window_ms => (since, count),
        _ => (now_ms, 0),
    };
    if count >= limit {
        return Ok(Some(since + window_ms - now_ms));
    }
    db.exec_write(
        "UPDATE users SET exports_since = ?, exports_count = ? WHERE id = ?",
        (since, count + 1, user_id),
    )?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::RevokedLogins;

    #[test]
    fn a_revoked_login_is_found_until_a_later_revocation_forgets_it() {
        let list = RevokedLogins::default().with("fam-a", 1_000, 0);
        assert!(list.contains("fam-a"));
        assert!(!list.contains("fam-b"));
        let list = list.with("fam-b", 5_000, 2_000);
        assert!(!list.contains("fam-a"), "revoked before the cut: forgotten");
        assert!(list.contains("fam-b"));
        let list = list.with("fam-c", 6_000, 5_000);
        assert!(list.contains("fam-b"), "revoked at the cut: kept");
        assert_eq!(list.to_column().as_deref(), Some("fam-b@5000 fam-c@6000"));
    }

    #[test]
    fn the_column_reads_back_as_written_and_null_is_empty() {
        let list = RevokedLogins::default()
            .with("fam-a", 10, 0)
            .with("fam-a", 20, 0);
        assert_eq!(
            list.to_column().as_deref(),
            Some("fam-a@20"),
            "one entry each"
        );
        assert_eq!(
            RevokedLogins::parse(&list.to_column().unwrap_or_default()),
            list
        );
        assert_eq!(RevokedLogins::parse("").to_column(), None);
    }

    #[test]
    fn an_entry_without_a_readable_time_is_refused_for_good() {
        let list = RevokedLogins::parse("fam-a@soon fam-b");
        let later = list.with("fam-c", i64::MAX - 1, i64::MAX - 1);
        assert!(later.contains("fam-a") && later.contains("fam-b"));
    }
}
