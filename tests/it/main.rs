//! Integration tests: the real binary, spawned as CGI, against a real
//! MySQL/MariaDB, one throwaway database per test.

// Test code: a panic is how a test fails.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

mod accounts;
mod concurrency;
mod convergence;
mod exactly_once;
mod monitor;
mod openapi;
mod sync;
mod transport;
