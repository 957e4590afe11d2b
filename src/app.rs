//! `handle(ctx, request) -> Outcome`: the contract's precedence of checks
//! (HTTPS, defects, preflight, 404/405, then the route), dispatch to the
//! route functions, and the one place a route's `ApiError` becomes the
//! contract's envelope (`reply::error_response`).

use serde_json::json;

use crate::ctx::{Ctx, Seen};
use crate::error::ApiError;
use crate::http::{Body, Request, Response};
use crate::reply::{error_response, ok};
use crate::route::{self, Route};
use crate::routes;

/// What one request produced, for the transport and the log line.
pub struct Outcome {
    pub response: Response,
    pub route: Option<Route>,
    /// The hidden cause of a 500/503, for the log only.
    pub cause: Option<String>,
    /// The user and the rate-limit state, for headers and the log line.
    pub seen: Seen,
}

pub fn handle(ctx: &mut Ctx, request: &Request) -> Outcome {
    let mut route = None;
    let mut seen = Seen::default();
    let result = check_and_dispatch(ctx, request, &mut route, &mut seen);
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
        seen,
    }
}

fn check_and_dispatch(
    ctx: &mut Ctx,
    request: &Request,
    route_out: &mut Option<Route>,
    seen: &mut Seen,
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
        Route::Health => routes::health::get_health(ctx, seen),
        Route::OpenApi => Ok(routes::openapi::get_openapi(ctx.env.config)),
        Route::Register => routes::auth::post_register(ctx, request, seen),
        Route::Login => routes::auth::post_login(ctx, request, seen),
        Route::Refresh => routes::auth::post_refresh(ctx, request, seen),
        Route::Logout => routes::auth::post_logout(ctx, request, seen),
        Route::Password => routes::auth::post_password(ctx, request, seen),
        Route::AccountGet => routes::account::get_account(ctx, request, seen),
        Route::AccountPatch => routes::account::patch_account(ctx, request, seen),
        Route::AccountDelete => routes::account::delete_account(ctx, request, seen),
        Route::AccountExport => routes::account::get_export(ctx, request, seen),
        Route::Pull(entity) => routes::records::get_records(ctx, request, entity, seen),
        Route::Push(entity) => routes::records::post_sync(ctx, request, entity, seen),
        Route::Bulk => routes::bulk::post_bulk(ctx, request, seen),
        Route::SyncStatus => routes::records::get_sync_status(ctx, request, seen),
        Route::Digest(entity) => routes::repair::get_digest(ctx, request, entity, seen),
        Route::Fetch(entity) => routes::repair::post_fetch(ctx, request, entity, seen),
        Route::Conflicts => routes::conflicts::get_conflicts(ctx, request, seen),
        Route::TestPanic => test_panic(),
        Route::TestEcho => Ok(test_echo(ctx, request)),
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
        &json!({
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
