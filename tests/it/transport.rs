//! The foundation: CGI transport, the envelope and headers, precedence of
//! checks, config errors, database faults, and the command line.

use serde_json::{json, Value};

use crate::support::{register, TestDb};

#[test]
fn health_reports_database_schema_and_limits() {
    let db = TestDb::new();
    let response = db.get("/api/health").send();
    let data = response.ok();
    assert_eq!(data["status"], "ok");
    assert_eq!(data["database"], "ok");
    assert_eq!(data["schema_version"], 5);
    assert_eq!(data["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        data["limits"],
        json!({"max_body_bytes": 5242880, "max_batch": 1000, "max_record_bytes": 65536})
    );
    assert_eq!(
        response.header("Content-Type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(response.header("Cache-Control"), Some("no-store"));
    assert_eq!(response.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(response
        .header("X-Request-Id")
        .is_some_and(|id| id.len() == 32));
}

#[test]
fn every_response_has_its_own_request_id_and_one_log_line_with_it() {
    let db = TestDb::new();
    let first = db.get("/api/health").send();
    let second = db.get("/api/health").send();
    let (a, b) = (first.header("X-Request-Id"), second.header("X-Request-Id"));
    assert!(a.is_some() && a != b);
    let lines: Vec<Value> = first
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(lines.len(), 1, "{}", first.stderr);
    assert_eq!(lines[0]["request_id"].as_str(), a);
    assert_eq!(lines[0]["route"], "GET /health");
    assert_eq!(lines[0]["status"], 200);
    assert!(lines[0]["ms"].is_number());
}

/// `name;dur=<ms>` of a Server-Timing header, if it has that metric.
fn server_timing(header: Option<&str>, name: &str) -> Option<f64> {
    header?.split(',').find_map(|metric| {
        let (metric_name, duration) = metric.trim().split_once(";dur=")?;
        (metric_name == name)
            .then(|| duration.parse().ok())
            .flatten()
    })
}

#[test]
fn every_response_says_where_its_time_went_in_server_timing() {
    let db = TestDb::new();
    let health = db.get("/api/health").send();
    health.ok();
    let timing = health.header("Server-Timing");
    let total = server_timing(timing, "total");
    let in_mysql = server_timing(timing, "db");
    assert!(
        matches!((total, in_mysql), (Some(t), Some(d)) if d > 0.0 && d <= t),
        "{timing:?}"
    );
    // A request that never reached MySQL says so by leaving `db` out.
    let not_found = db.get("/api/nope").send();
    let timing = not_found.header("Server-Timing");
    assert!(server_timing(timing, "total").is_some(), "{timing:?}");
    assert_eq!(server_timing(timing, "db"), None, "{timing:?}");
}

#[test]
fn routes_route_from_the_api_segment_whatever_the_prefix() {
    let db = TestDb::new();
    db.get("/some/prefix/api/health?x=1").send().ok();
    db.get("/api/health/").send().ok();
}

#[test]
fn unknown_route_is_404_and_wrong_method_is_405_with_allow() {
    let db = TestDb::new();
    db.get("/api/nope").send().expect(404, "NOT_FOUND");
    db.get("/elsewhere").send().expect(404, "NOT_FOUND");
    let response = db.request("DELETE", "/api/health").send();
    response.expect(405, "METHOD_NOT_ALLOWED");
    assert_eq!(response.header("Allow"), Some("GET, OPTIONS"));
    let response = db.request("GET", "/api/auth/login").send();
    response.expect(405, "METHOD_NOT_ALLOWED");
    assert_eq!(response.header("Allow"), Some("POST, OPTIONS"));
}

#[test]
fn a_non_utf8_path_or_a_missing_method_is_400_not_a_crash() {
    let db = TestDb::new();
    db.get("/api/%FF").send().expect(400, "VALIDATION_ERROR");
    db.get("/api/health")
        .var("REQUEST_URI", b"/api/\xff")
        .send()
        .expect(400, "VALIDATION_ERROR");
    db.get("/api/health")
        .without("REQUEST_METHOD")
        .send()
        .expect(400, "VALIDATION_ERROR");
    db.get("/api/meals?since=%FF")
        .var("HTTP_AUTHORIZATION", "Bearer x")
        .send()
        .expect(401, "UNAUTHORIZED");
}

#[test]
fn argv_from_a_query_without_equals_is_never_acted_on() {
    let db = TestDb::new();
    db.exec("DELETE FROM schema_migrations");
    // Apache passes `?migrate` as argv; with GATEWAY_INTERFACE set it must
    // be a plain request, so the schema stays unmigrated (health says 503).
    let response = db.get("/api/health?migrate").arg("migrate").send();
    response.expect(503, "SERVICE_UNAVAILABLE");
    assert_eq!(db.count("SELECT COUNT(*) FROM schema_migrations"), 0);
}

#[test]
fn plain_http_is_refused_when_https_is_required() {
    let mut db = TestDb::new();
    db.set("REQUIRE_HTTPS", "true");
    db.get("/api/health").send().expect(403, "HTTPS_REQUIRED");
    // HTTPS_REQUIRED comes before 404.
    db.get("/api/nope").send().expect(403, "HTTPS_REQUIRED");
    // Forwarded headers are not trusted.
    db.get("/api/health")
        .var("HTTP_X_FORWARDED_PROTO", "https")
        .send()
        .expect(403, "HTTPS_REQUIRED");
    let response = db.get("/api/health").var("HTTPS", "on").send();
    response.ok();
    assert!(response.header("Strict-Transport-Security").is_some());
}

#[test]
fn a_bad_config_value_is_a_500_naming_nothing_and_one_log_line_naming_it() {
    let mut db = TestDb::new();
    db.set("MAX_BATCH", "lots");
    let response = db.get("/api/health").send();
    response.expect(500, "INTERNAL_ERROR");
    assert!(!response.body.to_string().contains("MAX_BATCH"));
    assert!(response.stderr.contains("MAX_BATCH"), "{}", response.stderr);
    assert_eq!(response.stderr.lines().count(), 1);

    db.set("MAX_BATCH", "10")
        .set("JWT_SECRET_KEY", "too-short-secret");
    let response = db.get("/api/health").send();
    response.expect(500, "INTERNAL_ERROR");
    assert!(response.stderr.contains("JWT_SECRET_KEY"));
    assert!(
        !response.stderr.contains("too-short-secret"),
        "the secret leaked: {}",
        response.stderr
    );
}

#[test]
fn config_comes_from_the_env_file_named_by_healthsync_env_file() {
    let mut db = TestDb::new();
    let dir = std::env::temp_dir().join(format!("hs-env-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("healthsync.env");
    std::fs::write(&file, format!("DB_NAME={}\nMAX_BATCH=7\n", db.name))
        .unwrap_or_else(|e| panic!("{e}"));
    db.env.remove("DB_NAME");
    db.set("HEALTHSYNC_ENV_FILE", &file.to_string_lossy());
    let data = db.get("/api/health").send().ok().clone();
    assert_eq!(data["limits"]["max_batch"], 7);
    // The process environment wins over the file.
    db.set("MAX_BATCH", "9");
    assert_eq!(db.get("/api/health").send().ok()["limits"]["max_batch"], 9);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn database_unreachable_is_503_with_retry_after() {
    let mut db = TestDb::new();
    db.set("DB_PORT", "1");
    let response = db.get("/api/health").send();
    response.expect(503, "SERVICE_UNAVAILABLE");
    let retry = response
        .header("Retry-After")
        .and_then(|v| v.parse::<u32>().ok());
    assert!(retry.is_some_and(|s| s > 0), "{:?}", response.headers);
    assert!(!response.body.to_string().contains("refused"));
}

#[test]
fn bodies_follow_the_contract_rules() {
    let db = TestDb::new();
    let login = |content_type: &str, body: &[u8]| {
        db.request("POST", "/api/auth/login")
            .raw(content_type, body.to_vec())
            .send()
    };
    login("application/json", b"{not json").expect(400, "INVALID_JSON");
    login("application/json", b"").expect(400, "INVALID_JSON");
    login("application/json", b"\xff\xfe").expect(400, "INVALID_JSON");
    login("text/plain", b"{}").expect(415, "UNSUPPORTED_MEDIA_TYPE");
    login("", b"{}").expect(415, "UNSUPPORTED_MEDIA_TYPE");
    login("application/json", b"[]").expect(400, "VALIDATION_ERROR");
    login("application/json", b"null").expect(400, "VALIDATION_ERROR");
    login("Application/JSON; charset=UTF-8", b"{}").expect(400, "VALIDATION_ERROR");
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    login("application/json", deep.as_bytes()).expect(400, "INVALID_JSON");
    let deep_ok = format!("{{\"a\":{}{}}}", "[".repeat(63), "]".repeat(63));
    login("application/json", deep_ok.as_bytes()).expect(400, "VALIDATION_ERROR");
    // Cut short: Content-Length says more than arrives.
    db.request("POST", "/api/auth/login")
        .raw("application/json", b"{\"email\":".to_vec())
        .var("CONTENT_LENGTH", "100")
        .send()
        .expect(400, "INVALID_JSON");
}

#[test]
fn a_body_over_the_limit_is_413_and_read_to_its_end() {
    let mut db = TestDb::new();
    db.set("MAX_BODY_BYTES", "1000");
    let big = vec![b' '; 200_000];
    db.request("POST", "/api/auth/login")
        .raw("application/json", big.clone())
        .send()
        .expect(413, "PAYLOAD_TOO_LARGE");
    // Without a length (a chunked upload under mod_cgid): read to EOF.
    db.request("POST", "/api/auth/login")
        .raw("application/json", big)
        .without("CONTENT_LENGTH")
        .send()
        .expect(413, "PAYLOAD_TOO_LARGE");
}

#[test]
fn unauthorized_comes_before_too_large_and_bad_json() {
    let mut db = TestDb::new();
    db.set("MAX_BODY_BYTES", "100");
    let response = db
        .request("POST", "/api/meals/sync")
        .raw("application/json", vec![b'x'; 500])
        .send();
    response.expect(401, "UNAUTHORIZED");
    assert_eq!(response.header("WWW-Authenticate"), Some("Bearer"));
    db.request("POST", "/api/meals/sync")
        .raw("application/json", b"{".to_vec())
        .send()
        .expect(401, "UNAUTHORIZED");
}

#[test]
fn options_preflight_is_204_and_cors_only_for_listed_origins() {
    let mut db = TestDb::new();
    let response = db
        .request("OPTIONS", "/api/meals")
        .var("HTTP_ORIGIN", "https://app.example")
        .send();
    assert_eq!(response.status, 204);
    assert!(response.raw_body.is_empty());
    assert_eq!(response.header("Access-Control-Allow-Origin"), None);
    db.set(
        "CORS_ALLOWED_ORIGINS",
        "https://app.example, https://other.example",
    );
    let response = db
        .request("OPTIONS", "/api/meals")
        .var("HTTP_ORIGIN", "https://app.example")
        .send();
    assert_eq!(
        response.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert!(response
        .header("Access-Control-Allow-Headers")
        .is_some_and(|h| h.contains("Authorization")));
    let response = db
        .get("/api/health")
        .var("HTTP_ORIGIN", "https://evil.example")
        .send();
    assert_eq!(response.header("Access-Control-Allow-Origin"), None);
}

#[test]
fn logs_never_hold_tokens_passwords_or_emails() {
    let db = TestDb::new();
    let user = register(&db, "private.person@example.com");
    let response = db.get("/api/account").token(&user.token).send();
    response.ok();
    assert!(!response.stderr.contains(&user.token));
    assert!(!response.stderr.contains("private.person"));
    let response = db
        .post(
            "/api/auth/login",
            &json!({"email": user.email, "password": user.password}),
        )
        .send();
    assert!(!response.stderr.contains(&user.password));
    assert!(!response.stderr.contains("private.person"));
}

#[test]
fn migrate_applies_once_reports_current_and_refuses_an_edited_migration() {
    let db = TestDb::new();
    let output = db.cli(&["migrate"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("schema is current"));
    db.exec("UPDATE schema_migrations SET checksum = REPEAT('0', 64) WHERE version = 1");
    let output = db.cli(&["migrate"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("0001_initial was changed"));
}

#[test]
fn migrate_on_an_empty_database_prints_each_migration() {
    let db = TestDb::new();
    for table in [
        "users",
        "health_metrics",
        "medications",
        "meals",
        "exercises",
        "meal_plans",
        "refresh_tokens",
        "sync_status",
        "rate_limits",
        "auth_failures",
        "idempotency_keys",
        "conflict_log",
        "schema_migrations",
    ] {
        db.exec(&format!("DROP TABLE {table}"));
    }
    let output = db.cli(&["migrate"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("applying 0001_initial"), "{stdout}");
    assert!(stdout.contains("applying 0002_v2_security"), "{stdout}");
    assert!(stdout.contains("applying 0003_exactly_once"), "{stdout}");
    assert!(stdout.contains("applying 0004_revoked_logins"), "{stdout}");
    assert!(stdout.contains("applying 0005_byte_ids"), "{stdout}");
    assert!(stdout.contains("5 migration(s) applied"), "{stdout}");
    db.get("/api/health").send().ok();
}

/// Migration 0005: no key or lookup column compares case-insensitively
/// (a case-folding collation on the ids was most of the server's key
/// comparison time). What is left on a `_ci` collation is never compared
/// in SQL.
#[test]
fn no_column_the_queries_compare_folds_case() {
    let db = TestDb::new();
    let folding: Vec<(String, String)> = db.query(&format!(
        "SELECT table_name, column_name FROM information_schema.columns \
         WHERE table_schema = '{}' AND collation_name LIKE '%\\_ci' \
         AND table_name NOT LIKE 'schema\\_migrations%' \
         ORDER BY table_name, column_name",
        db.name
    ));
    let expected = [("users", "password_hash"), ("users", "revoked_logins")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(table, column)| ((*table).to_owned(), (*column).to_owned()))
        .collect();
    assert_eq!(folding, expected);
}

#[test]
fn check_passes_on_a_good_setup_and_names_what_is_wrong_otherwise() {
    let mut db = TestDb::new();
    let output = db.cli(&["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("schema is current"));

    db.exec("DELETE FROM schema_migrations");
    let output = db.cli(&["check"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("run `healthsync migrate`"));

    // A guessable secret is refused by check and by every request alike.
    db.set("JWT_SECRET_KEY", "secretsecretsecretsecretsecretsecret");
    let stdout = String::from_utf8_lossy(&db.cli(&["check"]).stdout).into_owned();
    assert!(
        stdout.contains("JWT_SECRET_KEY") && stdout.contains("looks guessable"),
        "{stdout}"
    );
    let response = db.get("/api/health").send();
    response.expect(500, "INTERNAL_ERROR");
    assert!(
        response.stderr.contains("looks guessable"),
        "{}",
        response.stderr
    );

    db.set("JWT_SECRET_KEY", crate::support::SECRET)
        .set("DB_PORT", "1");
    let stdout = String::from_utf8_lossy(&db.cli(&["check"]).stdout).into_owned();
    assert!(stdout.contains("cannot reach MySQL"), "{stdout}");

    // A refused login over plain TCP names TLS as a possible cause.
    db.set("DB_PORT", "3306").set("DB_PASS", "not the password");
    let stdout = String::from_utf8_lossy(&db.cli(&["check"]).stdout).into_owned();
    assert!(
        stdout.contains("Access denied") && stdout.contains("DB_TLS=true"),
        "{stdout}"
    );
}

#[test]
fn check_flags_an_env_file_other_users_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let mut db = TestDb::new();
    let dir = std::env::temp_dir().join(format!("hs-check-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("healthsync.env");
    std::fs::write(&file, "LOG_LEVEL=info\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    db.set("HEALTHSYNC_ENV_FILE", &file.to_string_lossy());
    let stdout = String::from_utf8_lossy(&db.cli(&["check"]).stdout).into_owned();
    assert!(stdout.contains("chmod 600"), "{stdout}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = db.cli(&["check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_and_usage() {
    let db = TestDb::new();
    let output = db.cli(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("healthsync {}", env!("CARGO_PKG_VERSION"))
    );
    let output = db.cli(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage:"));
    let output = db.cli(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

/// Holds the user's row lock from another connection for `seconds`.
fn hold_user_lock(db: &TestDb, user_id: &str, seconds: f64) -> std::thread::JoinHandle<()> {
    use mysql::prelude::Queryable;
    let mut conn = db.conn();
    let user_id = user_id.to_owned();
    let locked = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        conn.query_drop("START TRANSACTION")
            .unwrap_or_else(|e| panic!("{e}"));
        conn.exec_drop("SELECT id FROM users WHERE id = ? FOR UPDATE", (user_id,))
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = locked.0.send(());
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
        conn.query_drop("COMMIT").unwrap_or_else(|e| panic!("{e}"));
    });
    let _ = locked.1.recv();
    handle
}

#[test]
#[ignore = "slow: holds a row lock for 3 s (deploy/test runs it)"]
fn a_lock_wait_timeout_is_retried_and_the_push_still_lands() {
    let db = TestDb::new();
    let user = register(&db, "waiter@example.com");
    let holder = hold_user_lock(&db, &user.id, 3.0);
    let started = std::time::Instant::now();
    let record = json!({"id": "44444444-4444-4444-8444-444444444444", "data": {}, "updated_at": "2024-01-01T00:00:00Z"});
    let response = db
        .post("/api/meals/sync", &json!({"meals": [record]}))
        .token(&user.token)
        .send();
    let _ = holder.join();
    assert_eq!(response.ok()["synced"], 1);
    // The first attempt timed out after 2 s; a retry got the lock.
    assert!(
        started.elapsed().as_secs_f64() > 2.5,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 1);
}

#[test]
#[ignore = "slow: holds a row lock for 11 s (deploy/test runs it)"]
fn a_lock_held_past_every_retry_is_503_with_retry_after_and_nothing_stored() {
    let db = TestDb::new();
    let user = register(&db, "stuck@example.com");
    let holder = hold_user_lock(&db, &user.id, 11.0);
    let record = json!({"id": "55555555-5555-4555-8555-555555555555", "data": {}, "updated_at": "2024-01-01T00:00:00Z"});
    let response = db
        .post("/api/meals/sync", &json!({"meals": [record]}))
        .token(&user.token)
        .send();
    let _ = holder.join();
    response.expect(503, "SERVICE_UNAVAILABLE");
    assert!(response.header("Retry-After").is_some());
    assert!(
        response.stderr.contains("after 4 attempts"),
        "{}",
        response.stderr
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM meals"), 0);
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs --features test-hooks for /api/__test/panic (deploy/test runs it)"
)]
fn a_panic_is_a_500_in_the_envelope_that_says_nothing_of_it() {
    let db = TestDb::new();
    let response = db.get("/api/__test/panic").send();
    response.expect(500, "INTERNAL_ERROR");
    assert!(!response.body.to_string().contains("panic"));
    assert!(
        response.stderr.contains("deliberate panic"),
        "{}",
        response.stderr
    );
}

/// Contract section 7 (v2): the access token is verified before a body is
/// parsed, so a body of a million empty arrays without a token costs the
/// server no more memory than any other body of its size.
#[test]
fn an_unauthenticated_body_is_never_parsed() {
    let db = TestDb::new();
    let arrays = format!("{{\"metrics\":[{}[]]}}", "[],".repeat(1_000_000));
    let filler = format!("{{\"metrics\":\"{}\"}}", "x".repeat(arrays.len() - 15));
    assert!(arrays.len() < 5 * 1024 * 1024);
    let measure = |body: &str| {
        let (response, peak_kib) = db
            .request("POST", "/api/health-metrics/sync")
            .raw("application/json", body.as_bytes().to_vec())
            .send_measured();
        response.expect(401, "UNAUTHORIZED");
        peak_kib
    };
    let (arrays_kib, filler_kib) = (measure(&arrays), measure(&filler));
    // Parsed, the arrays alone would take tens of MiB.
    assert!(
        arrays_kib < filler_kib + 4096,
        "a million arrays: {arrays_kib} KiB; as many bytes of a string: {filler_kib} KiB"
    );
}
