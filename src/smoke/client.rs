//! The HTTP side of `smoke`: one ureq agent that contacts only the host the
//! user named (no proxy from the environment, no redirects followed, the
//! `--resolve` address in place of DNS), verifies TLS against Mozilla's
//! roots plus `--ca`, and turns every transport error into one line. It
//! knows the envelope of section 1 and nothing of the routes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use ureq::config::Config;
use ureq::http;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::args::Options;

/// The most response bytes read: an export of the smoke account is a few KiB.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

pub struct Client {
    agent: ureq::Agent,
    base_url: String,
}

/// One request: method, path under the base URL, bearer token, JSON body.
pub struct Call<'a> {
    pub method: &'static str,
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    pub body: Option<&'a [u8]>,
    /// Ask before sending the body (`Expect: 100-continue`), so a server
    /// that refuses it by its length answers without receiving it.
    pub expect_continue: bool,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str, bearer: Option<&'a str>) -> Call<'a> {
        Call {
            method: "GET",
            path,
            bearer,
            body: None,
            expect_continue: false,
        }
    }

    pub fn with_body(
        method: &'static str,
        path: &'a str,
        bearer: Option<&'a str>,
        body: &'a [u8],
    ) -> Call<'a> {
        Call {
            method,
            path,
            bearer,
            body: Some(body),
            expect_continue: false,
        }
    }
}

/// What came back, whatever its status.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The contract's envelope (section 1), or what came instead.
#[derive(Debug)]
pub enum Envelope {
    Success(Value),
    Failure { code: String, message: String },
}

impl Answer {
    /// The envelope, or a line saying what the answer was instead (an
    /// Apache error page, say).
    pub fn envelope(&self) -> Result<Envelope, String> {
        let json = self
            .content_type
            .as_deref()
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("application/json"));
        let parsed: Option<Value> = if json {
            serde_json::from_slice(&self.body).ok()
        } else {
            None
        };
        let not_envelope = || {
            format!(
                "HTTP {} {} is not the API's JSON envelope (the web server answered, not the binary?): {}",
                self.status,
                self.content_type.as_deref().unwrap_or("without Content-Type"),
                excerpt(&self.body)
            )
        };
        let Some(Value::Object(mut map)) = parsed else {
            return Err(not_envelope());
        };
        match map.get("success") {
            Some(Value::Bool(true)) => match map.remove("data") {
                Some(data) => Ok(Envelope::Success(data)),
                None => Err(not_envelope()),
            },
            Some(Value::Bool(false)) => {
                let error = map.get("error");
                let text = |key: &str| {
                    error
                        .and_then(|e| e.get(key))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                match (text("code"), text("message")) {
                    (Some(code), Some(message)) => Ok(Envelope::Failure { code, message }),
                    _ => Err(not_envelope()),
                }
            }
            _ => Err(not_envelope()),
        }
    }

    /// The `data` of a success with this status, or a line saying what
    /// came instead.
    pub fn success(&self, status: u16) -> Result<Value, String> {
        match self.envelope()? {
            Envelope::Success(data) if self.status == status => Ok(data),
            Envelope::Success(_) => Err(format!(
                "expected HTTP {status}, got {} (a success)",
                self.status
            )),
            Envelope::Failure { code, message } => Err(format!(
                "expected HTTP {status}, got {} {code}: {message}",
                self.status
            )),
        }
    }

    /// The error code of a failure with this status, or a line saying what
    /// came instead.
    pub fn failure(&self, status: u16) -> Result<String, String> {
        match self.envelope()? {
            Envelope::Failure { code, .. } if self.status == status => Ok(code),
            Envelope::Failure { code, message } => Err(format!(
                "expected HTTP {status}, got {} {code}: {message}",
                self.status
            )),
            Envelope::Success(_) => Err(format!(
                "expected HTTP {status}, got {} (a success)",
                self.status
            )),
        }
    }
}

/// The start of a body, printable on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.trim().is_empty() {
        "(empty body)".into()
    } else if body.len() > 120 {
        format!("{}...", line.trim())
    } else {
        line.trim().to_owned()
    }
}

impl Client {
    pub fn new(options: &Options) -> Result<Client, String> {
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(format!("healthsync-smoke/{}", crate::VERSION))
            .timeout_resolve(Some(Duration::from_secs(10)))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_send_request(Some(Duration::from_secs(30)))
            .timeout_send_body(Some(Duration::from_secs(120)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(Some(Duration::from_secs(60)));
        let config = tls::configure(builder, options)?.build();
        let resolver = PinnedResolver {
            pinned: options
                .resolve
                .map(|address| (options.host.clone(), options.port, address)),
            default: DefaultResolver::default(),
        };
        Ok(Client {
            agent: ureq::Agent::with_parts(config, DefaultConnector::default(), resolver),
            base_url: options.base_url.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends one request and reads its whole answer. `Err` is one line:
    /// why no answer came (refused, TLS, timeout...).
    pub fn send(&self, call: &Call) -> Result<Answer, String> {
        let url = self.url(call.path);
        let mut builder = http::Request::builder()
            .method(call.method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(token) = call.bearer {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        let sent = match call.body {
            Some(body) => {
                builder = builder.header("Content-Type", "application/json");
                if call.expect_continue {
                    builder = builder.header("Expect", "100-continue");
                }
                let request = builder
                    .body(body)
                    .map_err(|error| format!("cannot build the request for {url}: {error}"))?;
                self.agent.run(request)
            }
            None => {
                let request = builder
                    .body(())
                    .map_err(|error| format!("cannot build the request for {url}: {error}"))?;
                self.agent.run(request)
            }
        };
        let mut response = sent.map_err(|error| describe(&error, &url))?;
        let status = response.status().as_u16();
        // Redirects are not followed: they could lead to a host the user
        // did not name, and the API never sends one.
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("nowhere");
            return Err(format!(
                "{url} answers HTTP {status}, a redirect to {location}: give the API's own URL"
            ));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|error| format!("reading the answer of {url}: {}", cause(&error)))?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}

/// One line for a request that got no answer.
fn describe(error: &ureq::Error, url: &str) -> String {
    if let Some(tls) = tls::describe(error) {
        return format!("TLS with {url} failed: {tls}");
    }
    match error {
        ureq::Error::Io(io) if is_connect_error(io.kind()) => {
            format!("cannot connect to {url}: {}", io_reason(io))
        }
        ureq::Error::HostNotFound => {
            format!("cannot connect to {url}: its host name does not resolve")
        }
        ureq::Error::Timeout(which) => format!("{url}: timed out ({which})"),
        other => format!("{url}: {}", cause(other)),
    }
}

fn is_connect_error(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable | NotFound
    )
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => error.to_string(),
    }
}

/// ureq's message without its "io: " style prefix where the cause says more.
pub fn cause(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) => io_reason(io),
        other => other.to_string(),
    }
}

/// Whether a request failed while its body was being sent or before its
/// answer came: what a host that refuses a body by closing does.
pub fn is_cut_off(error: &str) -> bool {
    !error.starts_with("cannot connect") && !error.starts_with("TLS ")
}

/// `--resolve`: the pinned address for the URL's `host:port`, DNS (or a
/// literal address) for anything else.
#[derive(Debug)]
struct PinnedResolver {
    pinned: Option<(String, u16, IpAddr)>,
    default: DefaultResolver,
}

impl Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let (Some((host, port, address)), Some(authority)) = (&self.pinned, uri.authority()) {
            let uri_host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let uri_port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            if uri_host.eq_ignore_ascii_case(host) && uri_port == *port {
                let mut addresses = self.empty();
                addresses.push(SocketAddr::new(*address, *port));
                return Ok(addresses);
            }
        }
        // A lookup failure comes back as a bare I/O error; named as such.
        self.default
            .resolve(uri, config, timeout)
            .map_err(|error| match error {
                ureq::Error::Io(_) => ureq::Error::HostNotFound,
                other => other,
            })
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use ureq::config::ConfigBuilder;
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
    use ureq::typestate::AgentScope;

    use crate::smoke::args::Options;

    /// Mozilla's roots, and the certificates of `--ca` beside them.
    pub fn configure(
        builder: ConfigBuilder<AgentScope>,
        options: &Options,
    ) -> Result<ConfigBuilder<AgentScope>, String> {
        let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()))
            .collect();
        if let Some(pem) = &options.ca_pem {
            let mut added = 0;
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(PemItem::Certificate(certificate)) => {
                        roots.push(certificate);
                        added += 1;
                    }
                    Ok(_) => {}
                    Err(error) => return Err(format!("--ca: not readable as PEM: {error}")),
                }
            }
            if added == 0 {
                return Err("--ca: no certificate in it".into());
            }
        }
        Ok(builder.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .build(),
        ))
    }

    /// A certificate or handshake failure, named as such.
    pub fn describe(error: &ureq::Error) -> Option<String> {
        let rustls_error = match error {
            ureq::Error::Rustls(inner) => Some(inner),
            ureq::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
                Some(
                    "the server's certificate is not signed by a trusted CA \
                     (for a private CA pass --ca FILE)"
                        .into(),
                )
            }
            Some(rustls::Error::InvalidCertificate(why)) => {
                Some(format!("the server's certificate is refused: {why}"))
            }
            Some(other) => Some(other.to_string()),
            None => match error {
                ureq::Error::Tls(message) => Some((*message).to_owned()),
                _ => None,
            },
        }
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use ureq::config::ConfigBuilder;
    use ureq::typestate::AgentScope;

    use crate::smoke::args::Options;

    /// Without the tls feature only http:// URLs get this far.
    pub fn configure(
        builder: ConfigBuilder<AgentScope>,
        _options: &Options,
    ) -> Result<ConfigBuilder<AgentScope>, String> {
        Ok(builder)
    }

    pub fn describe(_error: &ureq::Error) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, content_type: Option<&str>, body: &str) -> Answer {
        Answer {
            status,
            content_type: content_type.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_envelope_is_told_from_a_web_server_page() {
        let json = Some("application/json; charset=utf-8");
        let ok = answer(200, json, r#"{"success":true,"data":{"a":1}}"#);
        assert_eq!(ok.success(200).ok(), Some(serde_json::json!({"a": 1})));
        assert!(ok
            .success(201)
            .is_err_and(|e| e.contains("expected HTTP 201")));
        let refused = answer(
            413,
            json,
            r#"{"success":false,"error":{"code":"PAYLOAD_TOO_LARGE","message":"big"}}"#,
        );
        assert_eq!(
            refused.failure(413).ok().as_deref(),
            Some("PAYLOAD_TOO_LARGE")
        );
        assert!(refused
            .success(200)
            .is_err_and(|e| e.contains("413 PAYLOAD_TOO_LARGE: big")));
        let apache = answer(
            500,
            Some("text/html; charset=iso-8859-1"),
            "<!DOCTYPE HTML PUBLIC>\n<html><title>500 Internal Server Error</title>",
        );
        assert!(apache
            .envelope()
            .is_err_and(|e| e.contains("HTTP 500 text/html") && !e.contains('\n')));
        let no_shape = answer(200, json, r#"{"ok":true}"#);
        assert!(no_shape.envelope().is_err());
    }
}
