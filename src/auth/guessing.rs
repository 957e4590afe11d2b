//! Guessing limits (contract section 2, v2): wrong passwords count against
//! the account they name, on `/auth/login`, `/auth/password` and
//! `DELETE /account`. Ten failures for one account from one client address
//! within 15 minutes, or a hundred from all addresses within an hour, and
//! those routes refuse that account (429) until the window passes, a
//! correct password included. Successes never count, so nobody can lock
//! an owner out with fewer than a hundred wrong guesses an hour.

use std::net::{IpAddr, Ipv6Addr};

use sha2::{Digest, Sha256};

use crate::error::{ApiError, RateLimitState};
use crate::store::db::{Db, StoreError};
use crate::store::guesses::{self, Limit};

const PER_ADDRESS: Limit = Limit {
    count: 10,
    window_ms: 15 * 60 * 1000,
};
const PER_ACCOUNT: Limit = Limit {
    count: 100,
    window_ms: 60 * 60 * 1000,
};

/// The account a password attempt is for: the SHA-256 of its normalized
/// email, known account or not (an unknown one counts the same, so the
/// answer says nothing about which emails exist).
pub struct Account {
    key: [u8; 32],
    address: Vec<u8>,
}

impl Account {
    pub fn new(normalized_email: &str, client_address: &str) -> Account {
        Account {
            key: Sha256::digest(normalized_email.as_bytes()).into(),
            address: address_key(client_address).into_bytes(),
        }
    }

    /// 429 while either limit is full.
    pub fn check(&self, db: &mut Db, now_ms: i64) -> Result<(), ApiError> {
        let until = guesses::blocked_until(
            db,
            &self.key,
            &self.address,
            PER_ADDRESS,
            PER_ACCOUNT,
            now_ms,
        )
        .map_err(fail_closed)?;
        match until {
            None => Ok(()),
            Some(until) => Err(ApiError::RateLimited(RateLimitState {
                limit: PER_ADDRESS.count,
                remaining: 0,
                reset_secs: u32::try_from((until - now_ms + 999) / 1000)
                    .unwrap_or(u32::MAX)
                    .max(1),
            })),
        }
    }

    /// Counts a wrong password.
    pub fn failed(&self, db: &mut Db, now_ms: i64) -> Result<(), ApiError> {
        guesses::record_failure(db, &self.key, &self.address, now_ms, PER_ACCOUNT.window_ms)
            .map_err(fail_closed)
    }
}

/// A failure that cannot be counted refuses the attempt, like every limit.
fn fail_closed(error: StoreError) -> ApiError {
    ApiError::Unavailable(format!("guessing limit: {}", error.cause))
}

/// A client address as the limits compare it: IPv4 whole, IPv6 by its /64
/// prefix (one subscriber's whole network), an IPv4-mapped IPv6 address
/// as the IPv4 it is. Anything unparsable is compared as given.
pub fn address_key(address: &str) -> String {
    match address.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", Ipv6Addr::from(prefix))
            }
        },
        Err(_) => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_whole_for_ipv4_and_by_slash_64_for_ipv6() {
        assert_eq!(address_key("198.51.100.7"), "198.51.100.7");
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            address_key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            address_key("2001:db8:1:3::1"),
            address_key("2001:db8:1:2::1")
        );
        assert_eq!(address_key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(address_key("not an address"), "not an address");
    }
}
