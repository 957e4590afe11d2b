//! `/account`: read and change the profile and the sync switch, erase the
//! account with everything it owns, export every record (section 2).

use serde_json::{json, Map, Value};

use crate::app::{ok, ok_out, Ctx, Out};
use crate::auth::{password, ratelimit};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::routes::auth::check_name;
use crate::routes::body::{self, Fields};
use crate::routes::session;
use crate::store::records::{self, Cursor};
use crate::store::users::{self, Lock, User};
use crate::store::{clock, db};
use crate::sync::Entity;

fn account_json(conn: &mut mysql::Conn, user: &User) -> Result<Value, ApiError> {
    let mut counts = Map::new();
    for (entity, _total, live, _max) in records::counts(conn, &user.id)? {
        counts.insert(entity.bulk_key().into(), json!(live));
    }
    let devices: Vec<Value> = records::devices(conn, &user.id)?
        .into_iter()
        .map(|(device_id, at)| json!({"device_id": device_id, "last_sync_at": clock::to_rfc3339(at)}))
        .collect();
    Ok(json!({
        "user": {"id": user.id, "email": user.email, "name": user.name},
        "sync_enabled": user.sync_enabled,
        "last_sync_at": user.last_sync_at.map(clock::to_rfc3339),
        "counts": counts,
        "devices": devices,
    }))
}

pub fn get_account(ctx: &mut Ctx, request: &Request) -> Result<Response, ApiError> {
    let (conn, _, _, user) = session::open(ctx, request)?;
    body::json_object(request)?;
    Ok(ok(200, account_json(conn, &user)?))
}

pub fn patch_account(ctx: &mut Ctx, request: &Request) -> Result<Response, ApiError> {
    let (conn, env, claims, user) = session::open(ctx, request)?;
    let body = body::required_object(request)?;
    let mut fields = Fields::new();
    let name = fields
        .optional_string(&body, "name")
        .and_then(|raw| check_name(&mut fields, &raw));
    if matches!(body.get("name"), Some(Value::Null)) {
        fields.error("name", "must not be null");
    }
    let sync_enabled = fields.optional_bool(&body, "sync_enabled");
    fields.finish()?;
    let now = env.now_millis();
    let user = db::transaction(conn, |tx| {
        session::load_user(tx, &claims, Lock::Update)?;
        users::update_profile(tx, &user.id, name.as_deref(), sync_enabled, now)?;
        session::load_user(tx, &claims, Lock::None)
    })?;
    Ok(ok(200, account_json(conn, &user)?))
}

pub fn delete_account(ctx: &mut Ctx, request: &Request) -> Result<Response, ApiError> {
    let (conn, _, claims, user) = session::open(ctx, request)?;
    let body = body::required_object(request)?;
    let mut fields = Fields::new();
    let given = fields.string(&body, "password");
    fields.finish()?;
    let Some(given) = given else {
        return Err(ApiError::Internal("validated password missing".into()));
    };
    if !password::verify(&given, &user.password_hash) {
        return Err(ApiError::field("password", "is not the account's password"));
    }
    let email_bucket = ratelimit::email_bucket(&user.email);
    db::transaction(conn, |tx| {
        let locked = session::load_user(tx, &claims, Lock::Update)?;
        users::erase(tx, &locked, &email_bucket)
    })?;
    Ok(ok(200, json!({"erased": true})))
}

pub fn get_export(ctx: &mut Ctx, request: &Request) -> Result<Response, ApiError> {
    let (conn, env, claims, user) = session::open(ctx, request)?;
    body::json_object(request)?;
    let user_json = json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "sync_enabled": user.sync_enabled,
    });
    // Under the user's shared lock no push of this user commits midway, so
    // the export is one consistent state even while a device syncs.
    let (rows, _) = db::transaction(conn, |tx| {
        session::load_user(tx, &claims, Lock::Share)?;
        records::changes(
            tx,
            &user.id,
            &Entity::ALL,
            Cursor::AfterVersion(0),
            u64::MAX,
            usize::MAX,
        )
    })?;
    let mut data = vec![
        ("user", Out::Json(user_json)),
        (
            "exported_at",
            Out::Json(json!(clock::to_rfc3339(env.now_millis()))),
        ),
    ];
    for entity in Entity::ALL {
        let list = rows
            .iter()
            .filter(|row| row.entity == entity)
            .map(Out::Record)
            .collect();
        data.push((entity.bulk_key(), Out::List(list)));
    }
    Ok(ok_out(200, Out::Object(data)))
}
