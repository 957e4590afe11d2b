//! Whole flows a device goes through, end to end through Apache: every
//! route of the accounts section and of the sync sections, in both modes.

use serde_json::{json, Value};

use crate::support::contract::expect_envelope;
use crate::support::harness::Instance;
use crate::support::http::{Request, Response};

fn call(
    instance: &Instance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut request = Request::new(method, path);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    request
        .send(instance.port)
        .unwrap_or_else(|why| panic!("{method} {path}: {why}"))
}

fn ok(
    instance: &Instance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let response = call(instance, method, path, token, body);
    let status = if path.ends_with("/register") {
        201
    } else {
        200
    };
    expect_envelope(&response, status, None)["data"].clone()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

pub fn every_account_route_works(instance: &Instance) {
    let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = ok(
        instance,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": "first password", "name": "E2E"})),
    );
    let token = text(&registered["token"]);
    let login = ok(
        instance,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": "first password"})),
    );
    assert_eq!(login["user"]["id"], registered["user"]["id"]);

    let rotated = ok(
        instance,
        "POST",
        "/api/auth/refresh",
        Some(&text(&registered["refresh_token"])),
        None,
    );
    ok(
        instance,
        "GET",
        "/api/account",
        Some(&text(&rotated["token"])),
        None,
    );
    let account = ok(
        instance,
        "PATCH",
        "/api/account",
        Some(&token),
        Some(json!({"name": "Renamed"})),
    );
    assert_eq!(account["user"]["name"], "Renamed");
    ok(instance, "GET", "/api/account/export", Some(&token), None);

    ok(
        instance,
        "POST",
        "/api/auth/logout",
        Some(&token),
        Some(json!({"refresh_token": text(&login["refresh_token"])})),
    );
    let refused = call(
        instance,
        "POST",
        "/api/auth/refresh",
        Some(&text(&login["refresh_token"])),
        None,
    );
    expect_envelope(&refused, 401, Some("UNAUTHORIZED"));

    let changed = ok(
        instance,
        "POST",
        "/api/auth/password",
        Some(&token),
        Some(json!({"current_password": "first password", "new_password": "second password"})),
    );
    let old = call(instance, "GET", "/api/account", Some(&token), None);
    expect_envelope(&old, 401, Some("UNAUTHORIZED"));
    let token = text(&changed["token"]);
    ok(instance, "POST", "/api/auth/logout", Some(&token), None);
    let after_logout = call(instance, "GET", "/api/account", Some(&token), None);
    expect_envelope(&after_logout, 401, Some("UNAUTHORIZED"));

    let fresh = ok(
        instance,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": "second password"})),
    );
    let token = text(&fresh["token"]);
    ok(
        instance,
        "DELETE",
        "/api/account",
        Some(&token),
        Some(json!({"password": "second password"})),
    );
    let gone = call(
        instance,
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"email": email, "password": "second password"})),
    );
    expect_envelope(&gone, 401, Some("INVALID_CREDENTIALS"));
}

pub fn every_sync_route_works(instance: &Instance) {
    let email = format!("e2e-sync-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = ok(
        instance,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": "sync password", "name": "Sync"})),
    );
    let token = text(&registered["token"]);
    let at = "2024-03-01T10:00:00.000Z";
    let entities = [
        ("health-metrics", "metrics"),
        ("medications", "medications"),
        ("meals", "meals"),
        ("exercises", "exercises"),
        ("meal-plans", "meal_plans"),
    ];
    for (slug, key) in entities {
        let id = uuid::Uuid::new_v4().to_string();
        let pushed = ok(
            instance,
            "POST",
            &format!("/api/{slug}/sync"),
            Some(&token),
            Some(json!({ key: [{"id": id, "data": {"slug": slug}, "updated_at": at}] })),
        );
        assert_eq!(pushed["synced"], 1, "{slug}: {pushed}");
        let pulled = ok(
            instance,
            "GET",
            &format!("/api/{slug}?limit=10"),
            Some(&token),
            None,
        );
        assert_eq!(pulled[key][0]["id"], id.as_str(), "{slug}: {pulled}");
    }
    // A concurrent edit: stale base_version, later timestamp: client wins.
    let id = uuid::Uuid::new_v4().to_string();
    ok(
        instance,
        "POST",
        "/api/exercises/sync",
        Some(&token),
        Some(json!({"exercises": [{"id": id, "data": {"v": 1}, "updated_at": at}]})),
    );
    let conflict = ok(
        instance,
        "POST",
        "/api/exercises/sync",
        Some(&token),
        Some(
            json!({"exercises": [{"id": id, "data": {"v": 2}, "updated_at": "2024-03-02T10:00:00.000Z", "base_version": 0}]}),
        ),
    );
    assert_eq!(
        conflict["conflict_details"][0]["resolution"], "client_wins",
        "{conflict}"
    );

    let bulk = ok(
        instance,
        "POST",
        "/api/sync/bulk",
        Some(&token),
        Some(
            json!({"meals": [{"id": uuid::Uuid::new_v4().to_string(), "data": {}, "updated_at": at}], "sync_token": "0", "limit": 3}),
        ),
    );
    assert_eq!(bulk["has_more"], true, "{bulk}");
    let rest = ok(
        instance,
        "POST",
        "/api/sync/bulk",
        Some(&token),
        Some(json!({"sync_token": bulk["sync_token"]})),
    );
    assert_eq!(rest["has_more"], false, "{rest}");
    let status = ok(instance, "GET", "/api/sync/status", Some(&token), None);
    assert_eq!(status["sync_token"], rest["sync_token"], "{status}");
    assert_eq!(status["meals"]["count"], 2, "{status}");
}

/// Contract section 9 through Apache: a keyed push replayed byte for
/// byte with its header, the digests of status and pull, a prefix digest,
/// a fetch, and the conflict log.
pub fn exactly_once_and_repair_routes_work(instance: &Instance) {
    let email = format!("e2e-once-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = ok(
        instance,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": "once password", "name": "Once"})),
    );
    let token = text(&registered["token"]);
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"meals": [{"id": id, "data": {"date": "2024-03-01"}, "updated_at": "2024-03-02T10:00:00.000Z"}]})
        .to_string();
    let keyed = || {
        Request::new("POST", "/api/meals/sync")
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", "e2e-key-1")
            .body(body.clone())
            .send(instance.port)
            .unwrap_or_else(|why| panic!("keyed push: {why}"))
    };
    let first = keyed();
    expect_envelope(&first, 200, None);
    assert_eq!(first.header("Idempotent-Replayed"), None);
    let again = keyed();
    expect_envelope(&again, 200, None);
    assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(again.body, first.body);

    // A conflict the server wins (an older edit), logged.
    ok(
        instance,
        "POST",
        "/api/meals/sync",
        Some(&token),
        Some(
            json!({"meals": [{"id": id, "data": {"date": "2024-03-01", "old": true}, "updated_at": "2024-03-01T10:00:00.000Z", "base_version": 0}]}),
        ),
    );
    let conflicts = ok(instance, "GET", "/api/sync/conflicts", Some(&token), None);
    assert_eq!(conflicts["conflicts"][0]["seq"], 1, "{conflicts}");
    assert_eq!(
        conflicts["conflicts"][0]["resolution"], "server_wins",
        "{conflicts}"
    );

    let status = ok(instance, "GET", "/api/sync/status", Some(&token), None);
    let pulled = ok(instance, "GET", "/api/meals", Some(&token), None);
    assert_eq!(pulled["digest"], status["meals"]["digest"], "{pulled}");
    assert_eq!(status["oldest_sync_token"], Value::Null, "{status}");
    let root = ok(instance, "GET", "/api/meals/digest", Some(&token), None);
    assert_eq!(root["digest"], status["meals"]["digest"], "{root}");
    assert_eq!(root["records"][0]["id"], id.as_str(), "{root}");
    let fetched = ok(
        instance,
        "POST",
        "/api/meals/fetch",
        Some(&token),
        Some(json!({"ids": [id]})),
    );
    assert_eq!(fetched["meals"][0]["id"], id.as_str(), "{fetched}");
}

/// An export larger than one FastCGI record (64 KiB) and than Apache's
/// buffers arrives whole with its `Content-Length`: the spooled body is
/// copied out after the head in both modes.
pub fn a_large_export_arrives_whole(instance: &Instance) {
    let email = format!("e2e-export-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = ok(
        instance,
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"email": email, "password": "export password", "name": "E2E"})),
    );
    let token = text(&registered["token"]);
    let note = "n".repeat(30_000);
    let ids: Vec<String> = (0..40).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for batch in ids.chunks(20) {
        let metrics: Vec<Value> = batch
            .iter()
            .map(|id| json!({"id": id, "data": {"note": note}, "updated_at": "2024-03-01T08:00:00.000Z"}))
            .collect();
        ok(
            instance,
            "POST",
            "/api/health-metrics/sync",
            Some(&token),
            Some(json!({ "metrics": metrics })),
        );
    }
    let response = call(instance, "GET", "/api/account/export", Some(&token), None);
    assert!(
        response.body.len() > 1_200_000,
        "{} bytes",
        response.body.len()
    );
    if let Some(length) = response.header("Content-Length") {
        assert_eq!(length, response.body.len().to_string());
    }
    let data = expect_envelope(&response, 200, None)["data"].clone();
    let mut exported: Vec<String> = data["health_metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|metric| {
            assert_eq!(metric["data"]["note"].as_str().map(str::len), Some(30_000));
            text(&metric["id"])
        })
        .collect();
    let mut expected = ids.clone();
    exported.sort();
    expected.sort();
    assert_eq!(exported, expected);
}
