//! End-to-end tests: the binary under test served by a private Apache (the
//! repo's `.htaccess`, `deploy/local-server`), in FastCGI mode (mod_fcgid)
//! and in CGI mode (mod_cgid), each with its own fresh MariaDB database.
//!
//! One `#[test]` per mode starts its instances once, runs every scenario as
//! a named step and reports all failures together; dropping the instances
//! stops Apache and drops the databases. Needs Apache, mod_fcgid and MariaDB
//! on 127.0.0.1:3306 (`deploy/local-server deps`) and the binary built with
//! the test hooks: `cargo test --features test-hooks`. Both tests are
//! `#[ignore]`d as slow; `deploy/test` runs them (`--include-ignored`).
//!
//! `smoke.rs` runs `healthsync smoke` against instances of its own (slow)
//! and against nothing, a TLS stand-in and bad arguments (fast: these need
//! no Apache, only openssl and python3).

// Assertions are the point of a test; the crate-wide lints against
// unwrap/expect/panic are for the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod flows;
mod request_log;
mod scenarios;
mod smoke;
mod support;

use support::harness::{require_local_services, Instance, Mode};
use support::runner::Runner;

fn run_every_scenario(mode: Mode) {
    require_local_services(mode);
    // The server writes the request log of its own, rotated every few
    // dozen lines, so FastCGI workers holding the file open meet rotations.
    let log = request_log::LogDir::new(mode);
    let log_settings = log.settings();
    // Both instances start at once: each start is mostly waiting on Apache.
    let (server, database_down) = std::thread::scope(|scope| {
        let database_down = scope.spawn(move || Instance::start(mode, &["DB_PORT=1"]));
        // The flows make more auth requests from one address than the
        // default limit allows in a minute.
        let mut overrides = vec!["AUTH_RATE_LIMIT_PER_MINUTE=1000"];
        overrides.extend(log_settings.iter().map(String::as_str));
        let server = Instance::start(mode, &overrides);
        (
            server,
            database_down
                .join()
                .expect("start the database-down instance"),
        )
    });

    let mut runner = Runner::new(mode);
    runner.run("health answers ok with limits", || {
        scenarios::health_answers_ok_with_limits(&server)
    });
    runner.run("a non-UTF-8 header byte is no obstacle", || {
        scenarios::a_non_utf8_header_byte_is_no_obstacle(&server)
    });
    runner.run("an unknown route is 404 NOT_FOUND", || {
        scenarios::unknown_route_is_not_found(&server)
    });
    runner.run("DELETE /api/health is 405 with an Allow header", || {
        scenarios::wrong_method_is_not_allowed_with_allow_header(&server)
    });
    runner.run("a malformed JSON body is 400 INVALID_JSON", || {
        scenarios::malformed_json_is_invalid_json(&server)
    });
    runner.run("a 6 MiB body is 413 and the client receives it", || {
        scenarios::six_mib_body_is_payload_too_large_and_the_client_sees_it(&server)
    });
    runner.run("a bearer token reaches the binary", || {
        scenarios::bearer_token_reaches_the_binary(&server)
    });
    runner.run("a query without '=' is not a CLI command", || {
        scenarios::query_without_equals_is_not_a_cli_command(&server)
    });
    runner.run("a non-UTF-8 path is 400 VALIDATION_ERROR", || {
        scenarios::non_utf8_path_is_a_validation_error(&server)
    });
    runner.run("a panic is an opaque 500 and the worker lives on", || {
        scenarios::panic_is_an_opaque_internal_error_and_the_worker_lives_on(&server)
    });
    runner.run("a database that is down is 503 with Retry-After", || {
        scenarios::database_down_is_service_unavailable_with_retry_after(&database_down)
    });
    runner.run(
        "the binaries and private files are not served directly",
        || scenarios::binaries_and_private_files_are_not_served_directly(&server),
    );
    runner.run("every accounts route works through Apache", || {
        flows::every_account_route_works(&server)
    });
    runner.run("every sync route works through Apache", || {
        flows::every_sync_route_works(&server)
    });
    runner.run(
        "keyed replays, digests, repair and the conflict log work through Apache",
        || flows::exactly_once_and_repair_routes_work(&server),
    );
    runner.run("an export of 1.2 MB arrives whole through Apache", || {
        flows::a_large_export_arrives_whole(&server)
    });
    runner.run(
        "every request has a whole line in LOG_FILE, read by report",
        || request_log::every_request_has_a_whole_line(&log),
    );
    runner.finish(&[&server, &database_down]);
}

#[test]
#[ignore = "slow: Apache end to end, needs --features test-hooks (deploy/test runs it)"]
fn fastcgi_mode_passes_every_scenario_through_apache() {
    run_every_scenario(Mode::FastCgi);
}

#[test]
#[ignore = "slow: Apache end to end, needs --features test-hooks (deploy/test runs it)"]
fn cgi_mode_passes_every_scenario_through_apache() {
    run_every_scenario(Mode::Cgi);
}
