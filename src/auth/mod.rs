//! Who is calling: access and refresh tokens (`tokens`), passwords
//! (`password`), rate limits (`ratelimit`), wrong-password limits per
//! account (`guessing`), and the opening every
//! authenticated route shares (`session`: token, user, limit). No SQL
//! here; counters, users and token rows are in `store/`.

pub mod guessing;
pub mod password;
pub mod ratelimit;
pub mod session;
pub mod tokens;
