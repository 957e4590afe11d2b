//! `GET /<slug>/digest?prefix=` and `POST /<slug>/fetch` (contract
//! section 9.3): a device whose digest differs from the server's descends
//! the id prefixes whose digests differ and fetches only the records that
//! differ. Each answers in one round trip: the store's one statement
//! (which reads the user's position in its own snapshot) travels with the
//! session's opening.

use std::collections::HashSet;

use serde_json::Value;

use crate::auth::session;
use crate::ctx::{Ctx, Seen};
use crate::engine::validate::canonical_uuid;
use crate::engine::wire;
use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::reply::ok;
use crate::routes::body;
use crate::store::repair;
use crate::sync::Entity;

/// Hex digits a prefix may have: an id's first group, which has no hyphen.
const MAX_PREFIX_DIGITS: usize = 8;
/// Ids one fetch may ask for.
const MAX_FETCH_IDS: usize = 100;

/// `prefix`: 0 to 8 lower-case hex digits; absent is the whole entity.
pub fn parse_prefix(request: &Request) -> Result<String, ApiError> {
    if let Some(defect) = &request.query_defect {
        return Err(defect.clone());
    }
    let prefix = request.query_param("prefix").unwrap_or("");
    let hex = prefix
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if prefix.len() > MAX_PREFIX_DIGITS || !hex {
        return Err(ApiError::field(
            "prefix",
            "must be 0 to 8 lower-case hex digits",
        ));
    }
    Ok(prefix.to_owned())
}

pub fn get_digest(
    ctx: &mut Ctx,
    request: &Request,
    entity: Entity,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let claims = session::access_claims(&ctx.env, request, seen)?;
    let prefix = parse_prefix(request);
    let (mut sets, slot) =
        session::read_for_sync(ctx, &claims, seen, &prefix, |packet, prefix| {
            repair::push_prefix_digest(packet, &claims.user_id, entity, prefix)
        })?;
    let prefix = prefix?;
    let found = repair::read_prefix_digest(&mut sets, slot)?;
    let found = found.ok_or(ApiError::Unauthorized("The account no longer exists"))?;
    Ok(ok(200, &wire::PrefixAnswer { prefix, found }))
}

/// `{"ids": [1 to 100 ids]}`: each a UUID in any case (the nil UUID
/// refused), returned lower-case, each once, in the order first asked.
pub fn parse_fetch_body(request: &Request) -> Result<Vec<String>, ApiError> {
    let body = body::required_object(request)?;
    let list = match body.get("ids") {
        Some(Value::Array(list)) if (1..=MAX_FETCH_IDS).contains(&list.len()) => list,
        _ => {
            return Err(ApiError::field(
                "ids",
                format!("must be an array of 1 to {MAX_FETCH_IDS} record ids"),
            ))
        }
    };
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(list.len());
    for (index, value) in list.iter().enumerate() {
        let Some(id) = value.as_str().and_then(canonical_uuid) else {
            return Err(ApiError::field(
                "ids",
                format!("ids[{index}] is not a record id (a UUID, not nil)"),
            ));
        };
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

pub fn post_fetch(
    ctx: &mut Ctx,
    request: &Request,
    entity: Entity,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    // The token before the body (contract section 7, v2).
    let claims = session::access_claims(&ctx.env, request, seen)?;
    let ids = parse_fetch_body(request);
    let (mut sets, slot) = session::read_for_sync(ctx, &claims, seen, &ids, |packet, ids| {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        repair::push_fetch(packet, &claims.user_id, entity, &ids)
    })?;
    let ids = ids?;
    let (mut rows, position) = repair::read_fetch(&mut sets, slot, entity)?;
    let position = position.ok_or(ApiError::Unauthorized("The account no longer exists"))?;
    // In the order asked.
    rows.sort_by_key(|row| ids.iter().position(|id| *id == row.id));
    Ok(ok(
        200,
        &wire::FetchAnswer {
            entity,
            records: rows,
            sync_token: wire::Token(position),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, Params};

    fn request(query: &str) -> Request {
        let mut params = Params::new();
        params.insert("REQUEST_METHOD", "GET");
        params.insert("REQUEST_URI", format!("/api/meals/digest?{query}"));
        Request::from_params(&params, Body::Bytes(Vec::new()))
    }

    #[test]
    fn prefixes_are_up_to_eight_lower_case_hex_digits() {
        for good in ["", "prefix=", "prefix=0", "prefix=a1", "prefix=0123abcd"] {
            assert!(parse_prefix(&request(good)).is_ok(), "{good}");
        }
        assert_eq!(
            parse_prefix(&request("prefix=0f")).ok().as_deref(),
            Some("0f")
        );
        for bad in [
            "prefix=A",
            "prefix=g",
            "prefix=012345678",
            "prefix=-",
            "prefix=%20",
        ] {
            assert!(parse_prefix(&request(bad)).is_err(), "{bad}");
        }
    }
}
