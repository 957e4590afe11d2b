//! The end-to-end scenarios: each sends real HTTP through Apache, the repo's
//! `.htaccess` and the binary, and checks what a device would see. Every
//! scenario runs in both modes; where the modes differ on purpose (argv
//! injection exists only in CGI, a surviving worker only in FastCGI) the
//! scenario says so.

use crate::support::contract::expect_envelope;
use crate::support::harness::{Instance, Mode};
use crate::support::http::{Request, Response};
use serde_json::Value;

fn send(instance: &Instance, request: Request) -> Response {
    request
        .send(instance.port)
        .unwrap_or_else(|why| panic!("{why}"))
}

/// The echo route exists only in builds with the test hooks.
fn echo(instance: &Instance, request: Request) -> Value {
    let response = send(instance, request);
    if response.status == 404 {
        panic!(
            "/api/__test/echo answered 404: the binary under test lacks the test hooks \
             (run `cargo test --features test-hooks`): {response}"
        );
    }
    let body = expect_envelope(&response, 200, None);
    body["data"].clone()
}

pub fn health_answers_ok_with_limits(instance: &Instance) {
    let response = send(instance, Request::get("/api/health"));
    let body = expect_envelope(&response, 200, None);
    assert_eq!(body["data"]["status"], "ok", "data.status: {response}");
    assert_eq!(body["data"]["database"], "ok", "data.database: {response}");
    assert!(
        body["data"]["limits"]["max_body_bytes"].is_number(),
        "data.limits.max_body_bytes is not a number: {response}"
    );
}

/// A header value with a Latin-1 byte (as some Android HTTP stacks send a
/// device name) reaches the API like any other, in both modes.
pub fn a_non_utf8_header_byte_is_no_obstacle(instance: &Instance) {
    let response = send(
        instance,
        Request::get("/api/health").header_bytes("User-Agent", b"Mozilla/5.0 (Pixel \xe9)"),
    );
    expect_envelope(&response, 200, None);
    assert!(
        response
            .header("Server-Timing")
            .is_some_and(|timing| timing.contains("total;dur=")),
        "Server-Timing: {response}"
    );
}

pub fn unknown_route_is_not_found(instance: &Instance) {
    let response = send(instance, Request::get("/api/nope"));
    expect_envelope(&response, 404, Some("NOT_FOUND"));
}

pub fn wrong_method_is_not_allowed_with_allow_header(instance: &Instance) {
    let response = send(instance, Request::new("DELETE", "/api/health"));
    expect_envelope(&response, 405, Some("METHOD_NOT_ALLOWED"));
    let allow = response.header("Allow").unwrap_or_default();
    assert!(
        allow.split(',').any(|method| method.trim() == "GET"),
        "Allow header should list GET: {response}"
    );
}

pub fn malformed_json_is_invalid_json(instance: &Instance) {
    let request = Request::new("POST", "/api/auth/login")
        .header("Content-Type", "application/json")
        .body("{not json");
    let response = send(instance, request);
    expect_envelope(&response, 400, Some("INVALID_JSON"));
}

/// Under mod_cgid a program that answers without reading its stdin makes
/// Apache reset the client; the status must still arrive.
pub fn six_mib_body_is_payload_too_large_and_the_client_sees_it(instance: &Instance) {
    let body = vec![b'a'; 6 * 1024 * 1024];
    let request = Request::new("POST", "/api/auth/login")
        .header("Content-Type", "application/json")
        .body(body);
    let response = request.send(instance.port).unwrap_or_else(|why| {
        panic!("no HTTP status reached the client for a 6 MiB body (connection reset?): {why}")
    });
    expect_envelope(&response, 413, Some("PAYLOAD_TOO_LARGE"));
}

pub fn bearer_token_reaches_the_binary(instance: &Instance) {
    let authorization = "Bearer abc.def.ghi";
    let data = echo(
        instance,
        Request::get("/api/__test/echo").header("Authorization", authorization),
    );
    assert_eq!(
        data["authorization_len"],
        authorization.len(),
        "the Authorization header did not reach the binary intact (CGIPassAuth?): {data}"
    );
    assert_eq!(
        data["mode"],
        instance.mode.name(),
        "the .htaccess sent the request to the wrong name of the binary: {data}"
    );
}

/// Apache turns a query without `=` into command-line arguments of a CGI
/// program; `?migrate` must not make the binary act as its CLI.
pub fn query_without_equals_is_not_a_cli_command(instance: &Instance) {
    let response = send(instance, Request::get("/api/health?migrate"));
    let body = expect_envelope(&response, 200, None);
    assert_eq!(
        body["data"]["status"], "ok",
        "health with ?migrate: {response}"
    );

    let data = echo(instance, Request::get("/api/__test/echo?migrate"));
    // The echo may give the path with or without the `/api` prefix, and the
    // query raw or parsed; what matters is that the request was routed
    // normally and the query reached it as a query.
    let path = data["path"].as_str().unwrap_or_default();
    assert!(path.ends_with("/__test/echo"), "echo path: {data}");
    assert!(
        data["query"].to_string().contains("migrate"),
        "echo query should hold `migrate`: {data}"
    );
    if instance.mode == Mode::Cgi {
        let argv_len = data["argv_len"].as_u64().unwrap_or(0);
        assert!(
            argv_len >= 1,
            "under mod_cgid `?migrate` should reach the binary as an argument \
             (so this scenario proves it is ignored), got argv_len {argv_len}: {data}"
        );
    }
}

/// `%FF` decodes to a byte that is not UTF-8. Apache passes the request on
/// (REQUEST_URI keeps it percent-encoded, the decoded variables carry the raw
/// byte, and the FastCGI library drops such params), so the binary itself
/// must refuse the path rather than fail on missing params.
pub fn non_utf8_path_is_a_validation_error(instance: &Instance) {
    let response = send(instance, Request::get("/api/%FF"));
    expect_envelope(&response, 400, Some("VALIDATION_ERROR"));
}

pub fn panic_is_an_opaque_internal_error_and_the_worker_lives_on(instance: &Instance) {
    let before = echo(instance, Request::get("/api/__test/echo"));

    let response = send(instance, Request::get("/api/__test/panic"));
    let body = expect_envelope(&response, 500, Some("INTERNAL_ERROR"));
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    for leak in ["panic", "__test", ".rs", "thread"] {
        assert!(
            !message.contains(leak),
            "the 500 message leaks internals ({leak:?}): {response}"
        );
    }

    let after = echo(instance, Request::get("/api/__test/echo"));
    if instance.mode == Mode::FastCgi {
        assert_eq!(
            after["pid"], before["pid"],
            "the FastCGI worker did not survive the panic (a new process answered): \
             before {before}, after {after}"
        );
    }
}

pub fn database_down_is_service_unavailable_with_retry_after(instance: &Instance) {
    let response = send(instance, Request::get("/api/health"));
    expect_envelope(&response, 503, Some("SERVICE_UNAVAILABLE"));
    let retry_after = response.header("Retry-After").unwrap_or_default();
    assert!(
        retry_after.parse::<u64>().is_ok(),
        "Retry-After should be integer seconds, got {retry_after:?}: {response}"
    );
}

/// The `.htaccess` refuses the binary under its own names, with a path
/// after them or not (it answers only through `/api/`), dotfiles and files that must never be public, whether
/// or not they exist; an ordinary file is still served.
pub fn binaries_and_private_files_are_not_served_directly(instance: &Instance) {
    for path in [
        "/healthsync.fcgi",
        "/healthsync.cgi",
        "/healthsync.fcgi/health",
        "/healthsync.cgi/health",
        "/healthsync.cgi/api/health",
        "/.htaccess",
        "/.env",
        "/healthsync.env",
        "/.git/config",
        "/schema.sql",
        "/Cargo.toml",
        "/README.md",
    ] {
        let response = send(instance, Request::get(path));
        assert_eq!(
            response.status, 403,
            "GET {path} should be refused: {response}"
        );
    }
    let response = send(instance, Request::get("/static.txt"));
    assert_eq!(response.status, 200, "GET /static.txt: {response}");
}
