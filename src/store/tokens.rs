//! The `refresh_tokens` table: refresh tokens stored only as SHA-256
//! hashes, grouped in families (one login's chain of rotations).

use mysql::{params, Row, Value};

use crate::store::clock;
use crate::store::db::{Db, StoreError};
use crate::store::users::{self, User};

pub struct NewToken<'a> {
    pub user_id: &'a str,
    pub hash: &'a [u8; 32],
    pub family_id: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
}

pub fn insert(db: &mut Db, token: &NewToken) -> Result<(), StoreError> {
    db.exec_write(
        r"INSERT INTO refresh_tokens (user_id, token_hash, family_id, issued_at, expires_at)
          VALUES (:user_id, :hash, :family, :issued, :expires)",
        params! {
            "user_id" => token.user_id,
            "hash" => &token.hash[..],
            "family" => token.family_id,
            "issued" => clock::to_sql(token.issued_at),
            "expires" => clock::to_sql(token.expires_at),
        },
    )?;
    Ok(())
}

/// A stored refresh token, as a refresh needs it.
pub struct Stored {
    pub family_id: String,
    pub spent_at: Option<i64>,
    /// The token this one was rotated into, once spent.
    pub successor: Option<[u8; 32]>,
    pub grace_used: bool,
    pub revoked: bool,
}

/// Reads and locks one token row: concurrent refreshes with one token are
/// serialized here, and each sees what the one before it did.
pub fn lock(db: &mut Db, user_id: &str, hash: &[u8; 32]) -> Result<Option<Stored>, StoreError> {
    let row: Option<Row> = db.exec_first(
        r"SELECT family_id, spent_at, grace_used, revoked_at IS NOT NULL, successor_hash
          FROM refresh_tokens WHERE user_id = ? AND token_hash = ? FOR UPDATE",
        (user_id, &hash[..]),
    )?;
    let Some(mut row) = row else { return Ok(None) };
    let family_id: String = row
        .take_opt(0)
        .and_then(Result::ok)
        .ok_or_else(|| StoreError::broken("refresh_tokens.family_id unreadable"))?;
    let spent_at = row
        .take_opt::<Value, _>(1)
        .and_then(Result::ok)
        .and_then(|v| clock::from_sql(&v));
    let grace_used = row.take_opt::<u8, _>(2).and_then(Result::ok).unwrap_or(0) != 0;
    let revoked = row.take_opt::<u8, _>(3).and_then(Result::ok).unwrap_or(1) != 0;
    let successor = row
        .take_opt::<Option<Vec<u8>>, _>(4)
        .and_then(Result::ok)
        .flatten()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
    Ok(Some(Stored {
        family_id,
        spent_at,
        successor,
        grace_used,
        revoked,
    }))
}

/// Spends a token, naming the one it was rotated into.
pub fn mark_spent(
    db: &mut Db,
    user_id: &str,
    hash: &[u8; 32],
    now: i64,
    successor: &[u8; 32],
) -> Result<(), StoreError> {
    db.exec_write(
        "UPDATE refresh_tokens SET spent_at = ?, successor_hash = ? WHERE user_id = ? AND token_hash = ?",
        (clock::to_sql(now), &successor[..], user_id, &hash[..]),
    )?;
    Ok(())
}

/// Whether the token a spent one was rotated into has been presented
/// itself (or is gone, or unknown: then the safe answer is yes).
pub fn successor_used(
    db: &mut Db,
    user_id: &str,
    successor: Option<[u8; 32]>,
) -> Result<bool, StoreError> {
    let Some(successor) = successor else {
        return Ok(true);
    };
    let unused: Option<u8> = db.exec_first(
        r"SELECT 1 FROM refresh_tokens
          WHERE user_id = ? AND token_hash = ? AND spent_at IS NULL AND revoked_at IS NULL",
        (user_id, &successor[..]),
    )?;
    Ok(unused.is_none())
}

pub fn mark_grace_used(db: &mut Db, user_id: &str, hash: &[u8; 32]) -> Result<(), StoreError> {
    db.exec_write(
        "UPDATE refresh_tokens SET grace_used = TRUE WHERE user_id = ? AND token_hash = ?",
        (user_id, &hash[..]),
    )?;
    Ok(())
}

/// Revokes a login: its refresh tokens, and its access tokens through
/// the user row's list of revoked logins (the caller holds the user-row
/// lock and read `user` under it). Entries revoked before
/// `forget_before_secs` leave the list: their access tokens have expired.
pub fn revoke_family(
    db: &mut Db,
    user: &User,
    family_id: &str,
    now: i64,
    forget_before_secs: i64,
) -> Result<(), StoreError> {
    db.exec_write(
        r"UPDATE refresh_tokens SET revoked_at = ?
          WHERE user_id = ? AND family_id = ? AND revoked_at IS NULL",
        (clock::to_sql(now), &user.id, family_id),
    )?;
    let logins = user
        .revoked_logins
        .with(family_id, now.div_euclid(1000), forget_before_secs);
    users::set_revoked_logins(db, &user.id, &logins)
}

/// Deletes every refresh token of the user (logout everywhere, password
/// change): the bumped token version refuses them anyway, and nothing is
/// kept that is not needed.
pub fn delete_all(db: &mut Db, user_id: &str) -> Result<(), StoreError> {
    db.exec_write("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))?;
    Ok(())
}

/// Deletes the user's expired tokens; called on login so the table does
/// not grow without a cron job.
pub fn delete_expired(db: &mut Db, user_id: &str, now: i64) -> Result<(), StoreError> {
    db.exec_write(
        "DELETE FROM refresh_tokens WHERE user_id = ? AND expires_at < ?",
        (user_id, clock::to_sql(now)),
    )?;
    Ok(())
}
