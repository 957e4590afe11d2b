//! Transport only: decides CGI, FastCGI or command line, turns the web
//! server's params and stdin into a `Request`, runs `app::handle` under
//! `catch_unwind`, and writes the buffered response once. The only module
//! that touches the process environment and stdio.

mod app;
mod auth;
mod cli;
mod config;
mod error;
mod http;
mod log;
mod route;
mod routes;
mod store;
mod sync;

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use config::{EnvFileCache, Variables};
use error::ApiError;
use http::{Body, Params, Request};
use store::db::DbSlot;

fn main() -> ExitCode {
    if fd0_is_listening_socket() {
        run_fastcgi();
        return ExitCode::SUCCESS;
    }
    // Apache turns a query string without `=` into argv (`?migrate` gives
    // argv `migrate`): with GATEWAY_INTERFACE set, argv is never acted on.
    if std::env::var_os("GATEWAY_INTERFACE").is_some() {
        run_cgi();
        return ExitCode::SUCCESS;
    }
    cli::run(std::env::args_os().skip(1).collect())
}

/// mod_fcgid hands the process a listening socket on fd 0. Under mod_cgid
/// stdin is a connected socket too, so "fd 0 is a socket" is not enough:
/// only a socket that accepts connections means FastCGI.
#[allow(unsafe_code)]
fn fd0_is_listening_socket() -> bool {
    let mut value: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `value`, which
    // is a live c_int; on a non-socket fd 0 it fails with ENOTSOCK.
    let result = unsafe {
        libc::getsockopt(
            0,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    result == 0 && value != 0
}

/// State that outlives one request: the kept MySQL connection and the
/// parsed `.env` file (FastCGI); fresh per process in CGI.
struct Worker {
    mode: &'static str,
    db: DbSlot,
    env_files: EnvFileCache,
    process_env: Result<Variables, config::ConfigError>,
    argv_len: usize,
}

impl Worker {
    fn new(mode: &'static str) -> Worker {
        Worker {
            mode,
            db: DbSlot::default(),
            env_files: EnvFileCache::default(),
            process_env: config::process_env(),
            argv_len: std::env::args_os().len().saturating_sub(1),
        }
    }
}

fn run_cgi() {
    let mut params = Params::new();
    for (key, value) in std::env::vars_os() {
        use std::os::unix::ffi::OsStrExt;
        params.insert(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    }
    let mut worker = Worker::new("cgi");
    let output = serve(&mut worker, &params, &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if Apache closed the pipe.
    let _ = stdout.write_all(&output);
    let _ = stdout.flush();
}

fn run_fastcgi() {
    let worker = Mutex::new(Worker::new("fastcgi"));
    fastcgi::run(move |mut request| {
        let mut params = Params::new();
        for (key, value) in request.params() {
            params.insert(key.into_bytes(), value.into_bytes());
        }
        // mod_fcgid sends one request at a time per process; the lock is
        // never contended. A panic is caught inside `serve`, so the lock
        // is not poisoned by one; if it were, the state is still usable
        // (the connection is reset after a panic).
        let mut worker = worker.lock().unwrap_or_else(PoisonError::into_inner);
        let output = serve(&mut worker, &params, &mut request.stdin());
        let _ = request.stdout().write_all(&output);
    });
}

/// One request, start to finish. Never panics outward: a panic in a route
/// is a 500, the transaction it held rolls back as its connection is
/// dropped, and the process serves the next request.
fn serve(worker: &mut Worker, params: &Params, stdin: &mut dyn Read) -> Vec<u8> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let config = match &worker.process_env {
        Ok(process_env) => config::gather(process_env, Some(params), &mut worker.env_files)
            .and_then(|variables| config::parse(&variables)),
        Err(error) => Err(error.clone()),
    };
    let max_body = config
        .as_ref()
        .map_or(5 * 1024 * 1024, |c| c.max_body_bytes);
    let content_length = params
        .text("CONTENT_LENGTH")
        .ok()
        .flatten()
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().parse::<u64>());
    let body = match content_length {
        Some(Err(_)) => {
            let _ = read_rest(stdin);
            Body::Truncated
        }
        length => http::read_body(stdin, length.and_then(Result::ok), max_body),
    };
    let mut request = Request::from_params(params, body);
    request.argv_len = worker.argv_len;

    let config = match config {
        Ok(config) => config,
        Err(problem) => {
            let error = ApiError::Internal(problem.to_string());
            let mut response = app::error_response(&error);
            app::finalize(&mut response, None, Some(&request), &request_id, None);
            log::request(log::Line {
                level: config::LogLevel::Error,
                request_id: &request_id,
                method: &request.method,
                route: None,
                status: response.status,
                started,
                user_id: None,
                cause: Some(&problem.to_string()),
            });
            return response.to_cgi_bytes();
        }
    };

    let mut ctx = app::Ctx::new(&config, &mut worker.db, worker.mode);
    let handled = catch_unwind(AssertUnwindSafe(|| {
        let outcome = app::handle(&mut ctx, &request);
        (outcome, ctx.env.rate_limit.get(), ctx.env.user_id.take())
    }));
    let (outcome, rate_limit, user_id) = match handled {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            let error = ApiError::Internal(format!("panic: {message}"));
            let outcome = app::Outcome {
                response: app::error_response(&error),
                route: route::parse(&request.method, &request.path).ok(),
                cause: error.internal_cause().map(str::to_owned),
            };
            // The connection may hold an open transaction in an unknown
            // state: dropping it rolls the transaction back.
            worker.db.reset();
            (outcome, None, None)
        }
    };
    if matches!(outcome.response.status, 503) {
        // A connection-level fault leaves the kept connection unusable.
        worker.db.reset();
    }
    let mut response = outcome.response;
    app::finalize(
        &mut response,
        Some(&config),
        Some(&request),
        &request_id,
        rate_limit,
    );
    let level = match response.status {
        500.. => config::LogLevel::Error,
        _ => config::LogLevel::Info,
    };
    if level <= config.log_level {
        log::request(log::Line {
            level,
            request_id: &request_id,
            method: &request.method,
            route: outcome.route,
            status: response.status,
            started,
            user_id: user_id.as_deref(),
            cause: outcome.cause.as_deref(),
        });
    }
    response.to_cgi_bytes()
}

fn read_rest(stdin: &mut dyn Read) -> std::io::Result<u64> {
    std::io::copy(stdin, &mut std::io::sink())
}
