//! Fault tests: the binary under database and process faults. The
//! database faults run against a private MariaDB each test starts, kills
//! and restarts itself (`server.rs`), never the machine's; the FastCGI
//! worker kill runs behind a real Apache (`deploy/local-server`) on the
//! machine's MariaDB. After every fault: a 503 with `Retry-After` where the
//! database failed (never a 500), no acknowledged write lost, nothing
//! stored twice, no half batch.
//!
//! Every test is `#[ignore]`d as slow; `deploy/test` runs them
//! (`--include-ignored`), or `cargo test --features test-hooks --test
//! faults -- --include-ignored`. Needs `mariadb-install-db` and `mariadbd`
//! (the mariadb-server package), and for the FastCGI test what the
//! end-to-end tests need (`deploy/local-server deps`).

// Test code: a panic is how a test fails.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod client;
mod server;

#[allow(dead_code)]
#[path = "../e2e/support/http.rs"]
mod http;

mod database;
mod fastcgi;
