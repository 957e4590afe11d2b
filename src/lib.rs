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
pub mod report;
pub mod route;
pub mod routes;
pub mod smoke;
pub mod store;
pub mod sync;

/// The version this binary reports (`--version`, `/health`, the request
/// log): the package version, or `HEALTHSYNC_VERSION` when the build set
/// it, so two builds of one commit (an upgrade rehearsal) tell apart.
pub const VERSION: &str = match option_env!("HEALTHSYNC_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};
