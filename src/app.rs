//! `handle(ctx, request) -> Response`: the contract's precedence of checks
//! (HTTPS, defects, preflight, 404/405, then the route), dispatch to the
//! route functions, and the one place an `ApiError` becomes the contract's
//! envelope and headers.

use std::cell::{Cell, RefCell};

use mysql::Conn;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{ApiError, RateLimitState, RETRY_AFTER_UNAVAILABLE_SECS};
use crate::http::{Body, Request, Response};
use crate::route::{self, Route};
use crate::routes;
use crate::store::db::DbSlot;
use crate::store::records::Pulled;

/// What a route knows about its request besides the request itself.
/// Shared (`&Env`) so it can be read inside a transaction's closure while
/// the connection is borrowed; the two fields routes set are cells.
pub struct Env<'a> {
    pub config: &'a Config,
    /// The server clock at the start of the request.
    pub now: OffsetDateTime,
    /// "cgi" or "fastcgi".
    pub mode: &'static str,
    /// Set by the rate limiter; becomes the `RateLimit-*` headers.
    pub rate_limit: Cell<Option<RateLimitState>>,
    /// The authenticated user, for the log line.
    pub user_id: RefCell<Option<String>>,
}

impl Env<'_> {
    pub fn now_millis(&self) -> i64 {
        crate::store::clock::to_millis(self.now)
    }

    pub fn now_secs(&self) -> i64 {
        self.now.unix_timestamp()
    }
}

/// Per-request context handed to every route function.
pub struct Ctx<'a> {
    pub env: Env<'a>,
    db: &'a mut DbSlot,
}

impl<'a> Ctx<'a> {
    pub fn new(config: &'a Config, db: &'a mut DbSlot, mode: &'static str) -> Ctx<'a> {
        Ctx {
            env: Env {
                config,
                now: OffsetDateTime::now_utc(),
                mode,
                rate_limit: Cell::new(None),
                user_id: RefCell::new(None),
            },
            db,
        }
    }

    /// The database connection (opened on first use) beside the shared
    /// request context.
    pub fn conn(&mut self) -> Result<(&mut Conn, &Env<'a>), ApiError> {
        let conn = self.db.get(&self.env.config.db)?;
        Ok((conn, &self.env))
    }
}

/// What one request produced, for the transport and the log line.
pub struct Outcome {
    pub response: Response,
    pub route: Option<Route>,
    /// The hidden cause of a 500/503, for the log only.
    pub cause: Option<String>,
}

pub fn handle(ctx: &mut Ctx, request: &Request) -> Outcome {
    let mut route = None;
    let result = check_and_dispatch(ctx, request, &mut route);
    let (response, cause) = match result {
        Ok(response) => (response, None),
        Err(error) => {
            let cause = error.internal_cause().map(str::to_owned);
            (error_response(&error), cause)
        }
    };
    Outcome {
        response,
        route,
        cause,
    }
}

fn check_and_dispatch(
    ctx: &mut Ctx,
    request: &Request,
    route_out: &mut Option<Route>,
) -> Result<Response, ApiError> {
    // A redirect to HTTPS would come after the token already crossed the
    // network in clear: refuse instead.
    if ctx.env.config.require_https && !request.https {
        return Err(ApiError::HttpsRequired);
    }
    if let Some(defect) = &request.defect {
        return Err(match defect {
            ApiError::Validation { message, details } => ApiError::Validation {
                message: message.clone(),
                details: details.clone(),
            },
            other => ApiError::Internal(format!("unexpected request defect {other:?}")),
        });
    }
    if request.method == "OPTIONS" {
        return Ok(Response::no_content());
    }
    let route = route::parse(&request.method, &request.path)?;
    *route_out = Some(route);
    match route {
        Route::Health => routes::health::get_health(ctx),
        Route::Register => routes::auth::post_register(ctx, request),
        Route::Login => routes::auth::post_login(ctx, request),
        Route::Refresh => routes::auth::post_refresh(ctx, request),
        Route::Logout => routes::auth::post_logout(ctx, request),
        Route::Password => routes::auth::post_password(ctx, request),
        Route::AccountGet => routes::account::get_account(ctx, request),
        Route::AccountPatch => routes::account::patch_account(ctx, request),
        Route::AccountDelete => routes::account::delete_account(ctx, request),
        Route::AccountExport => routes::account::get_export(ctx, request),
        Route::Pull(entity) => routes::records::get_records(ctx, request, entity),
        Route::Push(entity) => routes::records::post_sync(ctx, request, entity),
        Route::Bulk => routes::bulk::post_bulk(ctx, request),
        Route::SyncStatus => routes::records::get_sync_status(ctx, request),
        Route::TestPanic => test_panic(),
        Route::TestEcho => Ok(test_echo(ctx, request)),
    }
}

/// A success envelope.
pub fn ok(status: u16, data: Value) -> Response {
    ok_out(status, Out::Json(data))
}

/// A response tree whose leaves may be pulled records, which carry their
/// stored JSON text and are written out without being parsed.
pub enum Out<'a> {
    Json(Value),
    Record(&'a Pulled),
    List(Vec<Out<'a>>),
    Object(Vec<(&'a str, Out<'a>)>),
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Json(value) => value.serialize(serializer),
            Out::Record(record) => record.serialize(serializer),
            Out::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Out::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

/// A success envelope around a tree with records in it.
pub fn ok_out(status: u16, data: Out) -> Response {
    let envelope = Out::Object(vec![
        ("success", Out::Json(Value::Bool(true))),
        ("data", data),
    ]);
    match serde_json::to_vec(&envelope) {
        Ok(body) => Response {
            status,
            headers: vec![("Content-Type", "application/json; charset=utf-8".to_owned())],
            body,
        },
        Err(error) => error_response(&ApiError::Internal(format!("serialize response: {error}"))),
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
        ApiError::Unauthorized(_) => response.headers.push(("WWW-Authenticate", "Bearer".into())),
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

/// Headers every response carries, added once at the end.
pub fn finalize(
    response: &mut Response,
    config: Option<&Config>,
    request: Option<&Request>,
    request_id: &str,
    rate_limit: Option<RateLimitState>,
) {
    if !response.body.is_empty() && response.header("Content-Type").is_none() {
        response
            .headers
            .push(("Content-Type", "application/json; charset=utf-8".into()));
    }
    response.headers.push(("Cache-Control", "no-store".into()));
    response
        .headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    response
        .headers
        .push(("X-Request-Id", request_id.to_owned()));
    if let Some(state) = rate_limit {
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
            "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"
                .into(),
        ));
        if request.method == "OPTIONS" {
            response.headers.push((
                "Access-Control-Allow-Methods",
                "GET, POST, PATCH, DELETE, OPTIONS".into(),
            ));
            response.headers.push((
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type, X-Device-Id".into(),
            ));
            response
                .headers
                .push(("Access-Control-Max-Age", "600".into()));
        }
    }
}

/// Panics on purpose, to prove a panic is a 500 and a FastCGI worker lives
/// on. Compiled in with the `test-hooks` feature only.
#[cfg(feature = "test-hooks")]
#[allow(clippy::panic)]
fn test_panic() -> Result<Response, ApiError> {
    panic!("test-hooks: deliberate panic");
}

#[cfg(not(feature = "test-hooks"))]
fn test_panic() -> Result<Response, ApiError> {
    Err(ApiError::NotFound)
}

/// What the binary received, without echoing any secret: the length of
/// the Authorization header, not its value.
fn test_echo(ctx: &Ctx, request: &Request) -> Response {
    if !cfg!(feature = "test-hooks") {
        return error_response(&ApiError::NotFound);
    }
    let body_len = match &request.body {
        Body::Bytes(bytes) => json!(bytes.len()),
        Body::TooLarge => json!("too_large"),
        Body::Truncated => json!("truncated"),
    };
    ok(
        200,
        json!({
            "method": request.method,
            "path": request.path,
            "query": request.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "authorization_len": request.authorization.as_ref().map_or(0, String::len),
            "body_len": body_len,
            "argv_len": request.argv_len,
            "mode": ctx.env.mode,
            "pid": std::process::id(),
        }),
    )
}
