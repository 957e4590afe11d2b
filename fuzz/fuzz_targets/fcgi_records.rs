//! Bytes as what the web server sent on one connection, to
//! `healthsync::fcgi::serve_connection`.
//!
//! The properties are checked in `tests/fuzz/checks/fcgi_records.rs`, which
//! `cargo test --test fuzz_regressions` runs on the seeds and regressions.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::fcgi_records::check(data));
