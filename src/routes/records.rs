//! `POST /<slug>/sync` (push), `GET /<slug>` (pull) and `GET /sync/status`
//! (contract sections 4, 5 and 7), plus the cursor rules shared with bulk.

use mysql::prelude::Queryable;
use serde_json::{json, Map, Value};

use crate::app::{ok, ok_out, Ctx, Env, Out};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::routes::body;
use crate::routes::push::{self, Batch};
use crate::routes::session;
use crate::store::records::{self, Cursor, Pulled};
use crate::store::users::{Lock, User};
use crate::store::{clock, db};
use crate::sync::Entity;

pub const DEFAULT_PULL_LIMIT: usize = 100;
pub const MAX_PULL_LIMIT: usize = 1000;
/// `last_sync_at` and a device's last sync are rewritten at most this
/// often by reads, so a pull stays a read (no commit to wait for).
const LAST_SYNC_RESOLUTION_MS: i64 = 60_000;
const DEVICE_ID_MAX_CHARS: usize = 128;

/// A sync token names a position in the user's change sequence: its
/// decimal digits, one spelling per position.
pub fn sync_token(version: u64) -> Value {
    Value::String(version.to_string())
}

pub fn parse_sync_token(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub fn parse_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(limit)
            if (1..=MAX_PULL_LIMIT).contains(&limit)
                && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(limit)
        }
        _ => Err(format!("must be an integer from 1 to {MAX_PULL_LIMIT}")),
    }
}

/// Refuses a cursor older than purged tombstones (the device must pull
/// from scratch), or one from beyond the user's sequence (a token that is
/// not this user's, or a database restored from a backup).
pub fn check_cursor(user: &User, cursor: Option<Cursor>) -> Result<(), ApiError> {
    let too_old = match cursor {
        Some(Cursor::AfterVersion(version)) => {
            version < user.purged_version || version > user.change_counter
        }
        Some(Cursor::ReceivedAfter(millis)) => {
            matches!(user.purged_before, Some(purged) if millis < purged)
        }
        None => false,
    };
    if too_old {
        return Err(ApiError::ResetRequired);
    }
    Ok(())
}

/// The `X-Device-Id` header, checked.
pub fn device_id(request: &Request) -> Result<Option<&str>, ApiError> {
    match request.device_id.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(id)
            if id.chars().count() > DEVICE_ID_MAX_CHARS || id.chars().any(char::is_control) =>
        {
            Err(ApiError::field(
                "X-Device-Id",
                "must be 1 to 128 printable characters",
            ))
        }
        Some(id) => Ok(Some(id)),
    }
}

/// Records the sync in `users.last_sync_at` and, with `X-Device-Id`, in
/// `sync_status`. A read skips the first write when it is recent.
pub fn record_sync(
    conn: &mut impl Queryable,
    env: &Env,
    user: &User,
    device: Option<&str>,
    position: u64,
    wrote: bool,
) -> Result<(), ApiError> {
    let now = env.now_millis();
    let recent = matches!(user.last_sync_at, Some(at) if now - at < LAST_SYNC_RESOLUTION_MS);
    if !wrote && !recent {
        records::touch_last_sync(conn, &user.id, now)?;
    }
    if let Some(device) = device {
        records::record_device(conn, &user.id, device, now, position)?;
    }
    Ok(())
}

/// The server receive time of a write: the clock read under the user's
/// lock, kept strictly after the user's previous write, so that
/// `server_updated_at > since` is exact.
pub fn receive_time(user: &User) -> i64 {
    let now = clock::to_millis(time::OffsetDateTime::now_utc());
    match user.last_write_at {
        Some(last) if last >= now => last + 1,
        _ => now,
    }
}

pub fn post_sync(ctx: &mut Ctx, request: &Request, entity: Entity) -> Result<Response, ApiError> {
    // Parsed and validated before any lock is taken; reported in the
    // contract's order (after 401 and 429) inside the transaction.
    let now = ctx.env.now_millis();
    let batch = parse_push_body(request, entity, ctx.env.config, now);
    let device = device_id(request);
    let claims = session::access_claims(&ctx.env, request)?;
    let (conn, env) = ctx.conn()?;
    let data = db::transaction(conn, |tx| {
        let user = session::load_user(tx, &claims, Lock::Update)?;
        session::limit_user(env, tx, &user.id)?;
        let batch = batch.as_ref().map_err(Clone::clone)?;
        let device = device.clone()?;
        if !user.sync_enabled {
            return Err(ApiError::SyncDisabled);
        }
        let received_at = receive_time(&user);
        let mut counter = user.change_counter;
        let applied = push::apply(tx, &user.id, batch, &mut counter, received_at)?;
        let wrote = counter != user.change_counter;
        if wrote {
            records::advance_user(tx, &user.id, counter, received_at, env.now_millis())?;
        }
        record_sync(tx, env, &user, device, counter, wrote)?;
        let mut data = applied.to_json();
        data.insert(
            "previous_sync_token".into(),
            sync_token(user.change_counter),
        );
        data.insert("sync_token".into(), sync_token(counter));
        Ok(data)
    })?;
    Ok(ok(200, Value::Object(data)))
}

fn parse_push_body(
    request: &Request,
    entity: Entity,
    config: &crate::config::Config,
    now: i64,
) -> Result<Batch, ApiError> {
    let mut body = body::required_object(request)?;
    let list = match body.remove(entity.list_key()) {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                entity.list_key(),
                "is required (an array of records)",
            ))
        }
        Some(_) => {
            return Err(ApiError::field(
                entity.list_key(),
                "must be an array of records",
            ))
        }
    };
    if list.len() > config.max_batch {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} records in one request; the limit is {}",
            list.len(),
            config.max_batch
        )));
    }
    Ok(push::validate(entity, list, config, now))
}

/// The cursor of a pull's query: `sync_token` wins over `since`.
fn parse_pull_query(request: &Request) -> Result<(Option<Cursor>, usize), ApiError> {
    if let Some(defect) = &request.query_defect {
        return Err(defect.clone());
    }
    let mut errors = Map::new();
    let mut cursor = None;
    if let Some(token) = request.query_param("sync_token") {
        match parse_sync_token(token) {
            Some(version) => cursor = Some(Cursor::AfterVersion(version)),
            None => {
                errors.insert(
                    "sync_token".into(),
                    json!("is not a sync token from this server"),
                );
            }
        }
    } else if let Some(since) = request.query_param("since") {
        // An offset's `+` written unencoded in a URL arrives as a space;
        // RFC 3339 has no space, so it can only have been that.
        match clock::parse_rfc3339(&since.replace(' ', "+")) {
            Some(millis) => cursor = Some(Cursor::ReceivedAfter(millis)),
            None => {
                errors.insert("since".into(), json!("must be RFC 3339 with an offset"));
            }
        }
    }
    let mut limit = DEFAULT_PULL_LIMIT;
    if let Some(text) = request.query_param("limit") {
        match parse_limit(text) {
            Ok(value) => limit = value,
            Err(message) => {
                errors.insert("limit".into(), json!(message));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    Ok((cursor, limit))
}

pub fn get_records(ctx: &mut Ctx, request: &Request, entity: Entity) -> Result<Response, ApiError> {
    let query = parse_pull_query(request);
    let device = device_id(request);
    let (conn, env, claims, user) = session::open(ctx, request)?;
    let (cursor, limit) = query?;
    let device = device?;
    if !user.sync_enabled {
        return Err(ApiError::SyncDisabled);
    }
    check_cursor(&user, cursor)?;

    let from = cursor.unwrap_or(Cursor::AfterVersion(0));
    let (page, position_if_complete) = match cursor {
        Some(Cursor::ReceivedAfter(_)) => {
            // A shared lock on the user row waits for the user's writers
            // to commit, so every write with an earlier receive time is
            // visible and none still to come can get one.
            db::transaction(conn, |tx| {
                let locked = session::load_user(tx, &claims, Lock::Share)?;
                let page = records::changes(tx, &user.id, &[entity], from, u64::MAX, limit)?;
                Ok((page, Some(locked.change_counter)))
            })?
        }
        _ => (
            records::changes(conn, &user.id, &[entity], from, u64::MAX, limit)?,
            None,
        ),
    };
    let (rows, has_more) = page;
    let next = next_position(&rows, has_more, cursor, position_if_complete);
    record_sync(conn, env, &user, device, next, false)?;
    let list = rows.iter().map(Out::Record).collect();
    Ok(ok_out(
        200,
        Out::Object(vec![
            (entity.list_key(), Out::List(list)),
            ("has_more", Out::Json(json!(has_more))),
            ("next_sync_token", Out::Json(sync_token(next))),
        ]),
    ))
}

/// Where the next page starts: after the last record sent; on a complete
/// page read under the user's lock, the user's position then; otherwise
/// the request's own cursor (never an earlier position).
fn next_position(
    rows: &[Pulled],
    has_more: bool,
    cursor: Option<Cursor>,
    position_if_complete: Option<u64>,
) -> u64 {
    let last = rows.last().map(|row| row.version);
    match (has_more, position_if_complete) {
        (false, Some(position)) => position.max(last.unwrap_or(0)),
        _ => match (last, cursor) {
            (Some(version), _) => version,
            (None, Some(Cursor::AfterVersion(version))) => version,
            (None, _) => 0,
        },
    }
}

pub fn get_sync_status(ctx: &mut Ctx, request: &Request) -> Result<Response, ApiError> {
    let (conn, _, _, user) = session::open(ctx, request)?;
    if !user.sync_enabled {
        return Err(ApiError::SyncDisabled);
    }
    let mut data = Map::new();
    for (entity, total, _live, max_version) in records::counts(conn, &user.id)? {
        data.insert(
            entity.bulk_key().into(),
            json!({"count": total, "max_version": max_version}),
        );
    }
    data.insert("sync_token".into(), sync_token(user.change_counter));
    Ok(ok(200, Value::Object(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_tokens_are_plain_decimal_positions() {
        assert_eq!(parse_sync_token("0"), Some(0));
        assert_eq!(parse_sync_token("42"), Some(42));
        assert_eq!(parse_sync_token("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "abc",
            " 1",
            "18446744073709551616",
            "0x10",
        ] {
            assert_eq!(parse_sync_token(bad), None, "{bad:?}");
        }
        assert_eq!(sync_token(7), json!("7"));
    }

    #[test]
    fn limits_are_checked_never_clamped() {
        assert_eq!(parse_limit("1"), Ok(1));
        assert_eq!(parse_limit("1000"), Ok(1000));
        for bad in ["0", "1001", "-5", "abc", "", "+5", "5.0"] {
            assert!(parse_limit(bad).is_err(), "{bad:?}");
        }
    }
}
