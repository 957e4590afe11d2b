//! Request and Response values, and the translation from CGI/FastCGI params
//! (raw bytes) to a `Request`. Owns body reading and its limits.
//!
//! Nothing here touches the database, the process environment or stdio
//! directly: `main.rs` hands in the params and a reader for the body.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use crate::error::ApiError;

/// CGI/FastCGI params as the web server sent them: bytes, not strings,
/// because a client controls some of them (the path, headers). A list in
/// arrival order, searched from the end, so a later param of the same
/// name wins: a request has a few dozen, and looking one up by comparing
/// names is cheaper than hashing them all into a map first.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(Vec<u8>, Vec<u8>)>);

impl From<Vec<(Vec<u8>, Vec<u8>)>> for Params {
    /// The pairs as the FastCGI responder decoded them, taken as they are.
    fn from(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Params {
        Params(pairs)
    }
}

impl Params {
    pub fn new() -> Params {
        Params(Vec::new())
    }

    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), value.into()));
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name.as_slice() == key.as_bytes())
            .map(|(_, value)| value.as_slice())
    }

    /// The param as text. A value that is not UTF-8 is an error naming the
    /// param; the caller turns it into a 400.
    pub fn text(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => Ok(Some(text)),
                Err(_) => Err(ApiError::field(key, "is not valid UTF-8")),
            },
        }
    }
}

/// A request body as read from the web server, with the read's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Bytes(Vec<u8>),
    /// Over `MAX_BODY_BYTES`; the rest was read and thrown away.
    TooLarge,
    /// Ended before its `Content-Length`.
    Truncated,
}

/// Reads the body a request's `CONTENT_LENGTH` param announces. A length
/// that is not a number leaves the size unknown: the input is read to its
/// end and thrown away, and the body counts as truncated. A param that is
/// not UTF-8 counts as absent (the body is read to EOF), like a chunked
/// upload.
pub fn read_request_body(params: &Params, input: &mut dyn Read, max: u64) -> Body {
    let content_length = params
        .text("CONTENT_LENGTH")
        .ok()
        .flatten()
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().parse::<u64>());
    match content_length {
        Some(Err(_)) => {
            drain(input);
            Body::Truncated
        }
        length => read_body(input, length.and_then(Result::ok), max),
    }
}

/// Reads a body of at most `max` bytes. With a `Content-Length`, exactly
/// that many bytes; without one (a chunked upload under mod_cgid), to EOF.
///
/// A body over the limit is still read to its end and discarded in small
/// chunks: under mod_cgid a CGI program that answers without reading its
/// stdin makes Apache reset the client, who then never sees the 413.
pub fn read_body(input: &mut dyn Read, content_length: Option<u64>, max: u64) -> Body {
    let declared_too_large = matches!(content_length, Some(length) if length > max);
    if declared_too_large {
        drain(input);
        return Body::TooLarge;
    }
    let take = match content_length {
        Some(length) => length,
        None => max.saturating_add(1),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(take.min(64 * 1024)).unwrap_or(0));
    if input.take(take).read_to_end(&mut bytes).is_err() {
        return Body::Truncated;
    }
    let got = bytes.len() as u64;
    match content_length {
        Some(length) if got < length => Body::Truncated,
        None if got > max => {
            drain(input);
            Body::TooLarge
        }
        _ => Body::Bytes(bytes),
    }
}

fn drain(input: &mut dyn Read) {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match input.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// One HTTP request, parsed once at the edge.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path from the `/api` segment on, without it, percent-decoded:
    /// `/x/api/health?a=1` gives `/health`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// A query that is not UTF-8 after decoding: reported by the routes
    /// that read the query, after authentication (contract precedence).
    pub query_defect: Option<ApiError>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub device_id: Option<String>,
    /// `Idempotency-Key` as sent: bytes, checked by the routes that take
    /// it (after authentication), never a defect of the whole request.
    pub idempotency_key: Option<Vec<u8>>,
    pub origin: Option<String>,
    pub remote_addr: String,
    pub https: bool,
    pub body: Body,
    /// Set when the request itself is malformed (non-UTF-8 path or header,
    /// missing method): answered 400 before routing.
    pub defect: Option<ApiError>,
    /// Number of command-line arguments the process got (Apache turns a
    /// query string without `=` into argv); reported by the test echo only.
    pub argv_len: usize,
}

impl Request {
    /// Builds a request from CGI params and an already read body. Never
    /// fails: a defect is recorded and answered by `app`.
    pub fn from_params(params: &Params, body: Body) -> Request {
        let mut request = Request {
            method: String::new(),
            path: String::new(),
            query: Vec::new(),
            query_defect: None,
            authorization: None,
            content_type: None,
            device_id: None,
            idempotency_key: None,
            origin: None,
            remote_addr: String::new(),
            https: false,
            body,
            defect: None,
            argv_len: 0,
        };
        if let Err(defect) = request.fill(params) {
            request.defect = Some(defect);
        }
        request
    }

    fn fill(&mut self, params: &Params) -> Result<(), ApiError> {
        // Params are bytes: only the ones read here must be UTF-8, and a
        // web server that sent none is answered 400, not guessed at.
        self.method = match params.text("REQUEST_METHOD")? {
            Some(method) if !method.is_empty() => method.to_ascii_uppercase(),
            _ => {
                return Err(ApiError::field(
                    "REQUEST_METHOD",
                    "the request has no method",
                ))
            }
        };
        let uri = match params.text("REQUEST_URI")? {
            Some(uri) => uri,
            None => return Err(ApiError::field("REQUEST_URI", "the request has no URI")),
        };
        let (raw_path, raw_query) = match uri.split_once('?') {
            Some((path, query)) => (path, query),
            None => (uri, ""),
        };
        self.path = api_path(raw_path)?;
        match parse_query(raw_query) {
            Ok(pairs) => self.query = pairs,
            Err(defect) => self.query_defect = Some(defect),
        }
        self.authorization = match params.text("HTTP_AUTHORIZATION")? {
            Some(value) => Some(value.to_owned()),
            None => params
                .text("REDIRECT_HTTP_AUTHORIZATION")?
                .map(str::to_owned),
        };
        self.content_type = params
            .text("CONTENT_TYPE")?
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        self.device_id = params.text("HTTP_X_DEVICE_ID")?.map(str::to_owned);
        self.idempotency_key = params.get("HTTP_IDEMPOTENCY_KEY").map(<[u8]>::to_vec);
        self.origin = params.text("HTTP_ORIGIN")?.map(str::to_owned);
        self.remote_addr = params.text("REMOTE_ADDR")?.unwrap_or("").to_owned();
        // Only what the web server itself reports: forwarded headers are
        // client-controlled and never trusted.
        let https_param = params.text("HTTPS")?.unwrap_or("");
        let scheme = params.text("REQUEST_SCHEME")?.unwrap_or("");
        self.https = https_param.eq_ignore_ascii_case("on")
            || https_param == "1"
            || scheme.eq_ignore_ascii_case("https");
        Ok(())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// True when the request carries body bytes or a JSON content type.
    pub fn has_body(&self) -> bool {
        match &self.body {
            Body::Bytes(bytes) => !bytes.is_empty() || self.content_type.is_some(),
            Body::TooLarge | Body::Truncated => true,
        }
    }

    pub fn is_json_content_type(&self) -> bool {
        match &self.content_type {
            Some(value) => {
                let essence = value.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
            }
            None => false,
        }
    }
}

/// The part of the path after the `/api` segment, percent-decoded, without
/// trailing slashes. Paths with no `/api` segment route nowhere (`""`).
fn api_path(raw_path: &str) -> Result<String, ApiError> {
    let decoded = percent_decode(raw_path, false)
        .ok_or_else(|| ApiError::field("path", "the path is not valid UTF-8"))?;
    let after = match find_api_segment(&decoded) {
        Some(rest) => rest,
        None => return Ok(String::new()),
    };
    let trimmed = after.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn find_api_segment(path: &str) -> Option<&str> {
    let mut search_from = 0;
    while let Some(found) = path[search_from..].find("/api") {
        let start = search_from + found;
        let rest = &path[start + 4..];
        if rest.is_empty() || rest.starts_with('/') {
            return Some(rest);
        }
        search_from = start + 4;
    }
    None
}

/// `application/x-www-form-urlencoded` query parsing. A name or value that
/// is not UTF-8 after decoding is a 400 naming it.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for piece in raw.split('&').filter(|piece| !piece.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let name = percent_decode(name, true)
            .ok_or_else(|| ApiError::field("query", "a query parameter name is not valid UTF-8"))?;
        let value = match percent_decode(value, true) {
            Some(value) => value,
            None => return Err(ApiError::field(&name, "is not valid UTF-8")),
        };
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes (and `+` as a space in queries). `None` when the
/// result is not UTF-8. A `%` not followed by two hex digits stays as is.
fn percent_decode(input: &str, plus_is_space: bool) -> Option<String> {
    if !input.contains('%') && (!plus_is_space || !input.contains('+')) {
        return Some(input.to_owned());
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' && index + 2 < bytes.len() {
            let high = hex_value(bytes[index + 1]);
            let low = hex_value(bytes[index + 2]);
            if let (Some(high), Some(low)) = (high, low) {
                out.push(high * 16 + low);
                index += 3;
                continue;
            }
        }
        out.push(if plus_is_space && byte == b'+' {
            b' '
        } else {
            byte
        });
        index += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A response: the head and `body` buffered and written at once (as CGI
/// output in one write, or as FastCGI records built in one buffer), then
/// the `spool`, if any, copied out a piece at a time.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The rest of the body, written to a temporary file first: an answer
    /// as large as a whole account (the export) costs disk, never memory.
    pub spool: Option<Spool>,
}

/// A body written to an unlinked temporary file, read back from its start.
///
/// Spooling rather than streaming straight to the client: the answer's
/// length is known before its head is sent (a plain `Content-Length`, in
/// CGI and FastCGI alike), a database or disk error while it is produced
/// is still a clean error answer rather than a cut-off 200, and no lock or
/// snapshot is held while a slow client reads.
#[derive(Debug)]
pub struct Spool {
    file: File,
    len: u64,
}

impl Spool {
    /// A new file in `dir`, readable and writable by this process alone,
    /// with no name: nothing is left behind however the process ends.
    /// `O_TMPFILE` where the filesystem has it, else a random name that is
    /// unlinked at once.
    pub fn temp_file(dir: &Path) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let unnamed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir);
        match unnamed {
            Ok(file) => return Ok(file),
            // Only "this filesystem cannot": any other error (a missing
            // directory, no permission) is the answer.
            Err(error)
                if !matches!(
                    error.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                return Err(error)
            }
            Err(_) => {}
        }
        let path = dir.join(format!(
            ".healthsync-spool-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }

    /// The file as written so far becomes the body.
    pub fn from_written(mut file: File) -> io::Result<Spool> {
        let len = file.stream_position()?;
        file.rewind()?;
        Ok(Spool { file, len })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for Spool {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.file.read(buffer)
    }
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        // Serializing a `Value` cannot fail (its keys are strings).
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response {
            status,
            headers: vec![("Content-Type", "application/json; charset=utf-8".to_owned())],
            body,
            spool: None,
        }
    }

    pub fn no_content() -> Response {
        Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
            spool: None,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The response as a CGI program prints it (also what a FastCGI
    /// responder sends on its stdout), the spool aside: its length is in
    /// `Content-Length`, and its bytes follow these.
    #[cfg(test)]
    pub fn to_cgi_bytes(&self) -> Vec<u8> {
        let mut out = self.cgi_head();
        out.extend_from_slice(&self.body);
        out
    }

    /// The status line and headers, through the blank line that ends them.
    pub fn cgi_head(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            format!("Status: {} {}\r\n", self.status, reason_phrase(self.status)).as_bytes(),
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let length = self.body.len() as u64 + self.spool.as_ref().map_or(0, Spool::len);
        out.extend_from_slice(format!("Content-Length: {length}\r\n\r\n").as_bytes());
        out
    }
}

pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &[u8])]) -> Params {
        let mut params = Params::new();
        for (key, value) in pairs {
            params.insert(key.as_bytes().to_vec(), value.to_vec());
        }
        params
    }

    fn check_path(uri: &str, expected: &str) {
        let request = Request::from_params(
            &params(&[("REQUEST_METHOD", b"GET"), ("REQUEST_URI", uri.as_bytes())]),
            Body::Bytes(Vec::new()),
        );
        assert!(request.defect.is_none(), "{uri}: {:?}", request.defect);
        assert_eq!(request.path, expected, "{uri}");
    }

    #[test]
    fn paths_route_from_the_api_segment_on() {
        check_path("/api/health", "/health");
        check_path("/api/health/", "/health");
        check_path("/x/y/api/health?a=1", "/health");
        check_path("/api", "/");
        check_path("/apix/health", "");
        check_path("/apix/api/meals/sync", "/meals/sync");
        check_path("/health", "");
        check_path("/api/me%61ls", "/meals");
    }

    #[test]
    fn a_non_utf8_path_is_a_defect_not_a_panic() {
        let request = Request::from_params(
            &params(&[("REQUEST_METHOD", b"GET"), ("REQUEST_URI", b"/api/%FF")]),
            Body::Bytes(Vec::new()),
        );
        assert_eq!(request.defect.map(|e| e.status()), Some(400));
        let request = Request::from_params(
            &params(&[("REQUEST_METHOD", b"GET"), ("REQUEST_URI", b"/api/\xff")]),
            Body::Bytes(Vec::new()),
        );
        assert_eq!(request.defect.map(|e| e.status()), Some(400));
    }

    #[test]
    fn a_request_without_method_is_a_defect() {
        let request = Request::from_params(
            &params(&[("REQUEST_URI", b"/api/health")]),
            Body::Bytes(vec![]),
        );
        assert_eq!(request.defect.map(|e| e.status()), Some(400));
    }

    #[test]
    fn authorization_falls_back_to_the_redirect_variable() {
        let request = Request::from_params(
            &params(&[
                ("REQUEST_METHOD", b"GET"),
                ("REQUEST_URI", b"/api/health"),
                ("REDIRECT_HTTP_AUTHORIZATION", b"Bearer x"),
            ]),
            Body::Bytes(vec![]),
        );
        assert_eq!(request.authorization.as_deref(), Some("Bearer x"));
    }

    #[test]
    fn queries_decode_plus_and_percent() {
        let pairs = parse_query("a=1&b=x+y&c=%2Bz&flag&=e").unwrap_or_default();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "+z".into()),
                ("flag".into(), "".into()),
                ("".into(), "e".into()),
            ]
        );
        assert!(parse_query("since=%FF").is_err());
        assert_eq!(percent_decode("100%", false).as_deref(), Some("100%"));
        assert_eq!(percent_decode("%4", false).as_deref(), Some("%4"));
    }

    #[test]
    fn bodies_are_read_to_their_length_and_limited() {
        let check = |input: &[u8], length: Option<u64>, max: u64, expected: Body| {
            let mut reader = input;
            assert_eq!(
                read_body(&mut reader, length, max),
                expected,
                "{input:?} {length:?}"
            );
            assert!(reader.is_empty(), "the input is always read to its end");
        };
        check(b"abc", Some(3), 10, Body::Bytes(b"abc".to_vec()));
        check(b"abc", Some(5), 10, Body::Truncated);
        check(b"abcdef", None, 10, Body::Bytes(b"abcdef".to_vec()));
        check(b"abcdef", None, 5, Body::TooLarge);
        check(b"abcdef", None, 6, Body::Bytes(b"abcdef".to_vec()));
        check(b"abcdef", Some(6), 5, Body::TooLarge);
        check(b"", None, 5, Body::Bytes(Vec::new()));
    }

    #[test]
    fn content_type_matches_json_in_any_case_with_parameters() {
        let mut request =
            Request::from_params(&params(&[("REQUEST_METHOD", b"POST")]), Body::Bytes(vec![]));
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            request.content_type = Some(value.into());
            assert_eq!(request.is_json_content_type(), json, "{value}");
        }
    }

    #[test]
    fn cgi_output_has_status_and_length() {
        let response = Response::json(404, &serde_json::json!({"a": 1}));
        let text = String::from_utf8(response.to_cgi_bytes()).unwrap_or_default();
        assert!(text.starts_with("Status: 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 7\r\n\r\n{\"a\":1}"));
    }
}
