//! Responses in the contract's envelope (section 1): a success around any
//! `Serialize` value, the error envelope with the headers each kind
//! requires, and the headers every response carries. Below both `app` and
//! `routes`.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::ctx::Seen;
use crate::error::{ApiError, RETRY_AFTER_UNAVAILABLE_SECS};
use crate::http::{Request, Response, Spool};

const JSON: &str = "application/json; charset=utf-8";

/// `{"success": true, "data": <data>}`.
pub fn ok<T: Serialize + ?Sized>(status: u16, data: &T) -> Response {
    ok_sized(status, data, 128)
}

/// The same, written into a body of `capacity` bytes to begin with: a
/// page of records knows its length, and a body grown by doubling copies
/// itself a dozen times on the way to 300 KB.
pub fn ok_sized<T: Serialize + ?Sized>(status: u16, data: &T, capacity: usize) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, T: ?Sized> {
        success: bool,
        data: &'a T,
    }
    let mut body = Vec::with_capacity(capacity);
    let written = serde_json::to_writer(
        &mut body,
        &Envelope {
            success: true,
            data,
        },
    );
    match written.map(|()| body) {
        Ok(body) => Response {
            status,
            headers: vec![("Content-Type", JSON.to_owned())],
            body,
            spool: None,
        },
        Err(error) => error_response(&ApiError::Internal(format!("serialize response: {error}"))),
    }
}

/// A success whose whole envelope was written to a spool (the export).
pub fn ok_spooled(status: u16, spool: Spool) -> Response {
    Response {
        status,
        headers: vec![("Content-Type", JSON.to_owned())],
        body: Vec::new(),
        spool: Some(spool),
    }
}

/// The contract's error envelope, with the headers each kind requires.
pub fn error_response(error: &ApiError) -> Response {
    let mut body = json!({"code": error.code(), "message": error.message()});
    if let (Some(details), Some(object)) = (error.details(), body.as_object_mut()) {
        object.insert("details".into(), Value::Object(details.clone()));
    }
    let mut response = Response::json(error.status(), &json!({"success": false, "error": body}));
    match error {
        ApiError::Unauthorized(_) | ApiError::InvalidCredentials => {
            response.headers.push(("WWW-Authenticate", "Bearer".into()))
        }
        ApiError::MethodNotAllowed { allow } => response.headers.push(("Allow", (*allow).into())),
        ApiError::RateLimited(state) => response
            .headers
            .push(("Retry-After", state.reset_secs.max(1).to_string())),
        ApiError::Unavailable(_) | ApiError::Contention(_) => response
            .headers
            .push(("Retry-After", RETRY_AFTER_UNAVAILABLE_SECS.to_string())),
        _ => {}
    }
    response
}

/// Where the request's time went, for `Server-Timing` (contract section
/// 7): the whole request, and the part spent waiting on MySQL.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub total: Duration,
    pub db: Option<Duration>,
}

fn millis(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// Headers every response carries, added once at the end.
pub fn finalize(
    response: &mut Response,
    config: Option<&Config>,
    request: Option<&Request>,
    request_id: &str,
    seen: &Seen,
    timing: Timing,
) {
    if (!response.body.is_empty() || response.spool.is_some())
        && response.header("Content-Type").is_none()
    {
        response.headers.push(("Content-Type", JSON.into()));
    }
    response.headers.push(("Cache-Control", "no-store".into()));
    response
        .headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    response
        .headers
        .push(("X-Request-Id", request_id.to_owned()));
    let server_timing = match timing.db {
        Some(db) => format!("db;dur={}, total;dur={}", millis(db), millis(timing.total)),
        None => format!("total;dur={}", millis(timing.total)),
    };
    response.headers.push(("Server-Timing", server_timing));
    if let Some(state) = seen.rate_limit {
        response
            .headers
            .push(("RateLimit-Limit", state.limit.to_string()));
        response
            .headers
            .push(("RateLimit-Remaining", state.remaining.to_string()));
        response
            .headers
            .push(("RateLimit-Reset", state.reset_secs.to_string()));
    }
    let Some(request) = request else { return };
    if request.https {
        response
            .headers
            .push(("Strict-Transport-Security", "max-age=31536000".into()));
    }
    let allowed_origin = match (config, &request.origin) {
        (Some(config), Some(origin)) => config
            .cors_allowed_origins
            .iter()
            .find(|allowed| *allowed == origin),
        _ => None,
    };
    if let Some(origin) = allowed_origin {
        response
            .headers
            .push(("Access-Control-Allow-Origin", origin.clone()));
        response.headers.push(("Vary", "Origin".into()));
        response.headers.push((
            "Access-Control-Expose-Headers",
            "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, \
             Server-Timing, Idempotent-Replayed"
                .into(),
        ));
        if request.method == "OPTIONS" {
            response.headers.push((
                "Access-Control-Allow-Methods",
                "GET, POST, PATCH, DELETE, OPTIONS".into(),
            ));
            response.headers.push((
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type, X-Device-Id, Idempotency-Key".into(),
            ));
            response
                .headers
                .push(("Access-Control-Max-Age", "600".into()));
        }
    }
}
