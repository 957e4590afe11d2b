//! Access and refresh tokens: HS256 JWTs through `jsonwebtoken`, with the
//! algorithm pinned (every other one and `none` refused), `exp`, `iat`,
//! `typ`, the user id and the user's token version required, and a leeway
//! of 30 s. Refresh tokens are also stored (hashed) so they can be spent,
//! rotated and revoked; see `routes::auth`.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::Request;

pub const ACCESS_TTL_SECS: i64 = 3600;
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
/// Clock difference tolerated on `exp` and `nbf` (the crate's default is 60).
pub const LEEWAY_SECS: u64 = 30;
/// How long a revoked login stays on the user row's list: every access
/// token of it has expired by then (an hour and the leeway), with room
/// for front ends whose clocks differ.
pub const REVOKED_LOGIN_KEEP_SECS: i64 = 2 * ACCESS_TTL_SECS;

const ACCESS: &str = "access";
const REFRESH: &str = "refresh";

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub user_id: String,
    pub email: String,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
    pub token_version: u32,
    /// The login (refresh-token family) this token was issued in: revoking
    /// the family refuses its access tokens too. Absent from tokens issued
    /// before it existed, which then answer only to the token version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefreshClaims {
    pub user_id: String,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
    pub jti: String,
    pub token_version: u32,
}

/// A freshly issued access/refresh pair.
pub struct Pair {
    pub access: String,
    pub refresh: String,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_at: i64,
}

/// Who a pair is for: the user, their token version and the login
/// (refresh-token family) it belongs to.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    pub token_version: u32,
    pub family_id: &'a str,
}

pub fn issue_pair(secret: &[u8], subject: &Subject, now_secs: i64) -> Result<Pair, ApiError> {
    let Subject {
        user_id,
        email,
        token_version,
        family_id,
    } = *subject;
    let key = EncodingKey::from_secret(secret);
    let header = Header::new(Algorithm::HS256);
    let access = AccessClaims {
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        iat: now_secs,
        exp: now_secs + ACCESS_TTL_SECS,
        typ: ACCESS.to_owned(),
        token_version,
        sid: Some(family_id.to_owned()),
    };
    let refresh = RefreshClaims {
        user_id: user_id.to_owned(),
        iat: now_secs,
        exp: now_secs + REFRESH_TTL_SECS,
        typ: REFRESH.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        token_version,
    };
    let sign_error = |e: jsonwebtoken::errors::Error| ApiError::Internal(format!("jwt sign: {e}"));
    let access = encode(&header, &access, &key).map_err(sign_error)?;
    let refresh_token = encode(&header, &refresh, &key).map_err(sign_error)?;
    Ok(Pair {
        access,
        refresh_hash: hash(&refresh_token),
        refresh: refresh_token,
        refresh_expires_at: (now_secs + REFRESH_TTL_SECS) * 1000,
    })
}

/// SHA-256 of a token: what the database keeps instead of the token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

const INVALID: ApiError = ApiError::Unauthorized("Invalid or expired token");

pub fn verify_access(secret: &[u8], token: &str) -> Result<AccessClaims, ApiError> {
    let claims = decode::<AccessClaims>(token, &DecodingKey::from_secret(secret), &validation())
        .map_err(|_| INVALID)?
        .claims;
    if claims.typ != ACCESS {
        return Err(ApiError::Unauthorized(
            "A refresh token cannot be used here",
        ));
    }
    Ok(claims)
}

pub fn verify_refresh(secret: &[u8], token: &str) -> Result<RefreshClaims, ApiError> {
    let claims = decode::<RefreshClaims>(token, &DecodingKey::from_secret(secret), &validation())
        .map_err(|_| INVALID)?
        .claims;
    if claims.typ != REFRESH {
        return Err(ApiError::Unauthorized(
            "An access token cannot be used here",
        ));
    }
    Ok(claims)
}

/// The bearer token of a request, or 401.
pub fn bearer(request: &Request) -> Result<&str, ApiError> {
    let header = request
        .authorization
        .as_deref()
        .ok_or(ApiError::Unauthorized("Missing bearer token"))?;
    let (scheme, token) = header.trim().split_once(' ').ok_or(INVALID)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized("Missing bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("Missing bearer token"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_pair_verifies_as_its_own_type_only() {
        let subject = Subject {
            user_id: "u1",
            email: "a@b.c",
            token_version: 3,
            family_id: "f1",
        };
        let issued = issue_pair(SECRET, &subject, now());
        assert!(issued.is_ok(), "{:?}", issued.as_ref().err());
        let Ok(pair) = issued else { return };
        let access =
            verify_access(SECRET, &pair.access).map(|a| (a.user_id, a.token_version, a.sid));
        assert_eq!(
            access.ok(),
            Some(("u1".to_owned(), 3, Some("f1".to_owned())))
        );
        assert!(verify_refresh(SECRET, &pair.refresh).is_ok());
        assert!(verify_access(SECRET, &pair.refresh).is_err());
        assert!(verify_refresh(SECRET, &pair.access).is_err());
        assert!(verify_access(b"another key another key another k", &pair.access).is_err());
        assert_eq!(hash(&pair.refresh), pair.refresh_hash);
    }

    #[test]
    fn expiry_allows_thirty_seconds_of_leeway_and_no_more() {
        let key = EncodingKey::from_secret(SECRET);
        let token = |exp: i64| {
            let claims = AccessClaims {
                user_id: "u".into(),
                email: "e".into(),
                iat: now() - 7200,
                exp,
                typ: ACCESS.into(),
                token_version: 0,
                sid: None,
            };
            encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap_or_default()
        };
        assert!(verify_access(SECRET, &token(now() - 20)).is_ok());
        assert!(verify_access(SECRET, &token(now() - 45)).is_err());
    }
}
