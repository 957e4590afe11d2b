//! `POST /<slug>/sync` (push), `GET /<slug>` (pull) and `GET /sync/status`
//! (contract sections 4, 5 and 7): authenticate, parse, call the engine,
//! answer.

use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::auth::session;
use crate::config::Config;
use crate::ctx::{Ctx, Seen};
use crate::engine::wire::EntityResult;
use crate::engine::{self, validate, wire, Keyed, PullAsk, SyncAsk, Synced};
use crate::error::ApiError;
use crate::http::{Body, Request, Response};
use crate::reply::{ok, ok_sized};
use crate::route::Route;
use crate::routes::body;
use crate::store::clock;
use crate::store::records::{self, Cursor};
use crate::sync::digest::Digest;
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

/// Bytes an `Idempotency-Key` may have (contract section 9.1).
const IDEMPOTENCY_KEY_MAX_BYTES: usize = 128;

/// The `Idempotency-Key` header, checked: 1 to 128 visible ASCII
/// characters. With it, what a replay must match: the route and the
/// SHA-256 of the body bytes as sent (other whitespace or key order is
/// another body).
pub fn idempotency_key(request: &Request, route: Route) -> Result<Option<Keyed>, ApiError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    let visible = key.iter().all(|byte| (0x21..=0x7e).contains(byte));
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES || !visible {
        return Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 128 visible ASCII characters",
        ));
    }
    let body: &[u8] = match &request.body {
        Body::Bytes(bytes) => bytes,
        Body::TooLarge | Body::Truncated => &[],
    };
    Ok(Some(Keyed {
        key: key.clone(),
        route: route.name(),
        body_hash: Sha256::digest(body).into(),
    }))
}

/// The answer of a push or bulk: the rendered `data`, marked when it is a
/// replay of the key's first answer.
pub fn answered(answered: engine::Answered) -> Response {
    let mut response = ok(200, &answered.data);
    if answered.replayed {
        response
            .headers
            .push(("Idempotent-Replayed", "true".to_owned()));
    }
    response
}

/// A sync answer as the `data` to send and, with a key, to store.
pub fn render<T: serde::Serialize>(answer: &T) -> Result<Box<RawValue>, ApiError> {
    to_raw_value(answer).map_err(|error| ApiError::Internal(format!("render answer: {error}")))
}

/// The device for the log line, once its header passed the check.
pub fn checked_device(device: &Result<Option<&str>, ApiError>) -> Option<String> {
    device.as_ref().ok().copied().flatten().map(str::to_owned)
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

/// A push or a bulk: the token before the body (contract section 7, v2:
/// no one without a valid token makes the server parse anything), then
/// the body, the device and the key, each refusal kept for the engine to
/// answer in the contract's order, then the engine's transaction.
pub fn sync_route(
    ctx: &mut Ctx,
    request: &Request,
    route: Route,
    parse: impl FnOnce(&Request, &Config, i64) -> Result<SyncAsk, ApiError>,
    render: &dyn Fn(&Synced) -> Result<Box<RawValue>, ApiError>,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let claims = session::access_claims(&ctx.env, request, seen)?;
    let ask = parse(request, ctx.env.config, ctx.env.now_millis());
    let device = device_id(request);
    seen.device_id = checked_device(&device);
    let key = idempotency_key(request, route);
    let answer = engine::sync(ctx, &claims, &ask, &device, &key, render, seen)?;
    Ok(answered(answer))
}

pub fn post_sync(
    ctx: &mut Ctx,
    request: &Request,
    entity: Entity,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let empty = EntityResult::default();
    sync_route(
        ctx,
        request,
        Route::Push(entity),
        |request, config, now| parse_push_body(request, entity, config, now),
        &|synced: &Synced| {
            let result = synced.results.first().map_or(&empty, |(_, result)| result);
            render(&wire::PushAnswer {
                result,
                previous_sync_token: wire::Token(synced.previous),
                sync_token: wire::Token(synced.position),
            })
        },
        seen,
    )
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
    seen.device_id = checked_device(&device);
    let answer = engine::pull(ctx, &claims, entity, &ask, &device, seen)?;
    seen.sync = Some(answer.facts());
    Ok(ok_sized(200, &answer, answer.len_hint()))
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
    let user = &opened.user;
    // The digests and the position come from one row: exact together.
    let entities = records::counts(opened.db, &user.id)?
        .into_iter()
        .map(|(entity, total, _live, max_version)| {
            let status = wire::EntityStatus {
                count: total,
                max_version,
                digest: Digest(user.digest(entity)),
            };
            (entity, status)
        })
        .collect();
    Ok(ok(
        200,
        &wire::StatusAnswer {
            entities,
            sync_token: wire::Token(user.change_counter),
            oldest_sync_token: user.bounds().oldest_sync_token().map(wire::Token),
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
