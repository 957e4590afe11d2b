//! CGI/FastCGI params and a body through body reading,
//! `Request::from_params`, routing, and the query, device-id and body
//! parsers.
//!
//! The properties are checked in `tests/fuzz/checks/cgi_request.rs`, which
//! `cargo test --test fuzz_regressions` runs on the seeds and regressions.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cgi_request::check(data));
