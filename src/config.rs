//! Configuration: the process environment, then the request's params (an
//! `.htaccess` `SetEnv` reaches FastCGI params, never the FastCGI process's
//! environment), then the `.env` file named by `HEALTHSYNC_ENV_FILE`, or
//! else `healthsync.env` in the home directory of the user the binary runs
//! as (suEXEC strips `SetEnv` from a CGI program's environment, so on a
//! shared host in CGI mode that file is the only source there is). The
//! first source that has a variable wins. Parsed with envy into `Config`
//! once per request (cheap: a few dozen strings), so a bad value is one log
//! line naming the variable and a 500 to the client that names nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::http::Params;

/// Every variable the binary reads. Anything else in the environment or the
/// params (HTTP headers among them) is ignored.
pub const VARIABLES: &[&str] = &[
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_PASS",
    "DB_SOCKET",
    "DB_TLS",
    "DB_TLS_CA",
    "JWT_SECRET_KEY",
    "API_BASE_URL",
    "CORS_ALLOWED_ORIGINS",
    "MAX_BODY_BYTES",
    "MAX_BATCH",
    "MAX_RECORD_BYTES",
    "MAX_PAGE_BYTES",
    "MAX_RECORDS_PER_USER",
    "MAX_USER_DATA_BYTES",
    "RATE_LIMIT_PER_MINUTE",
    "AUTH_RATE_LIMIT_PER_MINUTE",
    "TOMBSTONE_DAYS",
    "IDEMPOTENCY_HOURS",
    "REQUIRE_HTTPS",
    "LOG_LEVEL",
    "TMPDIR",
    "LOG_FILE",
    "LOG_FILE_MAX_BYTES",
    "LOG_FILE_KEEP",
    "ALERT_WINDOW_MINUTES",
    "ALERT_MIN_REQUESTS",
    "ALERT_5XX_PERCENT",
    "ALERT_SYNC_P95_MS",
    "ALERT_BURST_MINUTES",
    "ALERT_503_BURST",
    "ALERT_FAILED_LOGIN_BURST",
    "ALERT_LOG_STALE_MINUTES",
];

pub const ENV_FILE_VARIABLE: &str = "HEALTHSYNC_ENV_FILE";

/// The name of the `.env` file looked for in the home directory when
/// `HEALTHSYNC_ENV_FILE` is not set.
pub const DEFAULT_ENV_FILE_NAME: &str = "healthsync.env";

pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// The parsed, checked configuration.
#[derive(Clone)]
pub struct Config {
    pub db: DbConfig,
    pub jwt_secret: Vec<u8>,
    pub api_base_url: Option<String>,
    pub cors_allowed_origins: Vec<String>,
    pub max_body_bytes: u64,
    pub max_batch: usize,
    pub max_record_bytes: usize,
    /// A page of records stops before the record that would carry its
    /// compact JSON past this (contract section 5, v2).
    pub max_page_bytes: usize,
    /// Quotas (contract section 7, v2): rows over all five entities,
    /// tombstones included, and bytes of stored `data` as compact JSON.
    pub max_records_per_user: u64,
    pub max_user_data_bytes: u64,
    pub rate_limit_per_minute: u32,
    pub auth_rate_limit_per_minute: u32,
    pub tombstone_days: u32,
    /// An `Idempotency-Key`'s stored answer is replayed for at least this
    /// long (contract section 9.1), then may be swept.
    pub idempotency_hours: u32,
    pub require_https: bool,
    pub log_level: LogLevel,
    /// Where a large answer (the export) is spooled: an unlinked file the
    /// size of the answer, gone when the request ends.
    pub spool_dir: PathBuf,
    /// The request log of its own (`LOG_FILE`), when set.
    pub log_file: Option<LogFile>,
}

/// `LOG_FILE` and its rotation: one JSON line per request is appended to
/// `path`; a writer that finds it would pass `max_bytes` renames it to
/// `path.1` (shifting `path.1` to `path.2` ..., up to `path.<keep>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

pub const DEFAULT_LOG_FILE_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_LOG_FILE_KEEP: u32 = 5;

/// The thresholds of `healthsync report --alert` (`ALERT_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertThresholds {
    /// The window `--alert` looks at unless `--since` says otherwise.
    pub window_minutes: u32,
    /// Fewer requests (or sync requests) in the window than this, and the
    /// rate and p95 alerts stay silent: three requests make no rate.
    pub min_requests: u64,
    /// 5xx answers, in percent of all requests in the window.
    pub error_percent: f64,
    /// p95 of the sync routes' total time (push, pull, bulk), ms.
    pub sync_p95_ms: f64,
    /// The span of a burst.
    pub burst_minutes: u32,
    /// 503s within one burst span.
    pub unavailable_burst: u64,
    /// Failed or locked-out logins within one burst span.
    pub failed_login_burst: u64,
    /// Requests counted by the database this long after the log's last
    /// line: the log stopped growing.
    pub log_stale_minutes: u32,
}

impl Default for AlertThresholds {
    fn default() -> AlertThresholds {
        AlertThresholds {
            window_minutes: 15,
            min_requests: 20,
            error_percent: 5.0,
            sync_p95_ms: 1000.0,
            burst_minutes: 5,
            unavailable_burst: 10,
            failed_login_burst: 20,
            log_stale_minutes: 10,
        }
    }
}

impl std::fmt::Debug for Config {
    /// Never prints the secret or the database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db_host", &self.db.host)
            .field("db_name", &self.db.name)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// Where and how to reach MySQL. Compared to decide whether a kept
/// connection still fits the request's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub pass: String,
    pub socket: Option<String>,
    pub tls: bool,
    /// A PEM file of CA certificates trusted for the server's certificate,
    /// besides the public roots the binary carries.
    pub tls_ca: Option<PathBuf>,
}

/// A configuration problem, named for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config: {}: {}", self.variable, self.problem)
    }
}

fn problem(variable: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
struct RawConfig {
    db_host: Option<String>,
    db_port: Option<u16>,
    db_name: Option<String>,
    db_user: Option<String>,
    db_pass: Option<String>,
    db_socket: Option<String>,
    db_tls: Option<String>,
    db_tls_ca: Option<String>,
    jwt_secret_key: Option<String>,
    api_base_url: Option<String>,
    cors_allowed_origins: Option<String>,
    max_body_bytes: Option<u64>,
    max_batch: Option<usize>,
    max_record_bytes: Option<usize>,
    max_page_bytes: Option<usize>,
    max_records_per_user: Option<u64>,
    max_user_data_bytes: Option<u64>,
    rate_limit_per_minute: Option<u32>,
    auth_rate_limit_per_minute: Option<u32>,
    tmpdir: Option<String>,
    tombstone_days: Option<u32>,
    idempotency_hours: Option<u32>,
    require_https: Option<String>,
    log_level: Option<String>,
}

/// The variables from every source, merged by precedence.
pub type Variables = HashMap<String, String>;

/// Merges the sources, first one wins: process environment, params, `.env`.
pub fn gather(
    process_env: &Variables,
    params: Option<&Params>,
    env_files: &mut EnvFileCache,
) -> Result<Variables, ConfigError> {
    let mut merged = Variables::new();
    let from_params = |name: &str| -> Result<Option<String>, ConfigError> {
        match params.map(|p| p.text(name)) {
            None | Some(Ok(None)) => Ok(None),
            Some(Ok(Some(value))) => Ok(Some(value.to_owned())),
            Some(Err(_)) => Err(problem(name, "is not valid UTF-8")),
        }
    };
    let env_file = match process_env.get(ENV_FILE_VARIABLE) {
        Some(path) => Some(path.clone()),
        None => match from_params(ENV_FILE_VARIABLE)? {
            Some(path) => Some(path),
            None => env_files.default_path(),
        },
    };
    let file_values = match env_file.as_deref() {
        Some(path) if !path.is_empty() => env_files.load(Path::new(path))?,
        _ => Vec::new(),
    };
    for name in VARIABLES {
        let value = match process_env.get(*name) {
            Some(value) => Some(value.clone()),
            None => from_params(name)?,
        };
        let value = value.or_else(|| {
            file_values
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        });
        if let Some(value) = value {
            merged.insert((*name).to_owned(), value);
        }
    }
    if let Some(path) = env_file {
        merged.insert(ENV_FILE_VARIABLE.to_owned(), path);
    }
    Ok(merged)
}

/// Parses and checks merged variables.
pub fn parse(variables: &Variables) -> Result<Config, ConfigError> {
    let pairs = variables
        .iter()
        .filter(|(key, value)| VARIABLES.contains(&key.as_str()) && !is_blank_optional(key, value))
        .map(|(key, value)| (key.clone(), value.clone()));
    let raw: RawConfig = envy::from_iter(pairs).map_err(|error| match error {
        envy::Error::MissingValue(field) => problem(&field.to_ascii_uppercase(), "is missing"),
        envy::Error::Custom(message) => {
            let variable = VARIABLES
                .iter()
                .find(|name| message.ends_with(&format!("provided by {name}")))
                .copied()
                .unwrap_or("configuration");
            // envy quotes the value; for a secret that would leak it.
            let cause = message
                .split(" while parsing")
                .next()
                .unwrap_or("invalid value");
            problem(variable, format!("invalid value ({cause})"))
        }
    })?;

    let socket = raw.db_socket.filter(|s| !s.is_empty());
    let host = match (raw.db_host, &socket) {
        (Some(host), _) if !host.is_empty() => host,
        (_, Some(_)) => "localhost".to_owned(),
        _ => {
            return Err(problem(
                "DB_HOST",
                "is missing (the MySQL server's host name)",
            ))
        }
    };
    let name = required(raw.db_name, "DB_NAME")?;
    let user = required(raw.db_user, "DB_USER")?;
    let tls = parse_bool("DB_TLS", raw.db_tls.as_deref(), false)?;
    if tls && !cfg!(feature = "tls") {
        return Err(problem(
            "DB_TLS",
            "is true but this binary was built without TLS support",
        ));
    }
    let tls_ca = raw
        .db_tls_ca
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    if let Some(path) = &tls_ca {
        if !tls {
            return Err(problem("DB_TLS_CA", "is set but DB_TLS is not true"));
        }
        if !path.is_file() {
            return Err(problem(
                "DB_TLS_CA",
                format!("{} is not a readable file", path.display()),
            ));
        }
    }
    let secret = required(raw.jwt_secret_key, "JWT_SECRET_KEY")?;
    if looks_guessable(secret.as_bytes()) {
        return Err(problem(
            "JWT_SECRET_KEY",
            "looks guessable (a placeholder word or few distinct characters): set it to random bytes, e.g. `head -c 48 /dev/urandom | base64`",
        ));
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(problem(
            "JWT_SECRET_KEY",
            format!(
                "is {} bytes; it must be at least {MIN_SECRET_BYTES} random bytes (try: head -c 48 /dev/urandom | base64)",
                secret.len()
            ),
        ));
    }
    let max_body_bytes = positive("MAX_BODY_BYTES", raw.max_body_bytes, 5 * 1024 * 1024)?;
    let max_batch = positive("MAX_BATCH", raw.max_batch, 1000)?;
    let max_record_bytes = positive("MAX_RECORD_BYTES", raw.max_record_bytes, 64 * 1024)?;
    let max_page_bytes = positive("MAX_PAGE_BYTES", raw.max_page_bytes, 4 * 1024 * 1024)?;
    let max_records_per_user = positive("MAX_RECORDS_PER_USER", raw.max_records_per_user, 100_000)?;
    let max_user_data_bytes = positive(
        "MAX_USER_DATA_BYTES",
        raw.max_user_data_bytes,
        100 * 1024 * 1024,
    )?;
    let rate_limit_per_minute = positive("RATE_LIMIT_PER_MINUTE", raw.rate_limit_per_minute, 100)?;
    let auth_rate_limit_per_minute = positive(
        "AUTH_RATE_LIMIT_PER_MINUTE",
        raw.auth_rate_limit_per_minute,
        10,
    )?;
    let tombstone_days = positive("TOMBSTONE_DAYS", raw.tombstone_days, 180)?;
    let idempotency_hours = positive("IDEMPOTENCY_HOURS", raw.idempotency_hours, 24)?;
    let require_https = parse_bool("REQUIRE_HTTPS", raw.require_https.as_deref(), true)?;
    let log_level = match raw
        .log_level
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("info") => LogLevel::Info,
        Some("error") => LogLevel::Error,
        Some("warn") | Some("warning") => LogLevel::Warn,
        Some("debug") => LogLevel::Debug,
        Some(_) => {
            return Err(problem(
                "LOG_LEVEL",
                "must be one of error, warn, info, debug",
            ))
        }
    };
    let log_file = parse_log_file(variables)?;
    let cors_allowed_origins = raw
        .cors_allowed_origins
        .unwrap_or_default()
        .split(',')
        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
        .filter(|origin| !origin.is_empty())
        .collect();
    Ok(Config {
        db: DbConfig {
            host,
            port: raw.db_port.unwrap_or(3306),
            name,
            user,
            pass: raw.db_pass.unwrap_or_default(),
            socket,
            tls,
            tls_ca,
        },
        jwt_secret: secret.into_bytes(),
        api_base_url: raw.api_base_url.filter(|url| !url.is_empty()),
        cors_allowed_origins,
        max_body_bytes,
        max_batch,
        max_record_bytes,
        max_page_bytes,
        max_records_per_user,
        max_user_data_bytes,
        rate_limit_per_minute,
        auth_rate_limit_per_minute,
        tombstone_days,
        idempotency_hours,
        require_https,
        log_level,
        spool_dir: PathBuf::from(
            raw.tmpdir
                .filter(|dir| !dir.is_empty())
                .unwrap_or_else(|| "/tmp".to_owned()),
        ),
        log_file,
    })
}

/// A variable of the monitoring group, blank or absent: `None`.
fn value_of<'a>(variables: &'a Variables, name: &str) -> Option<&'a str> {
    variables
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// A number greater than 0, or the default when the variable is unset.
fn positive_number<T>(variables: &Variables, name: &str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    match value_of(variables, name) {
        None => Ok(default),
        Some(text) => match text.parse::<T>() {
            Ok(value) if value > T::default() => Ok(value),
            _ => Err(problem(name, "must be a number greater than 0")),
        },
    }
}

/// `LOG_FILE`, `LOG_FILE_MAX_BYTES`, `LOG_FILE_KEEP`. Read by requests and
/// by `healthsync report`, which needs no database settings.
pub fn parse_log_file(variables: &Variables) -> Result<Option<LogFile>, ConfigError> {
    let max_bytes = positive_number(variables, "LOG_FILE_MAX_BYTES", DEFAULT_LOG_FILE_MAX_BYTES)?;
    let keep = positive_number(variables, "LOG_FILE_KEEP", DEFAULT_LOG_FILE_KEEP)?;
    if keep > 99 {
        return Err(problem("LOG_FILE_KEEP", "must be at most 99"));
    }
    let Some(path) = value_of(variables, "LOG_FILE") else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    // A relative path would be taken from the working directory, which
    // under Apache is the document root: the log would be served.
    if !path.is_absolute() {
        return Err(problem(
            "LOG_FILE",
            "must be an absolute path (outside the web root)",
        ));
    }
    Ok(Some(LogFile {
        path,
        max_bytes,
        keep,
    }))
}

/// The `ALERT_*` thresholds of `healthsync report --alert`.
pub fn parse_alerts(variables: &Variables) -> Result<AlertThresholds, ConfigError> {
    let defaults = AlertThresholds::default();
    Ok(AlertThresholds {
        window_minutes: positive_number(
            variables,
            "ALERT_WINDOW_MINUTES",
            defaults.window_minutes,
        )?,
        min_requests: positive_number(variables, "ALERT_MIN_REQUESTS", defaults.min_requests)?,
        error_percent: positive_number(variables, "ALERT_5XX_PERCENT", defaults.error_percent)?,
        sync_p95_ms: positive_number(variables, "ALERT_SYNC_P95_MS", defaults.sync_p95_ms)?,
        burst_minutes: positive_number(variables, "ALERT_BURST_MINUTES", defaults.burst_minutes)?,
        unavailable_burst: positive_number(
            variables,
            "ALERT_503_BURST",
            defaults.unavailable_burst,
        )?,
        failed_login_burst: positive_number(
            variables,
            "ALERT_FAILED_LOGIN_BURST",
            defaults.failed_login_burst,
        )?,
        log_stale_minutes: positive_number(
            variables,
            "ALERT_LOG_STALE_MINUTES",
            defaults.log_stale_minutes,
        )?,
    })
}

/// A token secret anyone could guess: a placeholder left in from an
/// example, or too few distinct bytes to be random (48 random bytes in
/// base64 have dozens). Such a secret lets anyone sign tokens, so the
/// binary refuses it at run time, not only in `check`.
pub fn looks_guessable(secret: &[u8]) -> bool {
    let mut distinct = secret.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let text = String::from_utf8_lossy(secret).to_ascii_lowercase();
    let placeholder = ["secret", "changeme", "your_", "example", "password"]
        .iter()
        .any(|word| text.contains(word));
    placeholder || distinct.len() < 12
}

/// An empty optional number or flag means "use the default", as most
/// `.env` readers treat `KEY=`.
fn is_blank_optional(key: &str, value: &str) -> bool {
    value.trim().is_empty() && !matches!(key, "DB_PASS" | "DB_NAME" | "DB_USER" | "JWT_SECRET_KEY")
}

fn required(value: Option<String>, variable: &str) -> Result<String, ConfigError> {
    match value {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(problem(variable, "is missing")),
    }
}

fn positive<T: PartialEq + Default>(
    variable: &str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(value) if value == T::default() => Err(problem(variable, "must be greater than 0")),
        Some(value) => Ok(value),
    }
}

fn parse_bool(variable: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(problem(variable, "must be true or false")),
    }
}

/// The `.env` file's pairs, re-read only when the file changes, so a kept
/// FastCGI process does not parse it on every request.
#[derive(Default)]
pub struct EnvFileCache {
    loaded: Option<LoadedEnvFile>,
    /// `~/healthsync.env` if it exists, looked up once per process.
    default: Option<Option<String>>,
}

type LoadedEnvFile = (PathBuf, Option<SystemTime>, Vec<(String, String)>);

impl EnvFileCache {
    /// `healthsync.env` in the home directory, when that file exists.
    pub fn default_path(&mut self) -> Option<String> {
        self.default
            .get_or_insert_with(|| {
                let path = home_dir()?.join(DEFAULT_ENV_FILE_NAME);
                let path = path.is_file().then_some(path)?;
                path.into_os_string().into_string().ok()
            })
            .clone()
    }

    pub fn load(&mut self, path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
        let metadata = std::fs::metadata(path).map_err(|error| {
            problem(
                ENV_FILE_VARIABLE,
                format!("cannot read {}: {error}", path.display()),
            )
        })?;
        let modified = metadata.modified().ok();
        if let Some((cached_path, cached_modified, pairs)) = &self.loaded {
            if cached_path == path && *cached_modified == modified && modified.is_some() {
                return Ok(pairs.clone());
            }
        }
        let iter = dotenvy::from_path_iter(path).map_err(|error| {
            problem(
                ENV_FILE_VARIABLE,
                format!("cannot read {}: {error}", path.display()),
            )
        })?;
        let mut pairs = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|error| {
                problem(
                    ENV_FILE_VARIABLE,
                    format!("{} is not a valid .env file: {error}", path.display()),
                )
            })?;
            pairs.push((key, value));
        }
        self.loaded = Some((path.to_owned(), modified, pairs.clone()));
        Ok(pairs)
    }
}

/// The home directory of the user this process runs as: `HOME` when set
/// (a login shell), else that user's entry in `/etc/passwd` (suEXEC and
/// mod_fcgid start the binary with neither `HOME` nor `USER`).
pub fn home_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        if home.is_absolute() {
            return Some(home);
        }
    }
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    home_of(&passwd, uid)
}

/// The home directory of `uid` in a passwd file's text.
fn home_of(passwd: &str, uid: u32) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [_, _, id, _, _, home, ..] if id.parse() == Ok(uid) && home.starts_with('/') => {
                Some(PathBuf::from(home))
            }
            _ => None,
        }
    })
}

/// The process environment, as far as config is concerned. Variables that
/// are not UTF-8 are reported, not dropped silently.
pub fn process_env() -> Result<Variables, ConfigError> {
    let mut vars = Variables::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if !VARIABLES.contains(&key) && key != ENV_FILE_VARIABLE {
            continue;
        }
        match value.into_string() {
            Ok(value) => {
                vars.insert(key.to_owned(), value);
            }
            Err(_) => return Err(problem(key, "is not valid UTF-8")),
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> Variables {
        vars(&[
            ("DB_HOST", "db.example.com"),
            ("DB_NAME", "hs"),
            ("DB_USER", "hs"),
            ("DB_PASS", "pw"),
            ("JWT_SECRET_KEY", "0123456789abcdef0123456789abcdef"),
        ])
    }

    fn check_error(overrides: &[(&str, &str)], variable: &str) {
        let mut variables = base();
        for (key, value) in overrides {
            variables.insert((*key).to_owned(), (*value).to_owned());
        }
        let failed = parse(&variables).err().map(|error| error.variable);
        assert_eq!(failed.as_deref(), Some(variable), "{overrides:?}");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let parsed = parse(&base());
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        let Ok(config) = parsed else { return };
        assert_eq!(config.db.port, 3306);
        assert_eq!(config.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(config.max_batch, 1000);
        assert_eq!(config.max_record_bytes, 64 * 1024);
        assert_eq!(config.max_page_bytes, 4 * 1024 * 1024);
        assert_eq!(config.max_records_per_user, 100_000);
        assert_eq!(config.max_user_data_bytes, 100 * 1024 * 1024);
        assert_eq!(config.rate_limit_per_minute, 100);
        assert_eq!(config.auth_rate_limit_per_minute, 10);
        assert_eq!(config.tombstone_days, 180);
        assert_eq!(config.idempotency_hours, 24);
        assert!(config.require_https);
        assert!(config.cors_allowed_origins.is_empty());
    }

    #[test]
    fn bad_values_name_their_variable() {
        check_error(&[("DB_PORT", "abc")], "DB_PORT");
        check_error(&[("MAX_BATCH", "-1")], "MAX_BATCH");
        check_error(&[("MAX_BATCH", "0")], "MAX_BATCH");
        check_error(&[("IDEMPOTENCY_HOURS", "0")], "IDEMPOTENCY_HOURS");
        check_error(&[("REQUIRE_HTTPS", "maybe")], "REQUIRE_HTTPS");
        check_error(&[("JWT_SECRET_KEY", "short")], "JWT_SECRET_KEY");
        check_error(&[("JWT_SECRET_KEY", "")], "JWT_SECRET_KEY");
        check_error(
            &[("JWT_SECRET_KEY", "changeme-changeme-changeme-changeme-0123")],
            "JWT_SECRET_KEY",
        );
        check_error(
            &[("JWT_SECRET_KEY", "abababababababababababababababababab")],
            "JWT_SECRET_KEY",
        );
        check_error(&[("DB_NAME", "")], "DB_NAME");
        check_error(&[("LOG_LEVEL", "loud")], "LOG_LEVEL");
        check_error(&[("DB_HOST", "")], "DB_HOST");
        check_error(&[("DB_TLS_CA", "/etc/hostname")], "DB_TLS_CA");
        if cfg!(feature = "tls") {
            check_error(
                &[("DB_TLS", "true"), ("DB_TLS_CA", "/nonexistent/ca.pem")],
                "DB_TLS_CA",
            );
        }
    }

    #[test]
    fn the_log_file_is_optional_absolute_and_rotated_by_size() {
        let parsed = parse(&base()).map(|config| config.log_file);
        assert_eq!(parsed, Ok(None));
        let mut variables = base();
        variables.insert("LOG_FILE".into(), "/home/u/logs/healthsync.log".into());
        let parsed = parse(&variables).map(|config| config.log_file);
        assert_eq!(
            parsed,
            Ok(Some(LogFile {
                path: PathBuf::from("/home/u/logs/healthsync.log"),
                max_bytes: DEFAULT_LOG_FILE_MAX_BYTES,
                keep: DEFAULT_LOG_FILE_KEEP,
            }))
        );
        check_error(&[("LOG_FILE", "logs/healthsync.log")], "LOG_FILE");
        check_error(
            &[("LOG_FILE", "/tmp/x.log"), ("LOG_FILE_MAX_BYTES", "0")],
            "LOG_FILE_MAX_BYTES",
        );
        check_error(&[("LOG_FILE_KEEP", "many")], "LOG_FILE_KEEP");
        check_error(&[("LOG_FILE_KEEP", "100")], "LOG_FILE_KEEP");
    }

    #[test]
    fn alert_thresholds_have_defaults_and_name_a_bad_value() {
        assert_eq!(
            parse_alerts(&Variables::new()),
            Ok(AlertThresholds::default())
        );
        let set = vars(&[("ALERT_5XX_PERCENT", "2.5"), ("ALERT_503_BURST", "3")]);
        let parsed = parse_alerts(&set);
        assert_eq!(
            parsed
                .as_ref()
                .map(|a| (a.error_percent, a.unavailable_burst)),
            Ok((2.5, 3))
        );
        for (name, value) in [
            ("ALERT_5XX_PERCENT", "-1"),
            ("ALERT_SYNC_P95_MS", "fast"),
            ("ALERT_BURST_MINUTES", "0"),
            ("ALERT_WINDOW_MINUTES", "1.5"),
        ] {
            let failed = parse_alerts(&vars(&[(name, value)])).err();
            assert_eq!(failed.map(|e| e.variable).as_deref(), Some(name));
        }
    }

    #[test]
    fn the_home_directory_file_is_read_when_no_variable_names_one() {
        let dir = std::env::temp_dir().join(format!("hs-config-home-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let home_file = dir.join(DEFAULT_ENV_FILE_NAME);
        let named_file = dir.join("named.env");
        assert!(std::fs::write(&home_file, "DB_NAME=from_home\n").is_ok());
        assert!(std::fs::write(&named_file, "DB_NAME=from_named\n").is_ok());
        let mut cache = EnvFileCache {
            loaded: None,
            default: Some(Some(home_file.display().to_string())),
        };

        let from_home = gather(&Variables::new(), None, &mut cache);
        assert_eq!(
            from_home
                .ok()
                .and_then(|v| v.get("DB_NAME").cloned())
                .as_deref(),
            Some("from_home")
        );

        let mut params = Params::new();
        params.insert(ENV_FILE_VARIABLE, named_file.display().to_string());
        let named = gather(&Variables::new(), Some(&params), &mut cache);
        assert_eq!(
            named
                .ok()
                .and_then(|v| v.get("DB_NAME").cloned())
                .as_deref(),
            Some("from_named")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_home_is_found_by_uid_in_a_passwd_file() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      broken line\n\
                      web:x:1001:1001:Web,,,:/home/web:/bin/sh\n\
                      nohome:x:1002:1002::relative:/bin/sh\n";
        assert_eq!(home_of(passwd, 1001), Some(PathBuf::from("/home/web")));
        assert_eq!(home_of(passwd, 0), Some(PathBuf::from("/root")));
        assert_eq!(home_of(passwd, 1002), None);
        assert_eq!(home_of(passwd, 4242), None);
    }

    #[test]
    fn a_bad_secret_is_never_echoed() {
        let mut variables = base();
        variables.insert("JWT_SECRET_KEY".into(), "hunter2".into());
        let error = parse(&variables)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn the_process_environment_wins_over_params_and_params_over_the_file() {
        let dir = std::env::temp_dir().join(format!("hs-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("test.env");
        let written = std::fs::write(&file, "DB_NAME=from_file\nDB_USER=file_user\nMAX_BATCH=7\n");
        assert!(written.is_ok());
        let mut params = Params::new();
        params.insert("DB_USER", "param_user");
        params.insert("MAX_BATCH", "8");
        params.insert(
            ENV_FILE_VARIABLE,
            file.to_string_lossy().as_bytes().to_vec(),
        );
        let process = vars(&[("MAX_BATCH", "9")]);
        let merged = gather(&process, Some(&params), &mut EnvFileCache::default());
        assert!(merged.is_ok(), "{:?}", merged.err());
        let merged = merged.unwrap_or_default();
        assert_eq!(merged.get("DB_NAME").map(String::as_str), Some("from_file"));
        assert_eq!(
            merged.get("DB_USER").map(String::as_str),
            Some("param_user")
        );
        assert_eq!(merged.get("MAX_BATCH").map(String::as_str), Some("9"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_env_file_is_named() {
        let process = vars(&[(ENV_FILE_VARIABLE, "/nonexistent/healthsync.env")]);
        let error = gather(&process, None, &mut EnvFileCache::default()).err();
        assert_eq!(
            error.map(|e| e.variable),
            Some(ENV_FILE_VARIABLE.to_owned())
        );
    }
}
