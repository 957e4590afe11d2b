//! Route functions, one file per resource. Each is glue: authenticate,
//! parse the body into typed values, call the engine or `store/`, answer.
//! What a route learns on the way (the user, the rate-limit state) it
//! writes into the `Seen` it is handed.

pub mod account;
pub mod auth;
pub mod body;
pub mod bulk;
pub mod conflicts;
pub mod health;
pub mod openapi;
pub mod records;
pub mod repair;
