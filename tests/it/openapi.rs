//! `GET /api/openapi.json` through the binary (contract section 7).

use serde_json::Value;

use crate::support::TestDb;

const DOCUMENT: &str = include_str!("../../docs/openapi.json");

#[test]
fn the_document_is_served_raw_without_a_token_or_the_envelope() {
    let db = TestDb::new();
    let response = db.get("/api/openapi.json").send();
    assert_eq!(response.status, 200, "{}", response.stderr);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    assert_eq!(response.header("Cache-Control"), Some("no-store"));
    assert!(response.header("X-Request-Id").is_some());
    assert!(response.header("Server-Timing").is_some());
    assert_eq!(response.raw_body, DOCUMENT.as_bytes());
    assert_eq!(response.body["openapi"], "3.1.0");
    assert!(response.body.get("success").is_none());
    assert_eq!(response.body["servers"][0]["url"], "/api");
    assert!(response.body["paths"]["/health"].is_object());
}

#[test]
fn the_document_names_the_configured_public_url() {
    let mut db = TestDb::new();
    db.set("API_BASE_URL", "https://api.example.com/api");
    let response = db.get("/api/openapi.json").send();
    assert_eq!(response.status, 200, "{}", response.stderr);
    assert_eq!(
        response.body["servers"][0]["url"],
        "https://api.example.com/api"
    );
    assert_eq!(response.body["servers"].as_array().map(Vec::len), Some(1));
    let written: Value = serde_json::from_str(DOCUMENT).unwrap();
    assert_eq!(response.body["paths"], written["paths"]);
}

#[test]
fn the_document_answers_get_alone_and_keeps_the_https_rule() {
    let db = TestDb::new();
    let response = db.post("/api/openapi.json", &serde_json::json!({})).send();
    response.expect(405, "METHOD_NOT_ALLOWED");
    assert_eq!(response.header("Allow"), Some("GET, OPTIONS"));

    let mut db = db;
    db.set("REQUIRE_HTTPS", "true");
    db.get("/api/openapi.json")
        .send()
        .expect(403, "HTTPS_REQUIRED");
    let over_https = db.get("/api/openapi.json").var("HTTPS", "on").send();
    assert_eq!(over_https.status, 200);
    assert_eq!(over_https.raw_body, DOCUMENT.as_bytes());
}
