//! `/account`: read and change the profile and the sync switch, erase the
//! account with everything it owns, export every record (section 2).

use std::io::{BufWriter, Write};

use serde_json::{json, Map, Value};

use crate::auth::guessing::Account;
use crate::auth::{password, session};
use crate::config::Config;
use crate::ctx::{AuthFacts, AuthFailure, AuthKind, Ctx, Seen};
use crate::error::{ApiError, RateLimitState};
use crate::http::{Request, Response, Spool};
use crate::reply::{ok, ok_spooled};
use crate::routes::auth::{check_guessing, check_name};
use crate::routes::body::{self, Fields};
use crate::store::db::{self, Db};
use crate::store::records::{self, Pulled};
use crate::store::users::{self, Lock, User};
use crate::store::{clock, conflicts};
use crate::sync::Entity;

fn account_json(db: &mut Db, config: &Config, user: &User) -> Result<Value, ApiError> {
    let (max_records, max_data_bytes) = (config.max_records_per_user, config.max_user_data_bytes);
    let mut counts = Map::new();
    for (entity, _total, live, _max) in records::counts(db, &user.id)? {
        counts.insert(entity.bulk_key().into(), json!(live));
    }
    let devices: Vec<Value> = records::devices(db, &user.id)?
        .into_iter()
        .map(|(device_id, at)| json!({"device_id": device_id, "last_sync_at": clock::to_rfc3339(at)}))
        .collect();
    Ok(json!({
        "user": {"id": user.id, "email": user.email, "name": user.name},
        "sync_enabled": user.sync_enabled,
        "last_sync_at": user.last_sync_at.map(clock::to_rfc3339),
        "counts": counts,
        "devices": devices,
        "usage": {
            "records": user.record_count,
            "data_bytes": user.data_bytes,
            "max_records": max_records,
            "max_data_bytes": max_data_bytes,
        },
    }))
}

/// The opening of a route whose body is required: token, user, limit,
/// then the body, and the collector of its field errors.
fn open_with_body<'c, 'a>(
    ctx: &'c mut Ctx<'a>,
    request: &Request,
    seen: &mut Seen,
) -> Result<(session::Opened<'c, 'a>, Map<String, Value>, Fields), ApiError> {
    let opened = session::open(ctx, request, seen)?;
    let body = body::required_object(request)?;
    Ok((opened, body, Fields::new()))
}

pub fn get_account(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let opened = session::open(ctx, request, seen)?;
    body::json_object(request)?;
    Ok(ok(
        200,
        &account_json(opened.db, opened.env.config, &opened.user)?,
    ))
}

pub fn patch_account(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let (opened, body, mut fields) = open_with_body(ctx, request, seen)?;
    let name = fields
        .optional_string(&body, "name")
        .and_then(|raw| check_name(&mut fields, &raw));
    if matches!(body.get("name"), Some(Value::Null)) {
        fields.error("name", "must not be null");
    }
    let sync_enabled = fields.optional_bool(&body, "sync_enabled");
    fields.finish()?;
    let now = opened.env.now_millis();
    let claims = &opened.claims;
    let user_id = &opened.user.id;
    let user = db::transaction(opened.db, |tx, _attempt| {
        session::load_user(tx, claims, Lock::Update)?;
        users::update_profile(tx, user_id, name.as_deref(), sync_enabled, now)?;
        session::load_user(tx, claims, Lock::None)
    })?;
    Ok(ok(200, &account_json(opened.db, opened.env.config, &user)?))
}

pub fn delete_account(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    seen.auth = AuthFacts::attempt(AuthKind::AccountErase);
    let (opened, body, mut fields) = open_with_body(ctx, request, seen)?;
    let given = fields.string(&body, "password");
    fields.finish()?;
    let Some(given) = given else {
        return Err(ApiError::Internal("validated password missing".into()));
    };
    let account = Account::new(&opened.user.email, &request.remote_addr);
    check_guessing(&account, opened.db, opened.env.now_millis(), seen)?;
    if !password::verify(&given, &opened.user.password_hash) {
        seen.auth_failed(AuthFailure::WrongPassword);
        account.failed(opened.db, opened.env.now_millis())?;
        return Err(ApiError::field("password", "is not the account's password"));
    }
    let claims = &opened.claims;
    db::transaction(opened.db, |tx, _attempt| {
        let locked = session::load_user(tx, claims, Lock::Update)?;
        Ok::<(), ApiError>(users::erase(tx, &locked)?)
    })?;
    Ok(ok(200, &json!({"erased": true})))
}

/// Exports per user per hour (contract section 7, v2): each reads every
/// record the user holds.
const EXPORTS_PER_HOUR: u32 = 10;

/// `GET /account/export`: the user, the time, every record by entity, in
/// memory that does not grow with the account (contract section 7, v2).
/// The rows go from MySQL, one at a time, through serde into a spool file
/// (`http::Spool`), which the transport copies out a piece at a time.
pub fn get_export(ctx: &mut Ctx, request: &Request, seen: &mut Seen) -> Result<Response, ApiError> {
    let opened = session::open(ctx, request, seen)?;
    body::json_object(request)?;
    let user = &opened.user;
    let claims = &opened.claims;
    let now = opened.env.now_millis();
    // Counted under the user's row lock, in a transaction of its own: the
    // reading below holds no lock, so the user's devices go on syncing.
    db::transaction(opened.db, |tx, _attempt| {
        session::load_user(tx, claims, Lock::Update)?;
        match users::count_export(tx, &user.id, now, EXPORTS_PER_HOUR, 3_600_000)? {
            None => Ok(()),
            Some(wait_ms) => Err(ApiError::RateLimited(RateLimitState {
                limit: EXPORTS_PER_HOUR,
                remaining: 0,
                reset_secs: u32::try_from((wait_ms + 999) / 1000)
                    .unwrap_or(u32::MAX)
                    .max(1),
            })),
        }
    })?;
    let file = Spool::temp_file(&opened.env.config.spool_dir).map_err(spool_error)?;
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    // One snapshot: the export is one state of the account even while a
    // device pushes.
    db::read_snapshot(opened.db, |snapshot| {
        write_export(snapshot, user, now, &mut out)
    })?;
    let file = out
        .into_inner()
        .map_err(|error| spool_error(error.into_error()))?;
    let spool = Spool::from_written(file).map_err(spool_error)?;
    Ok(ok_spooled(200, spool))
}

/// The export in the success envelope, `{"success":true,"data":{...}}`:
/// serde writes every value and key; only the punctuation between the
/// streamed pieces is written here.
fn write_export(db: &mut Db, user: &User, now: i64, out: &mut dyn Write) -> Result<(), ApiError> {
    out_write(out, b"{\"success\":true,\"data\":{\"user\":")?;
    piece(
        out,
        &json!({
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "sync_enabled": user.sync_enabled,
        }),
    )?;
    out_write(out, b",\"exported_at\":")?;
    piece(out, &clock::to_rfc3339(now))?;
    for entity in Entity::ALL {
        out_write(out, b",")?;
        piece(out, entity.bulk_key())?;
        out_write(out, b":[")?;
        let mut first = true;
        records::each_record(db, &user.id, entity, |row: Pulled| {
            if !first {
                out_write(out, b",")?;
            }
            first = false;
            piece(out, &row)
        })?;
        out_write(out, b"]")?;
    }
    // The conflict log (contract section 9.4).
    out_write(out, b",\"conflicts\":[")?;
    let mut first = true;
    conflicts::each(db, &user.id, |entry: conflicts::Entry| {
        if !first {
            out_write(out, b",")?;
        }
        first = false;
        piece(out, &entry)
    })?;
    out_write(out, b"]}}")
}

fn piece<T: serde::Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> Result<(), ApiError> {
    serde_json::to_writer(&mut *out, value).map_err(|error| match error.io_error_kind() {
        Some(_) => spool_error(std::io::Error::from(error)),
        None => ApiError::Internal(format!("export: serialize: {error}")),
    })
}

fn out_write(out: &mut dyn Write, bytes: &[u8]) -> Result<(), ApiError> {
    out.write_all(bytes).map_err(spool_error)
}

/// A full disk or quota is the host's passing state (503, try later); any
/// other failure of the spool directory is a deployment fault (500).
fn spool_error(error: std::io::Error) -> ApiError {
    let cause = format!("export spool (TMPDIR): {error}");
    match error.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => ApiError::Unavailable(cause),
        _ => ApiError::Internal(cause),
    }
}
