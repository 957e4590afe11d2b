//! Route functions, one file per resource. Each is glue: authenticate,
//! rate-limit, parse the body into typed values, call `store/` inside one
//! transaction (and `sync/` for merges), shape the response.

pub mod account;
pub mod auth;
pub mod body;
pub mod bulk;
pub mod health;
pub mod push;
pub mod records;
pub mod session;
