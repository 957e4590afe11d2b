//! Password hashing with argon2id at OWASP's recommended parameters
//! (19 MiB, 2 passes, 1 lane), and the constant-work check used by login.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// A hash of a random password with the same parameters. Login checks an
/// unknown email against it, so an unknown email costs the same work as a
/// wrong password and timing does not tell them apart.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5pFWXoYVwjPUa1wVXK+cCYp1Ofc4t6gxFEbLa91TGBU";

fn hasher() -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| ApiError::Internal(format!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

pub fn hash(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::Internal(format!("argon2 hash: {e}")))
}

/// True when `password` matches `stored` (a PHC string). The parameters
/// come from the stored hash, so older hashes keep verifying.
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Does the work of one verification and returns false.
pub fn verify_dummy(password: &str) -> bool {
    let _ = verify(password, DUMMY_HASH);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery").unwrap_or_default();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterY", &stored));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn the_dummy_hash_is_well_formed_with_the_same_parameters() {
        let parsed = PasswordHash::new(DUMMY_HASH);
        assert!(parsed.is_ok(), "{parsed:?}");
        assert!(DUMMY_HASH.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!verify_dummy("anything"));
    }
}
