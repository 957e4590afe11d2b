//! Checks every response must pass, whatever the route: the status, the
//! JSON envelope (`success`, `error.code`) and the headers the contract puts
//! on every answer.

use super::http::Response;
use serde_json::Value;

/// Asserts the status, the contract headers and the envelope, and returns
/// the parsed body. `error_code` is `None` for a success envelope.
pub fn expect_envelope(response: &Response, status: u16, error_code: Option<&str>) -> Value {
    assert_eq!(response.status, status, "unexpected status: {response}");
    expect_contract_headers(response);
    let body = response.json().unwrap_or_else(|why| panic!("{why}"));
    match error_code {
        None => {
            assert_eq!(
                body["success"],
                Value::Bool(true),
                "expected a success envelope: {response}"
            );
            assert!(
                body["data"].is_object(),
                "success envelope without a data object: {response}"
            );
        }
        Some(code) => {
            assert_eq!(
                body["success"],
                Value::Bool(false),
                "expected an error envelope: {response}"
            );
            assert_eq!(
                body["error"]["code"], code,
                "unexpected error code: {response}"
            );
            assert!(
                body["error"]["message"].is_string(),
                "error envelope without a message: {response}"
            );
        }
    }
    body
}

/// The headers the contract requires on every response.
pub fn expect_contract_headers(response: &Response) {
    assert_eq!(
        response.header("Content-Type"),
        Some("application/json; charset=utf-8"),
        "Content-Type: {response}"
    );
    assert_eq!(
        response.header("Cache-Control"),
        Some("no-store"),
        "Cache-Control: {response}"
    );
    assert_eq!(
        response.header("X-Content-Type-Options"),
        Some("nosniff"),
        "X-Content-Type-Options: {response}"
    );
    assert!(
        response
            .header("X-Request-Id")
            .is_some_and(|id| !id.is_empty()),
        "missing X-Request-Id: {response}"
    );
}
