//! The command line of the same binary: `migrate`, `check`, `purge`,
//! `smoke`, `report`, `--version`. No request handling here; each command
//! but `smoke` (a client of a deployed API, `smoke/`) reads the same
//! configuration a request would (environment, then `HEALTHSYNC_ENV_FILE`).
//! `report` reads the request log (`report/`) and, with `--alert`, probes
//! the database as `check` does.

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::{self, Config, DbConfig, EnvFileCache, Variables, ENV_FILE_VARIABLE};
use crate::report::args::{Options as ReportOptions, Refusal as ReportRefusal, Since};
use crate::report::{self, alert};
use crate::smoke;
use crate::store::{clock, db, health, migrate, purge};

const USAGE: &str = "\
healthsync: sync backend for the health app (CGI/FastCGI binary)

Usage:
  healthsync migrate     apply pending schema migrations (prints each one)
  healthsync check       check configuration, database, schema and secrets
  healthsync purge       delete tombstones and conflict-log entries older than
                         TOMBSTONE_DAYS, idempotency keys older than IDEMPOTENCY_HOURS
  healthsync smoke URL   prove a deployed API works, leaving nothing behind
                         (healthsync smoke --help says what it does and prints)
  healthsync report      summarize the request log (LOG_FILE); --alert for cron
                         (healthsync report --help lists the options)
  healthsync --version   print the version

Configuration comes from the environment, then from the .env file named by
HEALTHSYNC_ENV_FILE (keep it outside the web root). Under Apache the same
binary answers the API: as FastCGI when started by mod_fcgid, as CGI
otherwise.";

pub fn run(args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["--version" | "-V" | "version"] => {
            println!("healthsync {}", crate::VERSION);
            ExitCode::SUCCESS
        }
        ["migrate"] => run_migrate(),
        ["check"] => run_check(),
        ["purge"] => run_purge(),
        ["smoke", ..] => run_smoke(&args[1..]),
        ["report", ..] => run_report(&args[1..]),
        [other, ..] => {
            eprintln!("healthsync: unknown command '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `healthsync smoke`: exit 0 when every step matched the contract, 1
/// when one did not or the API could not be reached, 2 on bad usage.
fn run_smoke(args: &[String]) -> ExitCode {
    let options = match smoke::args::parse(args) {
        Ok(options) => options,
        Err(smoke::Refusal::Help) => {
            println!("{}", smoke::HELP);
            return ExitCode::SUCCESS;
        }
        Err(smoke::Refusal::Usage(problem)) => {
            eprintln!("smoke: {problem} (see healthsync smoke --help)");
            return ExitCode::from(2);
        }
    };
    if smoke::run(&options, &mut |line| println!("{line}")) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The variables the way a request would gather them, minus params.
fn gather_variables() -> Result<Variables, String> {
    let process_env = config::process_env().map_err(|e| e.to_string())?;
    config::gather(&process_env, None, &mut EnvFileCache::default()).map_err(|e| e.to_string())
}

/// Loads the configuration the way a request would, minus params.
pub fn load_config() -> Result<Config, String> {
    config::parse(&gather_variables()?).map_err(|e| e.to_string())
}

/// The configuration and a connection for a maintenance command, or the
/// reason there is none, printed with the command's name.
fn config_and_connection(command: &str) -> Result<(Config, db::Db), ExitCode> {
    let config = load_config().map_err(|problem| {
        eprintln!("healthsync {command}: {problem}");
        ExitCode::from(1)
    })?;
    let conn = db::connect(&config.db).map_err(|error| {
        eprintln!(
            "healthsync {command}: cannot reach MySQL at {}:{} ({}){}",
            config.db.host,
            config.db.port,
            error.cause,
            connect_hint(&config.db, &error)
        );
        ExitCode::from(1)
    })?;
    Ok((config, conn))
}

fn run_migrate() -> ExitCode {
    let mut conn = match config_and_connection("migrate") {
        Ok((_, conn)) => conn,
        Err(code) => return code,
    };
    let mut progress = |line: &str| println!("{line}");
    match migrate::migrate(&mut conn, &mut progress) {
        Ok(0) => {
            println!("schema is current (version {})", migrate::latest_version());
            ExitCode::SUCCESS
        }
        Ok(count) => {
            println!(
                "{count} migration(s) applied; schema at version {}",
                migrate::latest_version()
            );
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("healthsync migrate: {problem}");
            ExitCode::from(1)
        }
    }
}

/// What a failed connect most likely means, when the error says more than
/// its text does: a server that takes only TLS refuses a plain login as
/// "access denied" (a user created `REQUIRE SSL`) or "secure transport
/// required"; a certificate it cannot verify is a TLS error.
fn connect_hint(db: &config::DbConfig, error: &db::StoreError) -> String {
    const ACCESS_DENIED: u16 = 1045;
    const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
    let cause = error.cause.to_ascii_lowercase();
    match (db.tls, error.code) {
        (false, Some(SECURE_TRANSPORT_REQUIRED)) => {
            "; the server accepts only TLS connections: set DB_TLS=true".into()
        }
        (false, Some(ACCESS_DENIED)) => {
            "; if the password is right, the server may accept this user only over TLS (REQUIRE SSL): set DB_TLS=true"
                .into()
        }
        (true, _) if cause.contains("certificate") || cause.contains("tls") => {
            "; the server's TLS certificate was not accepted: if it is signed by a private CA, set DB_TLS_CA to that CA's PEM file (DB_HOST must be a name or address the certificate lists)"
                .into()
        }
        _ => String::new(),
    }
}

/// Checks everything a deployment needs and says how to fix what is wrong.
fn run_check() -> ExitCode {
    let mut failures = 0;
    let mut report = |status: &str, message: String| {
        if status == "FAIL" {
            failures += 1;
        }
        println!("{status:<4}  {message}");
    };

    match std::env::var_os(ENV_FILE_VARIABLE) {
        Some(path) => check_env_file(std::path::Path::new(&path), &mut report),
        None => match EnvFileCache::default().default_path() {
            Some(path) => {
                report(
                    "ok",
                    format!("{ENV_FILE_VARIABLE} is not set: reading {path}, the default"),
                );
                check_env_file(std::path::Path::new(&path), &mut report);
            }
            None => report(
                "warn",
                format!(
                    "{ENV_FILE_VARIABLE} is not set and there is no ~/{}: configuration comes from the environment only",
                    config::DEFAULT_ENV_FILE_NAME
                ),
            ),
        },
    }

    let config = match load_config() {
        Ok(config) => {
            report("ok", "configuration parses".into());
            config
        }
        Err(problem) => {
            report("FAIL", problem);
            println!("\n1 problem stops the other checks: fix it and run `healthsync check` again");
            return ExitCode::from(1);
        }
    };

    check_secret(&config.jwt_secret, &mut report);
    match &config.api_base_url {
        Some(url) => report(
            "ok",
            format!("API_BASE_URL={url}: after deploying, `curl {url}/health` should answer ok"),
        ),
        None => report(
            "warn",
            "API_BASE_URL is not set: it is only used for this hint and the deploy smoke test"
                .into(),
        ),
    }
    if config.require_https {
        report(
            "ok",
            "REQUIRE_HTTPS is on: plain-HTTP requests are refused".into(),
        );
    } else {
        report(
            "warn",
            "REQUIRE_HTTPS=false: tokens may cross the network in clear; use only on loopback"
                .into(),
        );
    }

    if let Some(warning) = cleartext_database_warning(&config.db) {
        report("warn", warning);
    }

    check_log_file(&config, &mut report);
    check_database(&config, &mut report);

    if failures == 0 {
        println!("\nall checks passed");
        ExitCode::SUCCESS
    } else {
        println!("\n{failures} problem(s) found");
        ExitCode::from(1)
    }
}

/// The database as `check` sees it (reachable, its schema current), told
/// to `report`; the connection when it was reachable.
fn check_database(config: &Config, report: &mut dyn FnMut(&str, String)) -> Option<db::Db> {
    match db::connect(&config.db) {
        Err(error) => {
            report(
            "FAIL",
            format!(
                "cannot reach MySQL at {}:{} as {} ({}): check DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME{}",
                config.db.host,
                config.db.port,
                config.db.user,
                error.cause,
                connect_hint(&config.db, &error)
            ),
            );
            None
        }
        Ok(mut conn) => {
            let version = health::server_version(&mut conn).ok().flatten();
            report(
                "ok",
                format!(
                    "MySQL reachable at {}:{} (server {}{})",
                    config.db.host,
                    config.db.port,
                    version.unwrap_or_else(|| "?".into()),
                    if config.db.tls { ", TLS" } else { "" }
                ),
            );
            match migrate::state(&mut conn) {
                Ok(migrate::SchemaState::Current(version)) => {
                    report("ok", format!("schema is current (version {version})"))
                }
                Ok(migrate::SchemaState::Empty) => {
                    report("FAIL", "the database has no schema: run `healthsync migrate`".into())
                }
                Ok(migrate::SchemaState::Behind { database, binary }) => report(
                    "FAIL",
                    format!("schema at version {database}, this binary needs {binary}: run `healthsync migrate`"),
                ),
                Ok(migrate::SchemaState::Ahead { database, binary }) => report(
                    "FAIL",
                    format!("schema at version {database} is newer than this binary ({binary}): deploy the newer binary"),
                ),
                Ok(migrate::SchemaState::Edited(label)) => report(
                    "FAIL",
                    format!("migration {label} differs from the one applied: the binary's migrations were edited"),
                ),
                Err(error) => report(
                    "FAIL",
                    format!("cannot read the schema state: {}", error.cause),
                ),
            }
            check_cluster(&mut conn, report);
            Some(conn)
        }
    }
}

/// `LOG_FILE`: unset (the lines go to Apache's error log), or a file this
/// user can append to, outside the web root.
fn check_log_file(config: &Config, report: &mut dyn FnMut(&str, String)) {
    let Some(log_file) = &config.log_file else {
        report(
            "warn",
            "LOG_FILE is not set: request lines go to the web server's error log; set it to a file \
             outside the web root for `healthsync report`"
                .into(),
        );
        return;
    };
    let path = &log_file.path;
    match crate::log::check_appendable(path) {
        Ok(()) => report(
            "ok",
            format!(
                "LOG_FILE={} can be appended to (rotated at {} bytes, {} kept)",
                path.display(),
                log_file.max_bytes,
                log_file.keep
            ),
        ),
        Err(error) => report(
            "FAIL",
            format!(
                "LOG_FILE={} cannot be appended to ({error}): create its directory, or choose another path",
                path.display()
            ),
        ),
    }
    warn_if_in_web_root(path, report);
}

/// `healthsync report`: exit 0 with the report (or, with `--alert`, with
/// nothing to say), 1 when the log cannot be read or an alert was
/// printed, 2 on bad usage.
fn run_report(args: &[String]) -> ExitCode {
    let options = match report::args::parse(args) {
        Ok(options) => options,
        Err(ReportRefusal::Help) => {
            println!("{}", report::args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(ReportRefusal::Usage(problem)) => {
            eprintln!("report: {problem} (see healthsync report --help)");
            return ExitCode::from(2);
        }
    };
    // An alert goes to stdout, which cron mails; so does a failure of the
    // report itself in alert mode.
    let fail = |problem: String| {
        match options.alert {
            true => println!("healthsync: {problem}"),
            false => eprintln!("healthsync report: {problem}"),
        }
        ExitCode::from(1)
    };
    let variables = match gather_variables() {
        Ok(variables) => variables,
        Err(problem) => return fail(problem),
    };
    let (log_file, thresholds) = match (
        config::parse_log_file(&variables),
        config::parse_alerts(&variables),
    ) {
        (Ok(log_file), Ok(thresholds)) => (log_file, thresholds),
        (Err(problem), _) | (_, Err(problem)) => return fail(problem.to_string()),
    };
    let now_ms = clock::to_millis(time::OffsetDateTime::now_utc());
    let since = options.since.clone().unwrap_or(match options.alert {
        true => Since::Last(i64::from(thresholds.window_minutes) * 60_000),
        false => Since::Last(24 * 3_600_000),
    });
    let (files, source) =
        match (&options.apache_log, &log_file) {
            (Some(path), _) => (vec![std::path::PathBuf::from(path)], path.clone()),
            (None, Some(log_file)) => (
                report::log_files(log_file),
                log_file.path.display().to_string(),
            ),
            (None, None) => return fail(
                "LOG_FILE is not set: set it in the env file (see the README), or read the web \
                 server's error log with --apache-log FILE"
                    .into(),
            ),
        };
    let read = report::read(&files, since.start(now_ms));
    if !options.alert {
        let read = match read {
            Ok(read) => read,
            Err(problem) => return fail(problem),
        };
        let summary =
            report::summary::summarize(&read.entries, since.start(now_ms), now_ms, read.unreadable);
        if options.json {
            match serde_json::to_string_pretty(&summary) {
                Ok(text) => println!("{text}"),
                Err(error) => return fail(format!("cannot write JSON: {error}")),
            }
        } else {
            print!("{}", report::summary::render_text(&summary, &source));
        }
        return ExitCode::SUCCESS;
    }
    run_alert(
        &options,
        &variables,
        &thresholds,
        &since,
        read,
        log_file.is_some(),
    )
}

fn run_alert(
    options: &ReportOptions,
    variables: &Variables,
    thresholds: &config::AlertThresholds,
    since: &Since,
    read: Result<report::Read, String>,
    log_file_set: bool,
) -> ExitCode {
    let mut facts = alert::Facts::default();
    let entries = match read {
        Ok(read) => {
            facts.last_line_at = read.last_line_at;
            read.entries
        }
        Err(problem) => {
            facts.log_problem = Some(problem);
            Vec::new()
        }
    };
    let (problems, last_counted) = database_facts(variables);
    facts.database_problems = problems;
    // Requests counted while the log read stayed quiet mean it stopped
    // growing; unless the log read is Apache's while LOG_FILE takes the
    // request lines (Apache's then has only errors).
    if !(options.apache_log.is_some() && log_file_set) {
        facts.last_counted_request = last_counted;
    }
    let alerts = alert::judge(&entries, &since.label(), thresholds, &facts);
    for message in &alerts {
        println!("healthsync: {message}");
    }
    match alerts.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    }
}

/// What `check` finds wrong with the configuration and the database, and
/// the last minute the database counted a request.
fn database_facts(variables: &Variables) -> (Vec<String>, Option<i64>) {
    let config = match config::parse(variables) {
        Ok(config) => config,
        Err(problem) => return (vec![problem.to_string()], None),
    };
    let mut problems = Vec::new();
    let conn = check_database(&config, &mut |status, message| {
        if status == "FAIL" {
            problems.push(message);
        }
    });
    let last_counted = conn.and_then(|mut conn| match health::last_counted_request(&mut conn) {
        Ok(last) => last,
        Err(error) => {
            problems.push(format!(
                "cannot read the rate-limit counters: {}",
                error.cause
            ));
            None
        }
    });
    (problems, last_counted)
}

/// On a Galera cluster node: the cluster's size and state, and the
/// settings healthsync relies on (docs/SCALING.md). A single server says
/// nothing here.
fn check_cluster(conn: &mut db::Db, report: &mut dyn FnMut(&str, String)) {
    let cluster = match health::cluster_state(conn) {
        Ok(Some(cluster)) => cluster,
        Ok(None) => return,
        Err(error) => {
            report(
                "FAIL",
                format!("cannot read the Galera cluster's state: {}", error.cause),
            );
            return;
        }
    };
    let line = format!(
        "Galera cluster: size {}, this node {} ({}), wsrep_ready {}, {} certification conflicts retried here",
        cluster.size,
        cluster.local_state,
        cluster.status,
        if cluster.ready { "ON" } else { "OFF" },
        cluster.conflicts
    );
    if cluster.ready && cluster.status == "Primary" && cluster.local_state == "Synced" {
        report("ok", line);
    } else {
        report(
            "FAIL",
            format!("{line}: the node must be ready, Synced and in the Primary component to serve"),
        );
    }
    if cluster.size < 3 {
        report(
            "warn",
            format!(
                "the cluster has {} node(s): with fewer than 3, losing one loses the quorum",
                cluster.size
            ),
        );
    }
    if !cluster.binlog_format.eq_ignore_ascii_case("ROW") {
        report(
            "FAIL",
            format!(
                "binlog_format is {}: Galera replicates rows only, set binlog_format=ROW",
                cluster.binlog_format
            ),
        );
    }
    if cluster.autoinc_lock_mode != "2" {
        report(
            "warn",
            format!(
                "innodb_autoinc_lock_mode is {}: Galera needs 2 (interleaved)",
                cluster.autoinc_lock_mode
            ),
        );
    }
    report(
        "ok",
        format!(
            "rate limits count per node (MEMORY tables are not replicated): a user reaching \
             the API through k of the {} nodes may get up to k times RATE_LIMIT_PER_MINUTE",
            cluster.size
        ),
    );
}

/// A warning when the database password and every query would cross a
/// network in clear: TCP to a host that is not this machine, without TLS.
fn cleartext_database_warning(db: &DbConfig) -> Option<String> {
    if db.tls || db.socket.is_some() || is_loopback_host(&db.host) {
        return None;
    }
    Some(format!(
        "DB_HOST={} is not a loopback address and DB_TLS is off: the database password \
         and every record cross the network in clear; set DB_TLS=true if the server \
         offers TLS (`mysql -e \"show status like 'Ssl_cipher'\"`)",
        db.host
    ))
}

/// 127.0.0.0/8, ::1 or `localhost`: this machine.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

fn check_env_file(path: &std::path::Path, report: &mut dyn FnMut(&str, String)) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(error) => report(
            "FAIL",
            format!(
                "{ENV_FILE_VARIABLE}={} cannot be read: {error}",
                path.display()
            ),
        ),
        Ok(metadata) => {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                report(
                    "FAIL",
                    format!(
                        "{} is readable by other users (mode {mode:o}): run `chmod 600 {}`",
                        path.display(),
                        path.display()
                    ),
                );
            } else {
                report(
                    "ok",
                    format!("{} is private (mode {mode:o})", path.display()),
                );
            }
            warn_if_in_web_root(path, report);
        }
    }
}

/// Warns of a private file the web server may serve.
fn warn_if_in_web_root(path: &std::path::Path, report: &mut dyn FnMut(&str, String)) {
    if looks_like_web_root(path) {
        report(
            "warn",
            format!(
                "{} looks like it is inside a web root: move it out",
                path.display()
            ),
        );
    }
}

/// A path with a component a web root is usually called.
fn looks_like_web_root(path: &std::path::Path) -> bool {
    path.components().any(|c| {
        let part = c.as_os_str().to_string_lossy();
        part == "public_html" || part == "htdocs" || part == "www"
    })
}

fn check_secret(secret: &[u8], report: &mut dyn FnMut(&str, String)) {
    // The same judgement config::parse refuses a secret by at run time.
    if config::looks_guessable(secret) {
        report(
            "FAIL",
            "JWT_SECRET_KEY looks guessable (a placeholder or few distinct characters): \
             set it to random bytes, e.g. `head -c 48 /dev/urandom | base64`"
                .into(),
        );
    } else {
        report("ok", format!("JWT_SECRET_KEY is {} bytes", secret.len()));
    }
}

fn run_purge() -> ExitCode {
    let (config, mut conn) = match config_and_connection("purge") {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let now = clock::to_millis(time::OffsetDateTime::now_utc());
    let cutoff = now - i64::from(config.tombstone_days) * 24 * 3600 * 1000;
    println!(
        "purging tombstones received before {} (TOMBSTONE_DAYS={})",
        clock::to_rfc3339(cutoff),
        config.tombstone_days
    );
    let started = std::time::Instant::now();
    let mut progress = |totals: &purge::Totals| {
        println!(
            "  {} users checked, {} tombstones purged from {} users ({:.1} s)",
            totals.users_seen,
            totals.tombstones,
            totals.users_purged,
            started.elapsed().as_secs_f64()
        );
    };
    let keys_cutoff = now - i64::from(config.idempotency_hours) * 3600 * 1000;
    let result = purge::purge(&mut conn, cutoff, &mut progress).and_then(|totals| {
        let swept = purge::sweep(&mut conn, cutoff, keys_cutoff)?;
        Ok((totals, swept))
    });
    match result {
        Ok((totals, swept)) => {
            println!(
                "done: {} tombstones purged from {} of {} users; devices with older cursors will be asked to pull again",
                totals.tombstones, totals.users_purged, totals.users_seen
            );
            println!(
                "swept: {} conflict-log entries older than TOMBSTONE_DAYS, {} idempotency keys older than IDEMPOTENCY_HOURS={}",
                swept.conflicts, swept.idempotency_keys, config.idempotency_hours
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("healthsync purge: {}", error.cause);
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(host: &str, tls: bool, socket: Option<&str>) -> DbConfig {
        DbConfig {
            host: host.into(),
            port: 3306,
            name: "healthsync".into(),
            user: "healthsync".into(),
            pass: String::new(),
            socket: socket.map(str::to_owned),
            tls,
            tls_ca: None,
        }
    }

    #[test]
    fn loopback_hosts_are_this_machine() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.5",
            "mysql.example.com",
            "128.0.0.1",
            "::2",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_remote_database_without_tls_is_warned_about() {
        let warning = cleartext_database_warning(&db("mysql.example.com", false, None));
        assert!(warning
            .is_some_and(|w| w.contains("DB_HOST=mysql.example.com") && w.contains("DB_TLS")));
        assert_eq!(
            cleartext_database_warning(&db("mysql.example.com", true, None)),
            None
        );
        assert_eq!(
            cleartext_database_warning(&db("127.0.0.1", false, None)),
            None
        );
        assert_eq!(cleartext_database_warning(&db("::1", false, None)), None);
        assert_eq!(
            cleartext_database_warning(&db(
                "db.example.com",
                false,
                Some("/run/mysqld/mysqld.sock")
            )),
            None
        );
    }
}
