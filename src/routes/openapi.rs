//! `GET /openapi.json` (contract section 7): the OpenAPI 3.1 document of
//! every route, `docs/openapi.json` embedded at build time and served raw
//! (the one answer not in the envelope), without a token or the database.
//! Its `servers` URL is `/api` on the serving host, or `API_BASE_URL` when
//! the deployment names its public URL. A test holds the document to the
//! route table (`route::tests`), and `deploy/api-check` holds the server to
//! the document.

use crate::config::Config;
use crate::http::Response;

/// The document as written in the repository.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// The one spelling of the server URL in `DOCUMENT` (a test checks it
/// occurs exactly once), replaced by `API_BASE_URL` when that is set.
pub const SERVER_URL: &str = r#""url": "/api""#;

pub fn get_openapi(config: &Config) -> Response {
    let body = match config.api_base_url.as_deref() {
        Some(base) => {
            // The URL as a JSON string: serializing a `&str` cannot fail.
            let url = serde_json::to_string(base.trim_end_matches('/')).unwrap_or_default();
            DOCUMENT.replacen(SERVER_URL, &format!(r#""url": {url}"#), 1)
        }
        None => DOCUMENT.to_owned(),
    };
    Response {
        status: 200,
        headers: vec![("Content-Type", "application/json".to_owned())],
        body: body.into_bytes(),
        spool: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::route::{self, Route};

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
    }

    /// `(METHOD, path)` of every operation the document describes.
    fn documented() -> BTreeSet<(String, String)> {
        let document = document();
        let paths = document["paths"].as_object().expect("paths");
        let mut operations = BTreeSet::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    operations.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        operations
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_is_a_route() {
        let routes: BTreeSet<(String, String)> = Route::all()
            .into_iter()
            .map(|route| {
                let name = route.name();
                let (method, path) = name.split_once(' ').expect("METHOD /path");
                (method.to_owned(), path.to_owned())
            })
            .collect();
        let documented = documented();
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from docs/openapi.json: {undocumented:?}"
        );
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(
            unrouted.is_empty(),
            "docs/openapi.json documents what route.rs does not serve: {unrouted:?}"
        );
        for (method, path) in &documented {
            let parsed = route::parse(method, path);
            assert!(parsed.is_ok(), "{method} {path}: {parsed:?}");
        }
    }

    #[test]
    fn every_operation_is_named_and_says_what_it_answers() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut ids = BTreeSet::new();
        for (method, path) in documented() {
            let operation = &document["paths"][&path][method.to_lowercase()];
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} documents no success"
            );
        }
    }

    #[test]
    fn a_configured_base_url_becomes_the_server() {
        let variables = [
            ("DB_HOST", "db.example.com"),
            ("DB_NAME", "hs"),
            ("DB_USER", "hs"),
            ("JWT_SECRET_KEY", "Zr8qL2vN6xB4mT9wK3pH7jD1fG5sC0aY"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        let mut config = crate::config::parse(&variables).unwrap();
        let served = get_openapi(&config);
        assert_eq!(served.status, 200);
        assert_eq!(served.body, DOCUMENT.as_bytes());
        config.api_base_url = Some("https://api.example.com/x/api/".into());
        let served: Value = serde_json::from_slice(&get_openapi(&config).body).unwrap();
        assert_eq!(served["servers"][0]["url"], "https://api.example.com/x/api");
        assert_eq!(served["paths"], document()["paths"]);
    }

    #[test]
    fn the_server_url_is_spelled_once() {
        assert_eq!(DOCUMENT.matches(SERVER_URL).count(), 1);
    }
}
