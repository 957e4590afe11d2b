//! Who is calling: access and refresh tokens (`tokens`), passwords
//! (`password`), and rate limits (`ratelimit`). No SQL here; counters and
//! token rows are in `store/`.

pub mod password;
pub mod ratelimit;
pub mod tokens;
