//! `/auth/*`: register, login, refresh (with rotation and reuse
//! detection), logout, password change (contract section 2).

use serde_json::{json, Map, Value};

use crate::auth::guessing::Account;
use crate::auth::{password, session, tokens};
use crate::ctx::{AuthFacts, AuthFailure, AuthKind, Ctx, Env, Seen};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::reply::ok;
use crate::routes::body::{self, Fields};
use crate::store::db::{self, Db, StoreError};
use crate::store::tokens as token_rows;
use crate::store::users::{self, Inserted, Lock, NewUser, User};

/// A spent refresh token presented again within this many seconds of its
/// rotation is rotated once more (a response lost on a mobile network must
/// not log the user out); later, it revokes its family.
pub const REFRESH_GRACE_SECS: i64 = 30;

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 256;
pub const EMAIL_MAX_CHARS: usize = 254;
pub const NAME_MAX_CHARS: usize = 255;

/// Trimmed and lower-cased; at most 254 characters, exactly one `@` with
/// text on both sides, no white space or control characters.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.chars().count() > EMAIL_MAX_CHARS {
        return Err("must be at most 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email)
        }
        _ => Err("must be an email address (one @ with text on both sides)"),
    }
}

fn check_password(fields: &mut Fields, field: &str, password: &str) {
    let length = password.chars().count();
    if length < PASSWORD_MIN_CHARS {
        fields.error(
            field,
            format!("must be at least {PASSWORD_MIN_CHARS} characters"),
        );
    } else if length > PASSWORD_MAX_CHARS {
        fields.error(
            field,
            format!("must be at most {PASSWORD_MAX_CHARS} characters"),
        );
    }
}

pub fn check_name(fields: &mut Fields, raw: &str) -> Option<String> {
    let name = raw.trim();
    let length = name.chars().count();
    if length == 0 {
        fields.error("name", "must not be empty");
        return None;
    }
    if length > NAME_MAX_CHARS {
        fields.error(
            "name",
            format!("must be at most {NAME_MAX_CHARS} characters"),
        );
        return None;
    }
    if name.chars().any(char::is_control) {
        fields.error("name", "must not contain control characters");
        return None;
    }
    Some(name.to_owned())
}

/// The body of register and login, after the client address is counted
/// (every request counts, well-formed or not). Per account only wrong
/// passwords count (`guessing`), never a request as such.
fn limited_credentials_body(
    env: &Env,
    db: &mut Db,
    request: &Request,
    seen: &mut Seen,
) -> Result<Map<String, Value>, ApiError> {
    session::limit_address(env, db, &request.remote_addr, seen)?;
    body::required_object(request)
}

/// The account's guessing limit; a refusal is noted for the log line.
pub fn check_guessing(
    account: &Account,
    db: &mut Db,
    now_ms: i64,
    seen: &mut Seen,
) -> Result<(), ApiError> {
    account.check(db, now_ms).inspect_err(|error| {
        if matches!(error, ApiError::RateLimited(_)) {
            seen.auth_failed(AuthFailure::GuessingLimit);
        }
    })
}

fn token_data(pair: &tokens::Pair) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("token".into(), json!(pair.access));
    data.insert("refresh_token".into(), json!(pair.refresh));
    data.insert("expires_in".into(), json!(tokens::ACCESS_TTL_SECS));
    data
}

/// A new pair for an existing user at a token version, in a login.
fn issue_for(
    env: &Env,
    user: &User,
    token_version: u32,
    family_id: &str,
) -> Result<tokens::Pair, ApiError> {
    let subject = tokens::Subject {
        user_id: &user.id,
        email: &user.email,
        token_version,
        family_id,
    };
    tokens::issue_pair(&env.config.jwt_secret, &subject, env.now_secs())
}

fn store_refresh(
    db: &mut Db,
    user_id: &str,
    family_id: &str,
    pair: &tokens::Pair,
    now: i64,
) -> Result<(), StoreError> {
    token_rows::insert(
        db,
        &token_rows::NewToken {
            user_id,
            hash: &pair.refresh_hash,
            family_id,
            issued_at: now,
            expires_at: pair.refresh_expires_at,
        },
    )
}

pub fn post_register(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    seen.auth = AuthFacts::attempt(AuthKind::Register);
    let (db, env) = ctx.db()?;
    let body = limited_credentials_body(env, db, request, seen)?;

    let mut fields = Fields::new();
    let email = fields
        .string(&body, "email")
        .and_then(|raw| match normalize_email(&raw) {
            Ok(email) => Some(email),
            Err(problem) => {
                fields.error("email", problem);
                None
            }
        });
    let password = fields.string(&body, "password");
    if let Some(password) = &password {
        check_password(&mut fields, "password", password);
    }
    let name = fields
        .string(&body, "name")
        .and_then(|raw| check_name(&mut fields, &raw));
    fields.finish()?;
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(ApiError::Internal(
            "validated register fields missing".into(),
        ));
    };

    // Hash before the transaction: no lock is held for the time it takes.
    let password_hash = password::hash(&password)?;
    let user_id = uuid::Uuid::new_v4().to_string();
    let now = env.now_millis();
    let family_id = uuid::Uuid::new_v4().to_string();
    let subject = tokens::Subject {
        user_id: &user_id,
        email: &email,
        token_version: 0,
        family_id: &family_id,
    };
    let pair = tokens::issue_pair(&env.config.jwt_secret, &subject, env.now_secs())?;
    db::transaction(db, |tx, _attempt| {
        let inserted = users::insert(
            tx,
            &NewUser {
                id: &user_id,
                email: &email,
                name: &name,
                password_hash: &password_hash,
                now,
            },
        )?;
        if inserted == Inserted::EmailTaken {
            return Err(ApiError::EmailTaken);
        }
        Ok(store_refresh(tx, &user_id, &family_id, &pair, now)?)
    })?;
    seen.user_id = Some(user_id.clone());
    let mut data = token_data(&pair);
    data.insert(
        "user".into(),
        json!({"id": user_id, "email": email, "name": name}),
    );
    Ok(ok(201, &data))
}

pub fn post_login(ctx: &mut Ctx, request: &Request, seen: &mut Seen) -> Result<Response, ApiError> {
    seen.auth = AuthFacts::attempt(AuthKind::Login);
    let (db, env) = ctx.db()?;
    let body = limited_credentials_body(env, db, request, seen)?;
    let mut fields = Fields::new();
    let email = fields.string(&body, "email");
    let password = fields.string(&body, "password");
    fields.finish()?;
    let (Some(email), Some(password)) = (email, password) else {
        return Err(ApiError::Internal("validated login fields missing".into()));
    };

    // Unknown email and wrong password: same answer, same work, same count.
    let normalized = normalize_email(&email);
    let account = Account::new(
        normalized.as_deref().unwrap_or(email.trim()),
        &request.remote_addr,
    );
    check_guessing(&account, db, env.now_millis(), seen)?;
    let user = match normalized {
        Ok(email) => users::find_by_email(db, &email)?,
        Err(_) => None,
    };
    let user = match user {
        Some(user) if password::verify(&password, &user.password_hash) => user,
        Some(_) => {
            seen.auth_failed(AuthFailure::WrongPassword);
            account.failed(db, env.now_millis())?;
            return Err(ApiError::InvalidCredentials);
        }
        None => {
            password::verify_dummy(&password);
            seen.auth_failed(AuthFailure::UnknownAccount);
            account.failed(db, env.now_millis())?;
            return Err(ApiError::InvalidCredentials);
        }
    };
    seen.user_id = Some(user.id.clone());
    let now = env.now_millis();
    let family_id = uuid::Uuid::new_v4().to_string();
    let pair = issue_for(env, &user, user.token_version, &family_id)?;
    db::transaction(db, |tx, _attempt| {
        // Under the user's row, shared: a login racing the account's
        // erasure either lands before it (and is erased with it) or finds
        // no account, never leaving a token of an erased user behind.
        users::find_by_id(tx, &user.id, Lock::Share)?
            .ok_or(ApiError::Unauthorized("The account no longer exists"))?;
        token_rows::delete_expired(tx, &user.id, now)?;
        Ok::<(), ApiError>(store_refresh(tx, &user.id, &family_id, &pair, now)?)
    })?;
    let mut data = token_data(&pair);
    data.insert(
        "user".into(),
        json!({"id": user.id, "email": user.email, "name": user.name}),
    );
    Ok(ok(200, &data))
}

enum Refreshed {
    Rotated(tokens::Pair),
    /// A spent token came back too late or too often: its family is
    /// revoked (committed), and the request is refused.
    Revoked,
}

pub fn post_refresh(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    seen.auth = AuthFacts::attempt(AuthKind::Refresh);
    let (db, env) = ctx.db()?;
    let presented = tokens::bearer(request)?;
    let claims = tokens::verify_refresh(&env.config.jwt_secret, presented)?;
    seen.user_id = Some(claims.user_id.clone());
    session::limit_address(env, db, &request.remote_addr, seen)?;
    // No fields are read, but a body, if any, must still be well formed.
    body::json_object(request)?;

    let hash = tokens::hash(presented);
    let now = env.now_millis();
    let outcome = db::transaction(db, |tx, _attempt| {
        // The user row first, as pushes, logout and password changes take
        // it: a rotation and a revocation of one family never interleave,
        // so a revocation cannot miss the token a rotation inserts.
        let user = users::find_by_id(tx, &claims.user_id, Lock::Update)?
            .ok_or(ApiError::Unauthorized("The account no longer exists"))?;
        if user.token_version != claims.token_version {
            return Err(ApiError::Unauthorized("The refresh token has been revoked"));
        }
        let stored = token_rows::lock(tx, &claims.user_id, &hash)?
            .ok_or(ApiError::Unauthorized("The refresh token is not valid"))?;
        if stored.revoked {
            return Err(ApiError::Unauthorized("The refresh token has been revoked"));
        }
        let pair = issue_for(env, &user, user.token_version, &stored.family_id)?;
        match stored.spent_at {
            None => token_rows::mark_spent(tx, &claims.user_id, &hash, now, &pair.refresh_hash)?,
            // The answer to the first rotation was lost: rotate once more,
            // but only while the token it was rotated into is unused. A
            // replay after the owner moved on is a stolen token.
            Some(spent_at)
                if !stored.grace_used
                    && now - spent_at <= REFRESH_GRACE_SECS * 1000
                    && !token_rows::successor_used(tx, &claims.user_id, stored.successor)? =>
            {
                token_rows::mark_grace_used(tx, &claims.user_id, &hash)?
            }
            Some(_) => {
                revoke_login(tx, &user, &stored.family_id, now)?;
                return Ok(Refreshed::Revoked);
            }
        }
        store_refresh(tx, &user.id, &stored.family_id, &pair, now)?;
        Ok(Refreshed::Rotated(pair))
    })?;
    match outcome {
        Refreshed::Rotated(pair) => Ok(ok(200, &token_data(&pair))),
        Refreshed::Revoked => {
            seen.auth_failed(AuthFailure::TokenReuse);
            Err(ApiError::Unauthorized(
                "The refresh token was already used: every session of this login is revoked",
            ))
        }
    }
}

/// Revokes a login (refresh-token family) with its access tokens, under
/// the user-row lock the caller took.
fn revoke_login(tx: &mut Db, user: &User, family_id: &str, now: i64) -> Result<(), StoreError> {
    let forget_before = now.div_euclid(1000) - tokens::REVOKED_LOGIN_KEEP_SECS;
    token_rows::revoke_family(tx, user, family_id, now, forget_before)
}

/// The opening of the `/auth/*` routes that take an access token: the
/// token and its user (401), then the client address's limit (429).
fn open_by_address<'c, 'a>(
    ctx: &'c mut Ctx<'a>,
    request: &Request,
    seen: &mut Seen,
) -> Result<(&'c mut Db, &'c Env<'a>, tokens::AccessClaims, User), ApiError> {
    let (db, env) = ctx.db()?;
    let claims = session::access_claims(env, request, seen)?;
    let user = session::load_user(db, &claims, Lock::None)?;
    session::limit_address(env, db, &request.remote_addr, seen)?;
    Ok((db, env, claims, user))
}

pub fn post_logout(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    seen.auth = AuthFacts::attempt(AuthKind::Logout);
    let (db, env, claims, _user) = open_by_address(ctx, request, seen)?;
    let body = body::json_object(request)?.unwrap_or_default();
    let mut fields = Fields::new();
    let refresh_token = fields.optional_string(&body, "refresh_token");
    fields.finish()?;
    let now = env.now_millis();
    match refresh_token {
        Some(refresh_token) => {
            let hash = tokens::hash(&refresh_token);
            db::transaction(db, |tx, _attempt| {
                // The user row first, as a rotation takes it.
                let user = users::find_by_id(tx, &claims.user_id, Lock::Update)?
                    .ok_or(ApiError::Unauthorized("The account no longer exists"))?;
                let stored = token_rows::lock(tx, &claims.user_id, &hash)?.ok_or_else(|| {
                    ApiError::field("refresh_token", "is not a refresh token of this account")
                })?;
                Ok::<(), ApiError>(revoke_login(tx, &user, &stored.family_id, now)?)
            })?;
            Ok(ok(200, &json!({"logged_out": "session"})))
        }
        None => {
            db::transaction(db, |tx, _attempt| {
                users::find_by_id(tx, &claims.user_id, Lock::Update)?;
                users::bump_token_version(tx, &claims.user_id, now)?;
                token_rows::delete_all(tx, &claims.user_id)
            })?;
            Ok(ok(200, &json!({"logged_out": "all"})))
        }
    }
}

pub fn post_password(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    seen.auth = AuthFacts::attempt(AuthKind::PasswordChange);
    let (db, env, claims, user) = open_by_address(ctx, request, seen)?;
    let body = body::required_object(request)?;
    let mut fields = Fields::new();
    let current = fields.string(&body, "current_password");
    let new = fields.string(&body, "new_password");
    if let Some(new) = &new {
        check_password(&mut fields, "new_password", new);
    }
    fields.finish()?;
    let (Some(current), Some(new)) = (current, new) else {
        return Err(ApiError::Internal(
            "validated password fields missing".into(),
        ));
    };
    let account = Account::new(&user.email, &request.remote_addr);
    check_guessing(&account, db, env.now_millis(), seen)?;
    if !password::verify(&current, &user.password_hash) {
        seen.auth_failed(AuthFailure::WrongPassword);
        account.failed(db, env.now_millis())?;
        return Err(ApiError::field(
            "current_password",
            "is not the account's password",
        ));
    }
    let new_hash = password::hash(&new)?;
    let now = env.now_millis();
    let family_id = uuid::Uuid::new_v4().to_string();
    let pair = db::transaction(db, |tx, _attempt| {
        // Locked and checked again: a concurrent password change or
        // logout-everywhere since the read above wins.
        let locked = session::load_user(tx, &claims, Lock::Update)?;
        if locked.password_hash != user.password_hash {
            return Err(ApiError::Unauthorized("The token has been revoked"));
        }
        let token_version = users::set_password(tx, &user.id, &new_hash, now)?
            .ok_or(ApiError::Unauthorized("The account no longer exists"))?;
        token_rows::delete_all(tx, &user.id)?;
        let pair = issue_for(env, &user, token_version, &family_id)?;
        store_refresh(tx, &user.id, &family_id, &pair, now)?;
        Ok(pair)
    })?;
    Ok(ok(200, &token_data(&pair)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lower_cased_and_checked() {
        let check = |raw: &str, expected: Result<&str, ()>| {
            assert_eq!(
                normalize_email(raw).as_deref().map_err(|_| ()),
                expected,
                "{raw:?}"
            );
        };
        check("  Alice@Example.COM ", Ok("alice@example.com"));
        check("JOSÉ@example.com", Ok("josé@example.com"));
        check("no-at-sign", Err(()));
        check("two@@example.com", Err(()));
        check("a@b@c", Err(()));
        check("@example.com", Err(()));
        check("alice@", Err(()));
        check("ali ce@example.com", Err(()));
        check("alice@example.com\r\nBcc: x", Err(()));
        check("alice@example.com\r\n", Ok("alice@example.com"));
        check("a\r\nb@example.com", Err(()));
        check(&format!("{}@example.com", "a".repeat(300)), Err(()));
    }
}
