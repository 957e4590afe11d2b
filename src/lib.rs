//! healthsync as a library: every module of the binary, so the store and
//! the engine can be tested without a process in between. `main.rs` is
//! the transport over it; see ARCHITECTURE.md for the layers.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ctx;
pub mod engine;
pub mod error;
pub mod fcgi;
pub mod http;
pub mod log;
pub mod reply;
pub mod route;
pub mod routes;
pub mod store;
pub mod sync;
