//! `(method, path)` to a `Route`. 404 and 405 (with `Allow`) are decided
//! here and nowhere else; handlers never look at the path again.

use crate::error::ApiError;
use crate::sync::Entity;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    OpenApi,
    Register,
    Login,
    Refresh,
    Logout,
    Password,
    AccountGet,
    AccountPatch,
    AccountDelete,
    AccountExport,
    Pull(Entity),
    Push(Entity),
    Bulk,
    SyncStatus,
    /// `GET /<slug>/digest` and `POST /<slug>/fetch` (contract 9.3).
    Digest(Entity),
    Fetch(Entity),
    /// `GET /sync/conflicts` (contract 9.4).
    Conflicts,
    /// Test-only routes: compiled in with the `test-hooks` feature alone.
    TestPanic,
    TestEcho,
}

impl Route {
    /// A stable name for the log line: never the raw path, which a client
    /// controls.
    pub fn name(self) -> String {
        match self {
            Route::Health => "GET /health".into(),
            Route::OpenApi => "GET /openapi.json".into(),
            Route::Register => "POST /auth/register".into(),
            Route::Login => "POST /auth/login".into(),
            Route::Refresh => "POST /auth/refresh".into(),
            Route::Logout => "POST /auth/logout".into(),
            Route::Password => "POST /auth/password".into(),
            Route::AccountGet => "GET /account".into(),
            Route::AccountPatch => "PATCH /account".into(),
            Route::AccountDelete => "DELETE /account".into(),
            Route::AccountExport => "GET /account/export".into(),
            Route::Pull(entity) => format!("GET /{}", entity.slug()),
            Route::Push(entity) => format!("POST /{}/sync", entity.slug()),
            Route::Bulk => "POST /sync/bulk".into(),
            Route::SyncStatus => "GET /sync/status".into(),
            Route::Digest(entity) => format!("GET /{}/digest", entity.slug()),
            Route::Fetch(entity) => format!("POST /{}/fetch", entity.slug()),
            Route::Conflicts => "GET /sync/conflicts".into(),
            Route::TestPanic => "GET /__test/panic".into(),
            Route::TestEcho => "/__test/echo".into(),
        }
    }
}

impl Route {
    /// Every route the API serves, the test-only ones aside: what
    /// `docs/openapi.json` must document (a test in `routes::openapi`
    /// holds the two together).
    pub fn all() -> Vec<Route> {
        let mut all = vec![
            Route::Health,
            Route::OpenApi,
            Route::Register,
            Route::Login,
            Route::Refresh,
            Route::Logout,
            Route::Password,
            Route::AccountGet,
            Route::AccountPatch,
            Route::AccountDelete,
            Route::AccountExport,
            Route::Bulk,
            Route::SyncStatus,
            Route::Conflicts,
        ];
        for entity in Entity::ALL {
            all.push(Route::Pull(entity));
            all.push(Route::Push(entity));
            all.push(Route::Digest(entity));
            all.push(Route::Fetch(entity));
        }
        all
    }
}

/// Every method a path answers, and the route for each.
fn routes_for(path: &str) -> Option<Vec<(&'static str, Route)>> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let table = match segments.as_slice() {
        ["health"] => vec![("GET", Route::Health)],
        ["openapi.json"] => vec![("GET", Route::OpenApi)],
        ["auth", "register"] => vec![("POST", Route::Register)],
        ["auth", "login"] => vec![("POST", Route::Login)],
        ["auth", "refresh"] => vec![("POST", Route::Refresh)],
        ["auth", "logout"] => vec![("POST", Route::Logout)],
        ["auth", "password"] => vec![("POST", Route::Password)],
        ["account"] => vec![
            ("GET", Route::AccountGet),
            ("PATCH", Route::AccountPatch),
            ("DELETE", Route::AccountDelete),
        ],
        ["account", "export"] => vec![("GET", Route::AccountExport)],
        ["sync", "bulk"] => vec![("POST", Route::Bulk)],
        ["sync", "status"] => vec![("GET", Route::SyncStatus)],
        ["sync", "conflicts"] => vec![("GET", Route::Conflicts)],
        [slug] => vec![("GET", Route::Pull(Entity::from_slug(slug)?))],
        [slug, "sync"] => vec![("POST", Route::Push(Entity::from_slug(slug)?))],
        [slug, "digest"] => vec![("GET", Route::Digest(Entity::from_slug(slug)?))],
        [slug, "fetch"] => vec![("POST", Route::Fetch(Entity::from_slug(slug)?))],
        ["__test", "panic"] if cfg!(feature = "test-hooks") => vec![("GET", Route::TestPanic)],
        ["__test", "echo"] if cfg!(feature = "test-hooks") => {
            vec![("GET", Route::TestEcho), ("POST", Route::TestEcho)]
        }
        _ => return None,
    };
    Some(table)
}

/// The route for a request, or the 404/405 it gets. `HEAD` is answered
/// like `GET` by no route: the API has no use for it.
pub fn parse(method: &str, path: &str) -> Result<Route, ApiError> {
    let table = routes_for(path).ok_or(ApiError::NotFound)?;
    if let Some((_, route)) = table.iter().find(|(allowed, _)| *allowed == method) {
        return Ok(*route);
    }
    let allow = match table.iter().map(|(m, _)| *m).collect::<Vec<_>>().as_slice() {
        ["GET"] => "GET, OPTIONS",
        ["POST"] => "POST, OPTIONS",
        ["GET", "POST"] => "GET, POST, OPTIONS",
        _ => "GET, PATCH, DELETE, OPTIONS",
    };
    Err(ApiError::MethodNotAllowed { allow })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, expected: Result<Route, u16>) {
        let got = parse(method, path).map_err(|e| e.status());
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn every_contract_route_parses() {
        check("GET", "/health", Ok(Route::Health));
        check("GET", "/openapi.json", Ok(Route::OpenApi));
        check("POST", "/auth/register", Ok(Route::Register));
        check("POST", "/auth/login", Ok(Route::Login));
        check("POST", "/auth/refresh", Ok(Route::Refresh));
        check("POST", "/auth/logout", Ok(Route::Logout));
        check("POST", "/auth/password", Ok(Route::Password));
        check("GET", "/account", Ok(Route::AccountGet));
        check("PATCH", "/account", Ok(Route::AccountPatch));
        check("DELETE", "/account", Ok(Route::AccountDelete));
        check("GET", "/account/export", Ok(Route::AccountExport));
        check("POST", "/sync/bulk", Ok(Route::Bulk));
        check("GET", "/sync/status", Ok(Route::SyncStatus));
        check("GET", "/sync/conflicts", Ok(Route::Conflicts));
        for entity in Entity::ALL {
            check(
                "GET",
                &format!("/{}", entity.slug()),
                Ok(Route::Pull(entity)),
            );
            check(
                "POST",
                &format!("/{}/sync", entity.slug()),
                Ok(Route::Push(entity)),
            );
            check(
                "GET",
                &format!("/{}/digest", entity.slug()),
                Ok(Route::Digest(entity)),
            );
            check(
                "POST",
                &format!("/{}/fetch", entity.slug()),
                Ok(Route::Fetch(entity)),
            );
        }
    }

    #[test]
    fn all_lists_every_route_but_the_test_hooks() {
        let all = Route::all();
        // A new variant breaks this match: list it here and in `all()`
        // (and document it in docs/openapi.json), or with the test hooks.
        let listed = |route: Route| match route {
            Route::Health
            | Route::OpenApi
            | Route::Register
            | Route::Login
            | Route::Refresh
            | Route::Logout
            | Route::Password
            | Route::AccountGet
            | Route::AccountPatch
            | Route::AccountDelete
            | Route::AccountExport
            | Route::Pull(_)
            | Route::Push(_)
            | Route::Bulk
            | Route::SyncStatus
            | Route::Conflicts
            | Route::Digest(_)
            | Route::Fetch(_) => true,
            Route::TestPanic | Route::TestEcho => false,
        };
        for route in &all {
            assert!(listed(*route), "{route:?}");
            let (method, path) = route.name().split_once(' ').map_or_else(
                || (String::new(), String::new()),
                |(m, p)| (m.to_owned(), p.to_owned()),
            );
            assert_eq!(parse(&method, &path).ok(), Some(*route), "{route:?}");
        }
        assert_eq!(all.len(), 14 + 4 * Entity::ALL.len());
        assert!(!all.contains(&Route::TestPanic) && !all.contains(&Route::TestEcho));
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        check("GET", "/nope", Err(404));
        check("GET", "", Err(404));
        check("GET", "/", Err(404));
        check("GET", "/health/x", Err(404));
        check("GET", "/health_metrics", Err(404));
        check("GET", "/meals/sync/x", Err(404));
        check("DELETE", "/health", Err(405));
        check("GET", "/auth/login", Err(405));
        check("PUT", "/account", Err(405));
        check("POST", "/meals", Err(405));
        check("GET", "/meals/sync", Err(405));
        check("POST", "/meals/digest", Err(405));
        check("GET", "/meals/fetch", Err(405));
        check("POST", "/sync/conflicts", Err(405));
        check("GET", "/nope/digest", Err(404));
        check("POST", "/openapi.json", Err(405));
        check("GET", "/openapi.yaml", Err(404));
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let allow = |method, path| match parse(method, path) {
            Err(ApiError::MethodNotAllowed { allow }) => Some(allow),
            _ => None,
        };
        assert_eq!(allow("DELETE", "/health"), Some("GET, OPTIONS"));
        assert_eq!(
            allow("POST", "/account"),
            Some("GET, PATCH, DELETE, OPTIONS")
        );
    }
}
