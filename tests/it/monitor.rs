//! The request log of its own (`LOG_FILE`) and `healthsync report`: a line
//! per request with the route, user, device, a sync's counts, an
//! authentication attempt's result and the `Server-Timing` figures; never
//! a secret or a health field; whole lines from many processes at once,
//! rotated by size; and the report and its alerts over a log the binary
//! itself wrote.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::{register, Resp, TestDb, User};

const T1: &str = "2024-03-01T10:00:00.000Z";
const T2: &str = "2024-03-01T11:00:00.000Z";

fn id(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-00000000000a")
}

/// A directory of its own for a test's log, removed on drop.
struct LogDir(PathBuf);

impl LogDir {
    fn new() -> LogDir {
        let dir = std::env::temp_dir().join(format!("hs-it-log-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        LogDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("requests.log")
    }

    /// Every file of the log, the rotated ones first (their names sort by
    /// time), then the current one.
    fn files(&self) -> Vec<PathBuf> {
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path != &self.file())
            .collect();
        rotated.sort();
        rotated.push(self.file());
        rotated
    }

    fn text(&self) -> String {
        self.files()
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect()
    }

    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
            })
            .collect()
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn logged_db(log: &LogDir) -> TestDb {
    let mut db = TestDb::new();
    db.set("LOG_FILE", &log.file().display().to_string());
    db
}

/// The log line of a response, found by its `X-Request-Id`.
#[track_caller]
fn line_of(lines: &[Value], response: &Resp) -> Value {
    let request_id = response.header("X-Request-Id").expect("X-Request-Id");
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == request_id)
        .collect();
    assert_eq!(found.len(), 1, "lines of {request_id}: {lines:#?}");
    found[0].clone()
}

/// `name;dur=<ms>` of the response's Server-Timing header.
fn timing(response: &Resp, name: &str) -> Option<f64> {
    response
        .header("Server-Timing")?
        .split(", ")
        .find_map(|part| part.strip_prefix(&format!("{name};dur=")))
        .and_then(|ms| ms.parse().ok())
}

fn push(db: &TestDb, user: &User, records: Value, device: &str) -> Resp {
    db.post("/api/meals/sync", &json!({ "meals": records }))
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", device)
        .send()
}

#[test]
fn each_route_and_outcome_has_its_log_line() {
    let log = LogDir::new();
    let db = logged_db(&log);

    let register_body =
        json!({"email": "log@example.com", "password": "a long password", "name": "Log"});
    let registered = db.post("/api/auth/register", &register_body).send();
    registered.expect(201, "");
    let user_id = registered.data()["user"]["id"].as_str().unwrap().to_owned();
    let user = User {
        id: user_id.clone(),
        email: "log@example.com".into(),
        password: "a long password".into(),
        token: registered.data()["token"].as_str().unwrap().into(),
        refresh: registered.data()["refresh_token"].as_str().unwrap().into(),
    };
    let taken = db.post("/api/auth/register", &register_body).send();
    taken.expect(409, "EMAIL_TAKEN");
    let wrong = db
        .post(
            "/api/auth/login",
            &json!({"email": "log@example.com", "password": "not the password"}),
        )
        .send();
    wrong.expect(401, "INVALID_CREDENTIALS");
    let unknown = db
        .post(
            "/api/auth/login",
            &json!({"email": "nobody@example.com", "password": "whatever it is"}),
        )
        .send();
    unknown.expect(401, "INVALID_CREDENTIALS");
    let login = db
        .post(
            "/api/auth/login",
            &json!({"email": "log@example.com", "password": "a long password"}),
        )
        .send();
    login.expect(200, "");

    let first = push(
        &db,
        &user,
        json!([{"id": id(1), "data": {"date": "2024-03-01"}, "updated_at": T2}]),
        "phone-a",
    );
    first.expect(200, "");
    // A kept-both conflict, a record refused for its clock, one stored.
    let future = "2099-01-01T00:00:00.000Z";
    let conflicting = push(
        &db,
        &user,
        json!([
            {"id": id(1), "data": {"date": "2024-03-02"}, "updated_at": T1, "base_version": 0},
            {"id": id(2), "data": {"date": "2024-03-02"}, "updated_at": future},
            {"id": id(3), "data": {"date": "2024-03-03"}, "updated_at": T1},
        ]),
        "phone-a",
    );
    conflicting.expect(200, "");
    let pulled = db
        .get("/api/meals")
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", "phone-b")
        .send();
    pulled.expect(200, "");
    let bulk = db
        .post(
            "/api/sync/bulk",
            &json!({"medications": [{"id": id(4), "data": {}, "updated_at": T1}]}),
        )
        .token(&user.token)
        .send();
    bulk.expect(200, "");

    // Refresh: rotated, then the spent token again after its successor
    // was used: the login is revoked.
    let rotated = db
        .request("POST", "/api/auth/refresh")
        .token(&user.refresh)
        .send();
    rotated.expect(200, "");
    let successor = rotated.data()["refresh_token"].as_str().unwrap().to_owned();
    db.request("POST", "/api/auth/refresh")
        .token(&successor)
        .send()
        .expect(200, "");
    let reused = db
        .request("POST", "/api/auth/refresh")
        .token(&user.refresh)
        .send();
    reused.expect(401, "UNAUTHORIZED");

    let token = login.data()["token"].as_str().unwrap().to_owned();
    let no_route = db.get("/api/nowhere").send();
    no_route.expect(404, "NOT_FOUND");
    let database_down = db.get("/api/health").var("DB_PORT", "1").send();
    database_down.expect(503, "SERVICE_UNAVAILABLE");
    let erase_wrong = db
        .request("DELETE", "/api/account")
        .json(&json!({"password": "not the password"}))
        .token(&token)
        .send();
    erase_wrong.expect(400, "VALIDATION_ERROR");
    let erased = db
        .request("DELETE", "/api/account")
        .json(&json!({"password": "a long password"}))
        .token(&token)
        .send();
    erased.expect(200, "");

    let lines = log.lines();
    let auth_of = |response: &Resp| line_of(&lines, response)["auth"].clone();
    assert_eq!(
        auth_of(&registered),
        json!({"kind": "register", "result": "ok"})
    );
    assert_eq!(
        auth_of(&taken),
        json!({"kind": "register", "result": "invalid"})
    );
    assert_eq!(
        auth_of(&wrong),
        json!({"kind": "login", "result": "failed", "reason": "wrong_password"})
    );
    assert_eq!(
        auth_of(&unknown),
        json!({"kind": "login", "result": "failed", "reason": "unknown_account"})
    );
    assert_eq!(auth_of(&login), json!({"kind": "login", "result": "ok"}));
    assert_eq!(
        auth_of(&rotated),
        json!({"kind": "refresh", "result": "ok"})
    );
    assert_eq!(
        auth_of(&reused),
        json!({"kind": "refresh", "result": "revoked", "reason": "token_reuse"})
    );
    assert_eq!(
        auth_of(&erase_wrong),
        json!({"kind": "account_erase", "result": "failed", "reason": "wrong_password"})
    );
    assert_eq!(
        auth_of(&erased),
        json!({"kind": "account_erase", "result": "ok"})
    );

    let registered_line = line_of(&lines, &registered);
    assert_eq!(registered_line["route"], "POST /auth/register");
    assert_eq!(registered_line["user_id"], user_id.as_str());
    assert_eq!(registered_line["status"], 201);

    let push_line = line_of(&lines, &conflicting);
    assert_eq!(push_line["route"], "POST /meals/sync");
    assert_eq!(push_line["user_id"], user_id.as_str());
    assert_eq!(push_line["device_id"], "phone-a");
    assert_eq!(
        push_line["sync"],
        json!({"stored": 1, "pulled": 0, "conflicts": {"meals": {"kept_both": 1}}, "errors": {"CLOCK_SKEW": 1}})
    );
    // The figures of the Server-Timing header.
    let close = |a: f64, b: f64| (a - b).abs() < 0.0015;
    assert!(
        close(
            push_line["ms"].as_f64().unwrap(),
            timing(&conflicting, "total").unwrap()
        ),
        "{push_line}"
    );
    assert!(
        close(
            push_line["db_ms"].as_f64().unwrap(),
            timing(&conflicting, "db").unwrap()
        ),
        "{push_line}"
    );

    let pull_line = line_of(&lines, &pulled);
    assert_eq!(pull_line["route"], "GET /meals");
    assert_eq!(pull_line["device_id"], "phone-b");
    // The first meal, its kept-both copy and the third.
    assert_eq!(pull_line["sync"]["pulled"], 3);
    let bulk_line = line_of(&lines, &bulk);
    assert_eq!(bulk_line["route"], "POST /sync/bulk");
    assert_eq!(bulk_line["sync"]["stored"], 1);
    assert_eq!(bulk_line.get("device_id"), None);

    let no_route_line = line_of(&lines, &no_route);
    assert_eq!(
        (
            no_route_line["route"].clone(),
            no_route_line["status"].clone()
        ),
        (Value::Null, json!(404))
    );
    assert_eq!(no_route_line.get("db_ms"), None);

    let down_line = line_of(&lines, &database_down);
    assert_eq!(down_line["route"], "GET /health");
    assert_eq!(down_line["status"], 503);
    assert_eq!(down_line["level"], "error");
    assert!(
        down_line["error"]
            .as_str()
            .is_some_and(|cause| !cause.is_empty()),
        "{down_line}"
    );
    // An error goes to stderr too (the web server's error log); a success
    // only to the file.
    assert!(database_down
        .stderr
        .contains(&down_line["request_id"].as_str().unwrap().to_owned()));
    assert_eq!(conflicting.stderr, "");
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs --features test-hooks for /api/__test/panic (deploy/test runs it)"
)]
fn a_panic_has_its_500_line_with_the_cause() {
    let log = LogDir::new();
    let db = logged_db(&log);
    let response = db.get("/api/__test/panic").send();
    response.expect(500, "INTERNAL_ERROR");
    let line = line_of(&log.lines(), &response);
    assert_eq!(line["status"], 500);
    assert_eq!(line["route"], "GET /__test/panic");
    assert!(
        line["error"]
            .as_str()
            .unwrap_or("")
            .contains("deliberate panic"),
        "{line}"
    );
}

#[test]
fn a_log_file_that_cannot_be_written_is_one_line_on_stderr_and_the_request_goes_on() {
    let log = LogDir::new();
    let mut db = TestDb::new();
    let unwritable = log.0.join("no-such-directory").join("requests.log");
    db.set("LOG_FILE", &unwritable.display().to_string());
    let response = db.get("/api/health").send();
    response.expect(200, "");
    let lines: Vec<&str> = response.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", response.stderr);
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["route"], "GET /health");
    assert!(
        line["log_file_error"]
            .as_str()
            .unwrap()
            .contains("no-such-directory"),
        "{line}"
    );
}

/// Contract section 7: logs never hold bodies, tokens, passwords or health
/// fields; nor emails or names here.
#[test]
fn the_log_holds_no_email_password_token_name_or_health_field() {
    let log = LogDir::new();
    let db = logged_db(&log);
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("private.person+{marker}@example.com");
    let password = format!("pw-{marker}-secret");
    let new_password = format!("new-pw-{marker}");
    let name = format!("Name {marker}");
    let field = format!("glucose note {marker}");
    let registered = db
        .post(
            "/api/auth/register",
            &json!({"email": email, "password": password, "name": name}),
        )
        .send();
    registered.expect(201, "");
    let mut tokens = vec![
        registered.data()["token"].as_str().unwrap().to_owned(),
        registered.data()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    let token = tokens[0].clone();
    let record =
        json!({"id": id(9), "data": {"notes": field, "glucose": 123.456789}, "updated_at": T1});
    db.post("/api/health-metrics/sync", &json!({"metrics": [record]}))
        .token(&token)
        .var("HTTP_X_DEVICE_ID", "device-1")
        .send()
        .expect(200, "");
    db.get("/api/health-metrics")
        .token(&token)
        .send()
        .expect(200, "");
    db.post("/api/sync/bulk", &json!({"health_metrics": [record]}))
        .token(&token)
        .send()
        .expect(200, "");
    db.get("/api/account/export")
        .token(&token)
        .send()
        .expect(200, "");
    db.get("/api/account").token(&token).send().expect(200, "");
    db.request("PATCH", "/api/account")
        .json(&json!({"name": name}))
        .token(&token)
        .send()
        .expect(200, "");
    db.get("/api/sync/status")
        .token(&token)
        .send()
        .expect(200, "");
    db.post(
        "/api/auth/login",
        &json!({"email": email, "password": "wrong password"}),
    )
    .send();
    let login = db
        .post(
            "/api/auth/login",
            &json!({"email": email, "password": password}),
        )
        .send();
    login.expect(200, "");
    tokens.push(login.data()["token"].as_str().unwrap().to_owned());
    tokens.push(login.data()["refresh_token"].as_str().unwrap().to_owned());
    let refreshed = db
        .request("POST", "/api/auth/refresh")
        .token(&tokens[3])
        .send();
    refreshed.expect(200, "");
    tokens.push(
        refreshed.data()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let changed = db
        .post(
            "/api/auth/password",
            &json!({"current_password": password, "new_password": new_password}),
        )
        .token(&tokens[2])
        .send();
    changed.expect(200, "");
    let token = changed.data()["token"].as_str().unwrap().to_owned();
    tokens.push(token.clone());
    let refresh = changed.data()["refresh_token"].as_str().unwrap().to_owned();
    tokens.push(refresh.clone());
    db.post("/api/auth/logout", &json!({"refresh_token": refresh}))
        .token(&token)
        .send()
        .expect(200, "");
    let login = db
        .post(
            "/api/auth/login",
            &json!({"email": email, "password": new_password}),
        )
        .send();
    login.expect(200, "");
    let token = login.data()["token"].as_str().unwrap().to_owned();
    tokens.push(token.clone());
    tokens.push(login.data()["refresh_token"].as_str().unwrap().to_owned());
    db.request("DELETE", "/api/account")
        .json(&json!({"password": new_password}))
        .token(&token)
        .send()
        .expect(200, "");

    let text = log.text();
    // Every route of the flow has its line, with its status.
    let logged: HashSet<(String, u64)> = log
        .lines()
        .iter()
        .map(|l| {
            (
                l["route"].as_str().unwrap_or("").to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    for (route, status) in [
        ("POST /auth/register", 201),
        ("POST /health-metrics/sync", 200),
        ("GET /health-metrics", 200),
        ("POST /sync/bulk", 200),
        ("GET /account/export", 200),
        ("GET /account", 200),
        ("PATCH /account", 200),
        ("GET /sync/status", 200),
        ("POST /auth/logout", 200),
        ("POST /auth/login", 401),
        ("POST /auth/login", 200),
        ("POST /auth/refresh", 200),
        ("POST /auth/password", 200),
        ("DELETE /account", 200),
    ] {
        assert!(
            logged.contains(&(route.to_owned(), status)),
            "no line for {route} {status}: {logged:?}"
        );
    }
    let mut secrets = vec![
        email.clone(),
        "private.person".to_owned(),
        password,
        new_password,
        name,
        field,
        "glucose".to_owned(),
        "123.456789".to_owned(),
    ];
    secrets.extend(tokens.iter().cloned());
    // A token's signature alone would give it away as well.
    secrets.extend(
        tokens
            .iter()
            .filter_map(|t| t.rsplit('.').next().map(str::to_owned)),
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the log holds {secret:?}:\n{text}"
        );
    }
}

/// Many processes append at once, while the file rotates under them:
/// every line is whole, none is lost or doubled.
#[test]
fn concurrent_processes_append_whole_lines_across_rotations() {
    let log = LogDir::new();
    let mut db = logged_db(&log);
    db.set("LOG_FILE_MAX_BYTES", "4000")
        .set("LOG_FILE_KEEP", "99");
    let db = &db;
    let ids: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                scope.spawn(move || {
                    (0..15)
                        .map(|i| {
                            let path = if (worker + i) % 2 == 0 {
                                "/api/health"
                            } else {
                                "/api/nowhere"
                            };
                            let response = db.get(path).send();
                            assert!(
                                response.status == 200 || response.status == 404,
                                "{response:?}"
                            );
                            response.header("X-Request-Id").unwrap().to_owned()
                        })
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let files = log.files();
    assert!(files.len() > 3, "no rotation happened: {files:?}");
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}",
            path.display()
        );
    }
    let logged: Vec<String> = log
        .lines()
        .iter()
        .map(|line| line["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged.len(), 120);
    let logged_set: HashSet<&String> = logged.iter().collect();
    let sent: HashSet<&String> = ids.iter().collect();
    assert_eq!(logged_set, sent);
}

fn cli(db: &TestDb, overrides: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = db.cli_with(overrides, args);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Real requests through the binary, then `report` and `report --alert`
/// over the log they wrote.
#[test]
fn report_and_alert_read_the_log_the_requests_wrote() {
    let log = LogDir::new();
    let db = logged_db(&log);
    let user = register(&db, "report@example.com");
    for n in 0..3 {
        push(
            &db,
            &user,
            json!([{"id": id(n), "data": {"date": "2024-03-01"}, "updated_at": T2}]),
            "phone-a",
        )
        .expect(200, "");
    }
    push(
        &db,
        &user,
        json!([{"id": id(0), "data": {"date": "2024-03-05"}, "updated_at": T1, "base_version": 0}]),
        "phone-b",
    )
    .expect(200, "");
    db.get("/api/meals")
        .token(&user.token)
        .var("HTTP_X_DEVICE_ID", "phone-b")
        .send()
        .expect(200, "");
    db.post(
        "/api/auth/login",
        &json!({"email": "report@example.com", "password": "wrong password"}),
    )
    .send()
    .expect(401, "INVALID_CREDENTIALS");
    for _ in 0..2 {
        db.get("/api/health")
            .var("DB_PORT", "1")
            .send()
            .expect(503, "SERVICE_UNAVAILABLE");
    }
    db.get("/api/nowhere").send().expect(404, "NOT_FOUND");
    // 10 requests: register, 4 pushes, a pull, a failed login, 2 503s, a 404.

    let (code, text, stderr) = cli(&db, &[], &["report"]);
    assert_eq!(code, 0, "{text}{stderr}");
    for expected in [
        "10 requests from ",
        "meals kept_both",
        "login: 1 failed",
        "accounts: 1 created, 0 erased",
        "records: 3 stored, 4 pulled, 0 refused",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let push_row = text
        .lines()
        .find(|l| l.starts_with("POST /meals/sync"))
        .unwrap_or("");
    let columns: Vec<&str> = push_row.split_whitespace().collect();
    assert_eq!(&columns[2..6], &["4", "0", "0", "0.0"], "{push_row}");

    let (code, json_text, _) = cli(&db, &[], &["report", "--json", "--since", "1h"]);
    assert_eq!(code, 0);
    let summary: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(summary["requests"], 10);
    let route = |name: &str| {
        summary["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
    };
    let health = route("GET /health").unwrap();
    assert_eq!(
        (health["requests"].clone(), health["status_5xx"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(health["error_percent"], 100.0);
    assert_eq!(route("(no route)").unwrap()["status_4xx"], 1);
    assert!(
        route("POST /meals/sync").unwrap()["db_ms"]["p99"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(summary["failures"][0]["status"], 503);
    assert_eq!(summary["failures"][0]["count"], 2);
    // One user, two devices, every sync request answered.
    assert_eq!(
        summary["sync_by_devices"],
        json!([{"devices": "2", "users": 1, "requests": 5, "succeeded": 5, "success_percent": 100.0}])
    );

    // Healthy by the defaults (too few requests for a rate): silent.
    let (code, out, err) = cli(&db, &[], &["report", "--alert"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));

    // Lower thresholds: loud, one line each.
    let strict = [
        ("ALERT_MIN_REQUESTS", "5"),
        ("ALERT_5XX_PERCENT", "10"),
        ("ALERT_503_BURST", "2"),
    ];
    let (code, out, _) = cli(&db, &strict, &["report", "--alert"]);
    assert_eq!(code, 1, "{out}");
    let alerts: Vec<&str> = out.lines().collect();
    assert_eq!(alerts.len(), 2, "{out}");
    assert!(
        alerts[0].starts_with("healthsync: 5xx rate 20.0 % (2 of 10 requests) in the last 15m"),
        "{out}"
    );
    assert!(
        alerts[1].contains("2 answers 503 within 5 minutes"),
        "{out}"
    );

    // The database unreachable, as check sees it.
    let (code, out, _) = cli(&db, &[("DB_PORT", "1")], &["report", "--alert"]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("healthsync: database: cannot reach MySQL at"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    // A log whose last line is an hour old while the database counted
    // requests just now: it stopped growing.
    let stale = LogDir::new();
    let an_hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let old_line = format!(
        "{{\"ts\":\"{}\",\"request_id\":\"x\",\"route\":\"GET /health\",\"status\":200,\"ms\":1}}\n",
        an_hour_ago.format(&time::format_description::well_known::Rfc3339).unwrap()
    );
    std::fs::write(stale.file(), old_line).unwrap();
    let stale_file = stale.file().display().to_string();
    let (code, out, _) = cli(&db, &[("LOG_FILE", &stale_file)], &["report", "--alert"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("the log stopped growing: its last line is at"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// Without `LOG_FILE` the lines go to stderr, which Apache puts in its
/// error log inside its own prefix; `report --apache-log` reads them there.
#[test]
fn report_reads_the_lines_out_of_an_apache_error_log() {
    let db = TestDb::new();
    let user = register(&db, "apache@example.com");
    let mut apache_log = String::from(
        "[Mon Nov 30 18:00:00.000000 2026] [mpm_event:notice] [pid 1] AH00489: Apache configured\n",
    );
    let responses = [
        push(
            &db,
            &user,
            json!([{"id": id(1), "data": {}, "updated_at": T1}]),
            "phone",
        ),
        db.get("/api/meals").token(&user.token).send(),
        db.get("/api/nowhere").send(),
    ];
    for (n, response) in responses.iter().enumerate() {
        let line = response.stderr.trim_end();
        assert!(line.starts_with('{'), "{response:?}");
        apache_log.push_str(&match n % 2 {
            0 => format!("[Mon Nov 30 18:00:01.000000 2026] [cgid:error] [pid 7:tid 8] [client 127.0.0.1:5000] AH01215: {line}: /srv/htdocs/healthsync.cgi\n"),
            _ => format!("[Mon Nov 30 18:00:01.000000 2026] [fcgid:warn] [pid 7:tid 8] [client 127.0.0.1:5000] mod_fcgid: stderr: {line}\n"),
        });
    }
    let dir = LogDir::new();
    let path = dir.0.join("error.log");
    std::fs::write(&path, apache_log).unwrap();
    let (code, out, err) = cli(
        &db,
        &[],
        &[
            "report",
            "--json",
            "--apache-log",
            &path.display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["requests"], 3);
    assert_eq!(summary["unreadable_lines"], 0);
    assert_eq!(summary["records"]["stored"], 1);
    assert_eq!(summary["records"]["pulled"], 1);
}

#[test]
fn report_says_what_is_missing() {
    let db = TestDb::new();
    let (code, _, err) = cli(&db, &[], &["report"]);
    assert_eq!(code, 1);
    assert!(err.contains("LOG_FILE is not set"), "{err}");
    let (code, _, err) = cli(&db, &[], &["report", "--since", "soon"]);
    assert_eq!(code, 2);
    assert!(err.contains("--since soon"), "{err}");
    let missing = [("LOG_FILE", "/nonexistent-dir/healthsync.log")];
    let (code, out, _) = cli(&db, &missing, &["report", "--alert"]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["healthsync: log: /nonexistent-dir/healthsync.log cannot be read: No such file or directory (os error 2)"]
    );
}

#[test]
fn check_says_whether_the_log_file_can_be_appended_to() {
    let log = LogDir::new();
    let db = TestDb::new();
    let file = log.file().display().to_string();
    let output = db.cli_with(&[("LOG_FILE", &file)], &["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("ok    LOG_FILE={file} can be appended to")),
        "{stdout}"
    );
    let missing = log
        .0
        .join("missing")
        .join("requests.log")
        .display()
        .to_string();
    let output = db.cli_with(&[("LOG_FILE", &missing)], &["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("FAIL  LOG_FILE={missing} cannot be appended to")),
        "{stdout}"
    );
    let output = db.cli(&["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(stdout.contains("warn  LOG_FILE is not set"), "{stdout}");
}
