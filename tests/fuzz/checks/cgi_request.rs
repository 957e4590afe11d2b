//! `cgi_request`: a request as the web server hands it over, params and
//! body, through the code the binary runs before any route touches the
//! database: `http::read_request_body`, `Request::from_params`,
//! `route::parse`, and the parsers of the query, the device id and the
//! body.
//!
//! Input: `KEY=VALUE` lines (any bytes but a newline; the first `=` ends
//! the key), then an empty line, then the body. Without the empty line
//! every line is a param and the body is empty. Seeds and saved inputs are
//! readable that way.

use healthsync::engine::MAX_PULL_LIMIT;
use healthsync::error::ApiError;
use healthsync::http::{read_request_body, Body, Params, Request};
use healthsync::route::{self, Route};
use healthsync::routes::body::json_value;
use healthsync::routes::records::{device_id, parse_pull_query};

/// Small, so that bodies over it fit in the inputs libFuzzer makes.
const MAX_BODY: u64 = 64;

/// The params and the body of an input.
pub fn split(data: &[u8]) -> (Params, &[u8]) {
    let (head, body) = match data.windows(2).position(|pair| pair == b"\n\n") {
        Some(end) => (&data[..end], &data[end + 2..]),
        None => (data, &data[data.len()..]),
    };
    let mut params = Params::new();
    for line in head.split(|byte| *byte == b'\n') {
        if line.is_empty() {
            continue;
        }
        match line.iter().position(|byte| *byte == b'=') {
            Some(equals) => params.insert(&line[..equals], &line[equals + 1..]),
            None => params.insert(line, Vec::new()),
        }
    }
    (params, body)
}

pub fn check(data: &[u8]) {
    let (params, stdin) = split(data);
    let mut input = stdin;
    let body = read_request_body(&params, &mut input, MAX_BODY);
    // Past a Content-Length the web server sends nothing; anything else
    // is read to its end, a body over the cap included (mod_cgid resets
    // the client of a CGI program that leaves its stdin unread).
    let declared = params
        .text("CONTENT_LENGTH")
        .ok()
        .flatten()
        .and_then(|length| length.trim().parse::<u64>().ok());
    if !input.is_empty() {
        assert!(
            matches!(&body, Body::Bytes(bytes) if Some(bytes.len() as u64) == declared),
            "{} bytes left unread after {body:?}",
            input.len()
        );
    }
    if let Body::Bytes(bytes) = &body {
        assert!(bytes.len() as u64 <= MAX_BODY, "a body past the cap kept");
        assert!(stdin.starts_with(bytes), "the body is what stdin sent");
    }
    let request = Request::from_params(&params, body);
    check_defect(&params, &request);
    if request.defect.is_some() {
        return;
    }
    check_path(&params, &request);
    check_route(&request);
    if let Ok(Some(id)) = device_id(&request) {
        let chars = id.chars().count();
        assert!(
            (1..=128).contains(&chars),
            "device id of {chars} characters"
        );
        assert!(!id.chars().any(char::is_control), "device id {id:?}");
        assert_eq!(id, id.trim(), "device id is trimmed");
    }
    let body = json_value(&request);
    if matches!(request.body, Body::TooLarge) {
        assert!(
            matches!(body, Err(ApiError::PayloadTooLarge(_))),
            "a body over the cap is 413: {body:?}"
        );
    }
}

/// A request the web server sent malformed is recorded as a defect, which
/// `app` answers 400 only when it is a validation error naming a field
/// (any other kind would be a 500).
fn check_defect(params: &Params, request: &Request) {
    let method_is_text = params
        .get("REQUEST_METHOD")
        .is_some_and(|method| !method.is_empty() && std::str::from_utf8(method).is_ok());
    let uri_is_text = params
        .get("REQUEST_URI")
        .is_some_and(|uri| std::str::from_utf8(uri).is_ok());
    if !method_is_text || !uri_is_text {
        assert!(
            request.defect.is_some(),
            "a request without a method or a URI in UTF-8 is a defect"
        );
    }
    match &request.defect {
        None => {}
        Some(ApiError::Validation { details, .. }) => {
            assert!(!details.is_empty(), "a defect names its field")
        }
        Some(other) => panic!("a defect that is not a validation error: {other:?}"),
    }
}

/// The method as sent, in upper case; the path after `/api`, without a
/// trailing slash, or empty.
fn check_path(params: &Params, request: &Request) {
    let sent = params.text("REQUEST_METHOD").ok().flatten().unwrap_or("");
    assert_eq!(request.method, sent.to_ascii_uppercase());
    assert!(!request.method.is_empty(), "a request without a method");
    let path = request.path.as_str();
    assert!(
        path.is_empty() || path == "/" || (path.starts_with('/') && !path.ends_with('/')),
        "path {path:?}"
    );
}

/// `route::parse` is total: a route for this method, a 404, or a 405
/// whose `Allow` does not list the method. A pull's query parses to a
/// limit in range or a validation error naming the fields.
fn check_route(request: &Request) {
    let method = request.method.as_str();
    // `app` answers a preflight before routing, on any path.
    if method == "OPTIONS" {
        return;
    }
    match route::parse(method, &request.path) {
        Ok(Route::TestEcho) => {}
        Ok(found) => {
            let name = found.name();
            assert!(
                name.starts_with(&format!("{method} ")),
                "{method} {:?} routed to {name}",
                request.path
            );
            if let Route::Pull(_) = found {
                match parse_pull_query(request) {
                    Ok(ask) => assert!((1..=MAX_PULL_LIMIT).contains(&ask.limit)),
                    Err(ApiError::Validation { details, .. }) => {
                        assert!(!details.is_empty(), "a query error names its field")
                    }
                    Err(other) => panic!("a pull query refused with {other:?}"),
                }
            }
        }
        Err(ApiError::NotFound) => {}
        Err(ApiError::MethodNotAllowed { allow }) => assert!(
            !allow.split(", ").any(|allowed| allowed == method),
            "{method} refused with Allow: {allow}"
        ),
        Err(other) => panic!("route::parse answered {other:?}"),
    }
}
