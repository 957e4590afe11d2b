//! Transport only: decides CGI, FastCGI or command line, turns the web
//! server's params and stdin into a `Request`, runs `app::handle` under
//! `catch_unwind`, and writes the buffered response once (then a spooled
//! body, if the response has one, a piece at a time). The only module that
//! touches the process environment and stdio.

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use healthsync::config::{self, Config, EnvFileCache, Variables};
use healthsync::ctx::{Ctx, Seen};
use healthsync::error::ApiError;
use healthsync::http::{self, Params, Request};
use healthsync::reply::{self, Timing};
use healthsync::store::db::DbSlot;
use healthsync::{app, cli, fcgi, log, route};

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
    /// The last configuration parsed and the variables it came from: a
    /// FastCGI worker gets the same `SetEnv` values with every request,
    /// and parses them once.
    parsed: Option<(Variables, Rc<Config>)>,
    argv_len: usize,
    /// `LOG_FILE`, kept open between requests.
    log: log::LogSink,
}

impl Worker {
    /// The request's configuration, parsed unless it is the last one's.
    fn config(&mut self, params: &Params) -> Result<Rc<Config>, config::ConfigError> {
        let process_env = self.process_env.as_ref().map_err(Clone::clone)?;
        let variables = config::gather(process_env, Some(params), &mut self.env_files)?;
        if let Some((last, parsed)) = &self.parsed {
            if *last == variables {
                return Ok(Rc::clone(parsed));
            }
        }
        let parsed = Rc::new(config::parse(&variables)?);
        self.parsed = Some((variables, Rc::clone(&parsed)));
        Ok(parsed)
    }

    fn new(mode: &'static str) -> Worker {
        Worker {
            mode,
            db: DbSlot::default(),
            env_files: EnvFileCache::default(),
            process_env: config::process_env(),
            parsed: None,
            argv_len: std::env::args_os().len().saturating_sub(1),
            log: log::LogSink::default(),
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
    let answer = serve(&mut worker, &params, &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    // Nothing useful can be done if Apache closed the pipe.
    let _ = stdout.write_all(&answer.bytes);
    let _ = stdout.write_all(&answer.body);
    if let Some(mut rest) = answer.rest {
        copy_out(&mut rest, &mut stdout);
    }
    let _ = stdout.flush();
}

/// Copies a spooled body to stdout in pieces of 64 KiB. A read error
/// mid-way leaves the body short of its `Content-Length`, which Apache
/// and the client see; it is logged.
fn copy_out(rest: &mut dyn Read, stdout: &mut dyn Write) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match rest.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                log::event(
                    config::LogLevel::Error,
                    &format!("spooled body unreadable mid-way: {error}"),
                );
                return;
            }
        };
        let Some(piece) = buffer.get(..read) else {
            return;
        };
        if stdout.write_all(piece).is_err() {
            return;
        }
    }
}

/// The most body bytes a FastCGI request is buffered with: above any
/// sensible `MAX_BODY_BYTES` (which is checked per request, from params
/// that only arrive with the request), and above what mod_fcgid's
/// `FcgidMaxRequestLen` lets through on a shared host.
const FASTCGI_MAX_BODY: usize = 32 * 1024 * 1024;

/// Requests one after another on this thread: mod_fcgid sends one request
/// per connection and one connection at a time per process, so a thread
/// per connection would only cost a spawn and cold caches per request.
fn run_fastcgi() {
    let mut worker = Worker::new("fastcgi");
    let served = fcgi::run(
        FASTCGI_MAX_BODY,
        |pairs, body| serve(&mut worker, &Params::from(pairs), body),
        |error| {
            log::event(
                config::LogLevel::Warn,
                &format!("fastcgi connection: {error}"),
            )
        },
    );
    if let Err(error) = served {
        log::event(config::LogLevel::Error, &format!("fastcgi accept: {error}"));
    }
}

/// One request, start to finish. Never panics outward: a panic in a route
/// is a 500, the transaction it held rolls back as its connection is
/// dropped, and the process serves the next request.
fn serve(worker: &mut Worker, params: &Params, stdin: &mut dyn Read) -> fcgi::Answer {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let config = worker.config(params);
    let max_body = config
        .as_ref()
        .map_or(5 * 1024 * 1024, |c| c.max_body_bytes);
    let body = http::read_request_body(params, stdin, max_body);
    let mut request = Request::from_params(params, body);
    request.argv_len = worker.argv_len;

    let config = match config {
        Ok(config) => config,
        Err(problem) => {
            let error = ApiError::Internal(problem.to_string());
            let mut response = reply::error_response(&error);
            let timing = Timing {
                total: started.elapsed(),
                db: None,
            };
            reply::finalize(
                &mut response,
                None,
                Some(&request),
                &request_id,
                &Seen::default(),
                timing,
            );
            log::request(
                log::Line {
                    level: config::LogLevel::Error,
                    request_id: &request_id,
                    method: &request.method,
                    route: None,
                    status: response.status,
                    timing,
                    seen: &Seen::default(),
                    cause: Some(&problem.to_string()),
                },
                None,
                &mut worker.log,
            );
            return answer(response);
        }
    };

    let handled = catch_unwind(AssertUnwindSafe(|| {
        let mut ctx = Ctx::new(&config, &mut worker.db, worker.mode);
        app::handle(&mut ctx, &request)
    }));
    let outcome = match handled {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            let error = ApiError::Internal(format!("panic: {message}"));
            let outcome = app::Outcome {
                response: reply::error_response(&error),
                route: route::parse(&request.method, &request.path).ok(),
                cause: error.internal_cause().map(str::to_owned),
                seen: Seen::default(),
            };
            // The connection may hold an open transaction in an unknown
            // state: dropping it rolls the transaction back.
            worker.db.reset();
            outcome
        }
    };
    let db_time = worker.db.take_spent();
    if matches!(outcome.response.status, 503) {
        // A connection-level fault leaves the kept connection unusable.
        worker.db.reset();
    }
    let mut response = outcome.response;
    let timing = Timing {
        total: started.elapsed(),
        db: db_time,
    };
    reply::finalize(
        &mut response,
        Some(&config),
        Some(&request),
        &request_id,
        &outcome.seen,
        timing,
    );
    let level = match response.status {
        500.. => config::LogLevel::Error,
        _ => config::LogLevel::Info,
    };
    log::request(
        log::Line {
            level,
            request_id: &request_id,
            method: &request.method,
            route: outcome.route,
            status: response.status,
            timing,
            seen: &outcome.seen,
            cause: outcome.cause.as_deref(),
        },
        Some(&config),
        &mut worker.log,
    );
    answer(response)
}

/// The response as the transport writes it: the head and buffered body,
/// then the spool.
fn answer(mut response: http::Response) -> fcgi::Answer {
    let bytes = response.cgi_head();
    fcgi::Answer {
        bytes,
        body: std::mem::take(&mut response.body),
        rest: response
            .spool
            .take()
            .map(|spool| Box::new(spool) as Box<dyn Read>),
    }
}
