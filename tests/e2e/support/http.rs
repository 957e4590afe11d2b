//! A minimal HTTP/1.1 client over `std::net::TcpStream`, enough to talk to
//! the local Apache: one request per connection (`Connection: close`), the
//! response read to EOF, chunked bodies decoded. It sends the request target
//! byte for byte as given, so malformed paths such as `/api/%FF` reach Apache
//! unchanged, which a full client library would refuse or re-encode.

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request to send; build it with [`Request::get`] / [`Request::new`].
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn header(self, name: &str, value: &str) -> Request {
        self.header_bytes(name, value.as_bytes())
    }

    /// A header whose value is sent byte for byte (it need not be UTF-8).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Request {
        self.headers.push((name.to_string(), value.to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// Sends the request to 127.0.0.1:`port` and reads the whole response.
    /// An `Err` means no complete HTTP response arrived (refused, reset,
    /// timed out, unparsable), which several scenarios treat as the failure.
    pub fn send(&self, port: u16) -> Result<Response, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|error| format!("connect to 127.0.0.1:{port}: {error}"))?;
        let timeout = Some(Duration::from_secs(30));
        stream
            .set_read_timeout(timeout)
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(timeout)
            .map_err(|e| e.to_string())?;

        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n",
            self.method, self.target
        )
        .into_bytes();
        if !self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("User-Agent"))
        {
            head.extend_from_slice(b"User-Agent: healthsync-e2e\r\n");
        }
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        if let Some(body) = &self.body {
            head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        head.extend_from_slice(b"\r\n");

        // A server that answers before reading the whole body may close the
        // connection under a large upload; keep whatever it answered instead
        // of reporting the write error, and let the read below decide.
        let write_result = stream.write_all(&head).and_then(|()| match &self.body {
            Some(body) => stream.write_all(body),
            None => Ok(()),
        });

        let mut raw = Vec::new();
        let read_result = stream.read_to_end(&mut raw);
        if raw.is_empty() {
            let why = match (write_result, read_result) {
                (Err(write_error), _) => format!("writing the request failed: {write_error}"),
                (Ok(()), Err(read_error)) => format!("reading the response failed: {read_error}"),
                (Ok(()), Ok(_)) => "the connection closed without a response".to_string(),
            };
            return Err(format!("{} {}: {why}", self.method, self.target));
        }
        Response::parse(&raw).map_err(|why| format!("{} {}: {why}", self.method, self.target))
    }
}

/// A parsed response. Header names keep their case; look them up with
/// [`Response::header`], which ignores it.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Result<Response, String> {
        let head_end = find(raw, b"\r\n\r\n").ok_or("no end of headers in the response")?;
        let head =
            std::str::from_utf8(&raw[..head_end]).map_err(|_| "response head is not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        let rest = &raw[head_end + 4..];
        let chunked = headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        });
        let body = if chunked {
            decode_chunked(rest)?
        } else {
            rest.to_vec()
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// The first header of that name, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON, or an error that shows what came instead.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|error| format!("body is not JSON ({error}): {self}"))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 600;
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(SHOWN)]);
        let cut = if self.body.len() > SHOWN { "..." } else { "" };
        write!(
            formatter,
            "HTTP {} {:?} {text}{cut}",
            self.status, self.headers
        )
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or("chunked body: no chunk size line")?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| "chunked body: bad size line")?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("chunked body: bad size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("chunked body: cut short".to_string());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
