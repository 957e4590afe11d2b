//! Test support for the end-to-end suite: the Apache harness wrapper, a
//! small HTTP client, the contract's envelope checks and the scenario runner.
//! Nothing here knows a route's own semantics; that lives in `scenarios.rs`.

pub mod contract;
pub mod harness;
pub mod http;
pub mod runner;
