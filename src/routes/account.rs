//! `/account`: read and change the profile and the sync switch, erase the
//! account with everything it owns, export every record (section 2).

use serde_json::{json, Map, Value};

use crate::auth::guessing::Account;
use crate::auth::{password, session};
use crate::config::Config;
use crate::ctx::{AuthFacts, AuthFailure, AuthKind, Ctx, Seen};
use crate::error::{ApiError, RateLimitState};
use crate::http::{Request, Response};
use crate::reply::ok;
use crate::routes::auth::{check_guessing, check_name};
use crate::routes::body::{self, Fields};
use crate::store::clock;
use crate::store::db::{self, Db};
use crate::store::records::{self, Cursor, Pulled};
use crate::store::users::{self, Lock, User};
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

pub fn get_export(ctx: &mut Ctx, request: &Request, seen: &mut Seen) -> Result<Response, ApiError> {
    let opened = session::open(ctx, request, seen)?;
    body::json_object(request)?;
    let user = &opened.user;
    let claims = &opened.claims;
    // Under the user's row lock no push of this user commits midway, so
    // the export is one consistent state even while a device syncs; the
    // same lock counts the export against its hourly allowance.
    let now = opened.env.now_millis();
    let (rows, _) = db::transaction(opened.db, |tx, _attempt| {
        session::load_user(tx, claims, Lock::Update)?;
        if let Some(wait_ms) = users::count_export(tx, &user.id, now, EXPORTS_PER_HOUR, 3_600_000)?
        {
            return Err(ApiError::RateLimited(RateLimitState {
                limit: EXPORTS_PER_HOUR,
                remaining: 0,
                reset_secs: u32::try_from((wait_ms + 999) / 1000)
                    .unwrap_or(u32::MAX)
                    .max(1),
            }));
        }
        Ok::<_, ApiError>(records::changes(
            tx,
            &user.id,
            &Entity::ALL,
            Cursor::AfterVersion(0),
            u64::MAX,
            usize::MAX,
        )?)
    })?;
    Ok(ok(
        200,
        &Export {
            user,
            exported_at: opened.env.now_millis(),
            rows: &rows,
        },
    ))
}

/// `GET /account/export`: the user, the time, every record by entity.
struct Export<'a> {
    user: &'a User,
    exported_at: i64,
    rows: &'a [Pulled],
}

impl serde::Serialize for Export<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct OfEntity<'a>(Entity, &'a [Pulled]);
        impl serde::Serialize for OfEntity<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.1.iter().filter(|row| row.entity == self.0))
            }
        }
        let mut map = serializer.serialize_map(Some(2 + Entity::ALL.len()))?;
        map.serialize_entry(
            "user",
            &json!({
                "id": self.user.id,
                "email": self.user.email,
                "name": self.user.name,
                "sync_enabled": self.user.sync_enabled,
            }),
        )?;
        map.serialize_entry("exported_at", &clock::to_rfc3339(self.exported_at))?;
        for entity in Entity::ALL {
            map.serialize_entry(entity.bulk_key(), &OfEntity(entity, self.rows))?;
        }
        map.end()
    }
}
