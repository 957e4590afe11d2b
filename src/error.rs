//! `ApiError`: every way a request can fail, and the one table that maps each
//! to the contract's HTTP status and error code (contract section 1).
//!
//! Internal causes (SQL errors, config problems, panics) are kept for the log
//! line and never reach the client: `message()` is fixed text per kind.

use serde_json::{Map, Value};

use crate::store::db::{StoreError, StoreErrorKind, TxError};

/// Seconds a client should wait before retrying after a database fault.
pub const RETRY_AFTER_UNAVAILABLE_SECS: u32 = 2;

#[derive(Debug, Clone)]
pub enum ApiError {
    HttpsRequired,
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    Unauthorized(&'static str),
    InvalidCredentials,
    SyncDisabled,
    Validation {
        message: String,
        details: Map<String, Value>,
    },
    InvalidJson(String),
    EmailTaken,
    ResetRequired,
    /// An `Idempotency-Key` already used with another route or body
    /// (contract section 9.1).
    IdempotencyKeyReused,
    PayloadTooLarge(String),
    UnsupportedMediaType,
    RateLimited(RateLimitState),
    /// The database is down, refused us, dropped the connection, or a
    /// transaction kept deadlocking after its retries.
    Unavailable(String),
    /// A deadlock or lock-wait timeout: the transaction helper runs the
    /// whole transaction again; after the last try it is a 503 like
    /// `Unavailable`.
    Contention(String),
    /// A bug or a broken deployment (bad config). Logged, never shown.
    Internal(String),
}

/// What a rate-limit check saw; drives the 429 and the `RateLimit-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u32,
}

impl ApiError {
    /// A validation error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        let mut details = Map::new();
        details.insert(field.to_owned(), Value::String(message.clone()));
        ApiError::Validation { message, details }
    }

    /// A validation error about several fields at once (all of them).
    pub fn fields(details: Map<String, Value>) -> ApiError {
        let message = match details.len() {
            1 => details
                .values()
                .next()
                .and_then(Value::as_str)
                .unwrap_or("Invalid input")
                .to_owned(),
            _ => "Invalid input".to_owned(),
        };
        ApiError::Validation { message, details }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::HttpsRequired => 403,
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Unauthorized(_) | ApiError::InvalidCredentials => 401,
            ApiError::SyncDisabled => 403,
            ApiError::Validation { .. } | ApiError::InvalidJson(_) => 400,
            ApiError::EmailTaken => 409,
            ApiError::ResetRequired => 410,
            ApiError::IdempotencyKeyReused => 422,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::RateLimited(_) => 429,
            ApiError::Unavailable(_) | ApiError::Contention(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::HttpsRequired => "HTTPS_REQUIRED",
            ApiError::NotFound => "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::InvalidCredentials => "INVALID_CREDENTIALS",
            ApiError::SyncDisabled => "SYNC_DISABLED",
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::InvalidJson(_) => "INVALID_JSON",
            ApiError::EmailTaken => "EMAIL_TAKEN",
            ApiError::ResetRequired => "RESET_REQUIRED",
            ApiError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::Unavailable(_) | ApiError::Contention(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The message the client sees. Never carries an internal cause.
    pub fn message(&self) -> String {
        match self {
            ApiError::HttpsRequired => "This API is only served over HTTPS".into(),
            ApiError::NotFound => "No such route".into(),
            ApiError::MethodNotAllowed { .. } => "Method not allowed on this route".into(),
            ApiError::Unauthorized(why) => (*why).into(),
            ApiError::InvalidCredentials => "Invalid email or password".into(),
            ApiError::SyncDisabled => "Sync is switched off for this account".into(),
            ApiError::Validation { message, .. } => message.clone(),
            ApiError::InvalidJson(why) => why.clone(),
            ApiError::EmailTaken => "An account with this email already exists".into(),
            ApiError::ResetRequired => {
                "The sync cursor is older than purged deletions: pull again from no cursor".into()
            }
            ApiError::IdempotencyKeyReused => {
                "This Idempotency-Key was used with another route or body".into()
            }
            ApiError::PayloadTooLarge(why) => why.clone(),
            ApiError::UnsupportedMediaType => "Request bodies must be application/json".into(),
            ApiError::RateLimited(_) => "Too many requests: retry later".into(),
            ApiError::Unavailable(_) | ApiError::Contention(_) => {
                "The service is temporarily unavailable".into()
            }
            ApiError::Internal(_) => "Internal server error".into(),
        }
    }

    pub fn details(&self) -> Option<&Map<String, Value>> {
        match self {
            ApiError::Validation { details, .. } if !details.is_empty() => Some(details),
            _ => None,
        }
    }

    /// The cause worth a log line, if this error hides one from the client.
    pub fn internal_cause(&self) -> Option<&str> {
        match self {
            ApiError::Unavailable(cause)
            | ApiError::Contention(cause)
            | ApiError::Internal(cause) => Some(cause),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    /// The one place a store error gets its HTTP meaning: a database
    /// fault is a 503 (retried first when it is contention), never a 500;
    /// only the binary's own bug is a 500.
    fn from(error: StoreError) -> ApiError {
        match error.kind {
            StoreErrorKind::Contention => ApiError::Contention(error.cause),
            StoreErrorKind::Unavailable => ApiError::Unavailable(error.cause),
            StoreErrorKind::Broken => ApiError::Internal(error.cause),
        }
    }
}

impl TxError for ApiError {
    fn is_contention(&self) -> bool {
        matches!(self, ApiError::Contention(_))
    }

    fn after_attempts(self, attempts: u32) -> Self {
        match self {
            ApiError::Contention(cause) => {
                ApiError::Contention(format!("{cause} (after {attempts} attempts)"))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_contract_status() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::HttpsRequired, 403, "HTTPS_REQUIRED"),
            (ApiError::NotFound, 404, "NOT_FOUND"),
            (
                ApiError::MethodNotAllowed { allow: "GET" },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (ApiError::Unauthorized("x"), 401, "UNAUTHORIZED"),
            (ApiError::InvalidCredentials, 401, "INVALID_CREDENTIALS"),
            (ApiError::SyncDisabled, 403, "SYNC_DISABLED"),
            (ApiError::field("a", "b"), 400, "VALIDATION_ERROR"),
            (ApiError::InvalidJson("x".into()), 400, "INVALID_JSON"),
            (ApiError::EmailTaken, 409, "EMAIL_TAKEN"),
            (ApiError::ResetRequired, 410, "RESET_REQUIRED"),
            (
                ApiError::IdempotencyKeyReused,
                422,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                "PAYLOAD_TOO_LARGE",
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
            (
                ApiError::RateLimited(RateLimitState {
                    limit: 1,
                    remaining: 0,
                    reset_secs: 1,
                }),
                429,
                "RATE_LIMITED",
            ),
            (
                ApiError::Unavailable("x".into()),
                503,
                "SERVICE_UNAVAILABLE",
            ),
            (ApiError::Internal("x".into()), 500, "INTERNAL_ERROR"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
            // The CGI and FastCGI `Status:` line names it.
            assert_ne!(crate::http::reason_phrase(status), "Unknown", "{error:?}");
        }
    }

    #[test]
    fn internal_causes_never_reach_the_message() {
        let error = ApiError::Internal("secret table name".into());
        assert!(!error.message().contains("secret"));
        let error = ApiError::Unavailable("connection refused 10.0.0.1".into());
        assert!(!error.message().contains("10.0.0.1"));
    }
}
