//! `POST /<slug>/sync` (push), `GET /<slug>` (pull) and `GET /sync/status`
//! (contract sections 4, 5 and 7): authenticate, parse, call the engine,
//! answer.

use serde_json::{json, Map, Value};

use crate::auth::session;
use crate::config::Config;
use crate::ctx::{Ctx, Seen};
use crate::engine::{self, validate, wire, PullAsk, SyncAsk};
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::reply::ok;
use crate::routes::body;
use crate::store::clock;
use crate::store::records::{self, Cursor};
use crate::sync::Entity;

const DEVICE_ID_MAX_CHARS: usize = 128;

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

pub fn parse_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(limit)
            if (1..=engine::MAX_PULL_LIMIT).contains(&limit)
                && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(limit)
        }
        _ => Err(format!(
            "must be an integer from 1 to {}",
            engine::MAX_PULL_LIMIT
        )),
    }
}

pub fn post_sync(
    ctx: &mut Ctx,
    request: &Request,
    entity: Entity,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    // The token before the body (contract section 7, v2): no one without
    // a valid token makes the server parse anything.
    let claims = session::access_claims(&ctx.env, request, seen)?;
    let ask = parse_push_body(request, entity, ctx.env.config, ctx.env.now_millis());
    let device = device_id(request);
    let synced = engine::sync(ctx, &claims, &ask, &device, seen)?;
    let result = synced.results.into_iter().next().map(|(_, result)| result);
    Ok(ok(
        200,
        &wire::PushAnswer {
            result: result.unwrap_or_default(),
            previous_sync_token: wire::Token(synced.previous),
            sync_token: wire::Token(synced.position),
        },
    ))
}

pub fn parse_push_body(
    request: &Request,
    entity: Entity,
    config: &Config,
    now: i64,
) -> Result<SyncAsk, ApiError> {
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
    Ok(SyncAsk {
        batches: vec![validate::validate(entity, list, config, now)],
        page: None,
    })
}

/// The cursor of a pull's query: `sync_token` wins over `since`, but
/// both must be well formed (as in a bulk body), so a client's bad
/// `since` is never hidden by its token.
pub fn parse_pull_query(request: &Request) -> Result<PullAsk, ApiError> {
    if let Some(defect) = &request.query_defect {
        return Err(defect.clone());
    }
    let mut errors = Map::new();
    let mut token = None;
    let mut since = None;
    if let Some(text) = request.query_param("sync_token") {
        match wire::Token::parse(text) {
            Some(version) => token = Some(Cursor::AfterVersion(version)),
            None => {
                errors.insert(
                    "sync_token".into(),
                    json!("is not a sync token from this server"),
                );
            }
        }
    }
    if let Some(text) = request.query_param("since") {
        // An offset's `+` written unencoded in a URL arrives as a space;
        // RFC 3339 has no space, so it can only have been that.
        match clock::parse_rfc3339(&text.replace(' ', "+")) {
            Some(millis) => since = Some(Cursor::ReceivedAfter(millis)),
            None => {
                errors.insert("since".into(), json!("must be RFC 3339 with an offset"));
            }
        }
    }
    let cursor = token.or(since);
    let mut limit = engine::DEFAULT_PULL_LIMIT;
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
    Ok(PullAsk { cursor, limit })
}

pub fn get_records(
    ctx: &mut Ctx,
    request: &Request,
    entity: Entity,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let ask = parse_pull_query(request);
    let device = device_id(request);
    let claims = session::access_claims(&ctx.env, request, seen)?;
    let answer = engine::pull(ctx, &claims, entity, &ask, &device, seen)?;
    Ok(ok(200, &answer))
}

pub fn get_sync_status(
    ctx: &mut Ctx,
    request: &Request,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let opened = session::open(ctx, request, seen)?;
    if !opened.user.sync_enabled {
        return Err(ApiError::SyncDisabled);
    }
    let entities = records::counts(opened.db, &opened.user.id)?
        .into_iter()
        .map(|(entity, total, _live, max_version)| (entity, total, max_version))
        .collect();
    Ok(ok(
        200,
        &wire::StatusAnswer {
            entities,
            sync_token: wire::Token(opened.user.change_counter),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_never_clamped() {
        assert_eq!(parse_limit("1"), Ok(1));
        assert_eq!(parse_limit("1000"), Ok(1000));
        for bad in ["0", "1001", "-5", "abc", "", "+5", "5.0"] {
            assert!(parse_limit(bad).is_err(), "{bad:?}");
        }
    }
}
