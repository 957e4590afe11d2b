//! The command line of `healthsync smoke`: arguments to `Options`, and the
//! help text that documents the output a deploy script reads. Reads the
//! `--ca` file (a bad one is a usage error, before anything is contacted);
//! contacts nothing.

use std::net::IpAddr;

use ureq::http::uri::Scheme;
use ureq::http::Uri;

/// The largest `--body-probe-max`: with 1 KiB steps the search then stays
/// within `probe::MAX_PROBES` requests.
pub const BODY_PROBE_MAX_LIMIT: u64 = 256 * 1024 * 1024;

pub const HELP: &str = "\
healthsync smoke: prove that a deployment of the API works, leaving nothing behind

Usage:
  healthsync smoke [--ca FILE] [--resolve HOST:PORT:ADDR]... [--body-probe-max BYTES] URL

URL is the API's base, as devices use it: https://your.domain/api

It registers a throwaway account (smoke-<uuid>@example.invalid, a random
password), pushes records to every entity and pulls them back, forces one
conflict of each resolution (server_wins, client_wins, merged, kept_both)
and checks each result against the contract, runs a bulk, refreshes its
token, exports, measures the largest request body that reaches the binary,
then erases the account. The account is erased even when a step failed;
when it cannot be, the output says so and names it. It contacts only the
URL's host (or the --resolve address): no proxy, no redirect followed. At
most 46 requests: 2 on /auth/* (more only to log in for the erase after a
lost answer), at most 43 on the routes limited per user.

Options:
  --ca FILE                 also trust the CA certificates in FILE (PEM), beside
                            the built-in Mozilla roots
  --resolve HOST:PORT:ADDR  connect to ADDR for HOST:PORT (like curl); HOST still
                            names the server for SNI, the certificate check and
                            the Host header. ADDR may be [IPv6]. Repeatable.
  --body-probe-max BYTES    the largest body the size probe sends (default: the
                            max_body_bytes that /health advertises; at most 256 MiB)
  -h, --help                this text

The body probe: authenticated POSTs to /sync/bulk whose body is a JSON
object with a key the contract does not know, so the binary parses it whole
and refuses it (400 VALIDATION_ERROR, or 413 above MAX_BODY_BYTES) and
stores nothing. A host limit (mod_fcgid's FcgidMaxRequestLen, 128 KiB by
default; Apache's LimitRequestBody) answers with a page of its own instead,
or hands the binary a truncated body (then 400 INVALID_JSON). A binary
search, KiB-aligned, finds the largest body that reaches the binary whole,
to 1 KiB, in at most 20 requests. Smaller than the max_body_bytes /health
advertises is a failure that says which MAX_BODY_BYTES to set.

Output (standard output): one line per step, its status, name and time, then
what it found:
  ok    push health-metrics         12.4 ms  3 records stored, one a tombstone (versions 1, 2, 3)
  FAIL  pull medications             8.1 ms  expected 3 records, got 2
and, always last, one line for scripts:
  smoke: ok version=<version from /health> body_cap=<bytes> max_body_bytes=<advertised>
  smoke: FAILED step=<step> reason=<one line>
body_cap is the largest body that reached the binary whole (the probe's
ceiling when even that did; above MAX_BODY_BYTES the binary refuses a body
unread, so there a truncated one counts as reached). <step> is the first
failed step's name with its spaces as hyphens (e.g. step=pull-medications).

Exit status: 0 when every step matched the contract, 1 when one did not or
the server could not be reached, 2 on bad usage.";

/// What `healthsync smoke` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// The API's base URL without a trailing slash, e.g. `https://h/api`.
    pub base_url: String,
    pub https: bool,
    /// The URL's host without IPv6 brackets, and its port.
    pub host: String,
    pub port: u16,
    /// PEM text of `--ca`, already checked to hold a certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Where to connect for `host:port` instead of asking DNS.
    pub resolve: Option<IpAddr>,
    pub body_probe_max: Option<u64>,
}

/// Why the arguments were refused, or that help was asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Help,
    Usage(String),
}

fn usage(message: impl Into<String>) -> Refusal {
    Refusal::Usage(message.into())
}

pub fn parse(args: &[String]) -> Result<Options, Refusal> {
    let mut url: Option<&str> = None;
    let mut ca_path: Option<&str> = None;
    let mut resolves: Vec<&str> = Vec::new();
    let mut body_probe_max: Option<&str> = None;
    let mut rest = args.iter().map(String::as_str);
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .or_else(|| rest.next())
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match name {
            "-h" | "--help" => return Err(Refusal::Help),
            "--ca" => ca_path = Some(value(name)?),
            "--resolve" => resolves.push(value(name)?),
            "--body-probe-max" => body_probe_max = Some(value(name)?),
            "--" => {
                url = url.or(rest.next());
                break;
            }
            other if other.starts_with('-') => {
                return Err(usage(format!("unknown option {other}")))
            }
            positional => match url {
                None => url = Some(positional),
                Some(_) => return Err(usage(format!("unexpected argument {positional}"))),
            },
        }
    }
    if let Some(extra) = rest.next() {
        return Err(usage(format!("unexpected argument {extra}")));
    }
    let url = url.ok_or_else(|| usage("the API's URL is missing"))?;
    let mut options = parse_url(url)?;
    for spec in resolves {
        let (host, port, address) = parse_resolve(spec)?;
        if !host.eq_ignore_ascii_case(&options.host) || port != options.port {
            return Err(usage(format!(
                "--resolve {spec} does not match the URL's {}:{}",
                options.host, options.port
            )));
        }
        options.resolve = Some(address);
    }
    if let Some(path) = ca_path {
        if !cfg!(feature = "tls") {
            return Err(usage("--ca needs a build with TLS (the tls feature)"));
        }
        let pem = std::fs::read(path)
            .map_err(|error| usage(format!("--ca {path}: cannot read it: {error}")))?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|window| window == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(usage(format!("--ca {path}: no PEM certificate in it")));
        }
        options.ca_pem = Some(pem);
    }
    if let Some(text) = body_probe_max {
        options.body_probe_max = Some(parse_body_probe_max(text)?);
    }
    Ok(options)
}

fn parse_url(text: &str) -> Result<Options, Refusal> {
    let bad = |why: &str| usage(format!("bad URL {text}: {why}"));
    let uri: Uri = text
        .parse()
        .map_err(|_| bad("expected http(s)://HOST[:PORT]/PATH"))?;
    let https = match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTPS => true,
        Some(scheme) if *scheme == Scheme::HTTP => false,
        _ => return Err(bad("the scheme must be https:// or http://")),
    };
    if https && !cfg!(feature = "tls") {
        return Err(usage(format!(
            "{text}: this healthsync was built without TLS (the tls feature): \
             use an http:// URL or a build with TLS"
        )));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(bad(
            "a query or fragment has no place in the API's base URL",
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Options {
        base_url: text.trim_end_matches('/').to_owned(),
        https,
        host,
        port,
        ca_pem: None,
        resolve: None,
        body_probe_max: None,
    })
}

/// `HOST:PORT:ADDR`, ADDR an IP address (IPv6 in brackets, or bare after
/// the second colon).
fn parse_resolve(spec: &str) -> Result<(String, u16, IpAddr), Refusal> {
    let bad = || {
        usage(format!(
            "--resolve {spec}: expected HOST:PORT:ADDR, ADDR an IP address"
        ))
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(host), Some(port), Some(address)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let address: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port, address))
}

fn parse_body_probe_max(text: &str) -> Result<u64, Refusal> {
    let bytes: u64 = text.parse().map_err(|_| {
        usage(format!(
            "--body-probe-max {text}: expected a number of bytes"
        ))
    })?;
    if !(2048..=BODY_PROBE_MAX_LIMIT).contains(&bytes) {
        return Err(usage(format!(
            "--body-probe-max {text}: must be 2048 to {BODY_PROBE_MAX_LIMIT} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Options, Refusal> {
        parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn refused(args: &[&str]) -> String {
        match parsed(args) {
            Err(Refusal::Usage(message)) => message,
            other => format!("not a usage error: {other:?}"),
        }
    }

    #[test]
    fn a_url_gives_host_port_and_base() {
        let options = parsed(&["http://127.0.0.1:8080/api/"]).ok();
        let options = options.as_ref();
        assert_eq!(
            options.map(|o| o.base_url.as_str()),
            Some("http://127.0.0.1:8080/api")
        );
        assert_eq!(options.map(|o| o.host.as_str()), Some("127.0.0.1"));
        assert_eq!(options.map(|o| o.port), Some(8080));
        assert_eq!(options.map(|o| o.https), Some(false));
        let ipv6 = parsed(&["http://[::1]/api"]).ok();
        assert_eq!(ipv6.as_ref().map(|o| o.host.as_str()), Some("::1"));
        assert_eq!(ipv6.as_ref().map(|o| o.port), Some(80));
    }

    #[test]
    fn resolve_pins_the_urls_host_and_port_only() {
        let args = [
            "--resolve",
            "api.example.test:8443:127.0.0.2",
            "https://api.example.test:8443/api",
        ];
        if cfg!(feature = "tls") {
            let options = parsed(&args).ok();
            assert_eq!(
                options.and_then(|o| o.resolve),
                Some(IpAddr::from([127, 0, 0, 2]))
            );
            let v6 = parsed(&[
                "--resolve=api.example.test:8443:[::1]",
                "https://api.example.test:8443/api",
            ])
            .ok();
            assert_eq!(v6.and_then(|o| o.resolve), "::1".parse().ok());
        }
        assert!(refused(&[
            "--resolve",
            "other.test:8443:127.0.0.1",
            "http://api.example.test:8443/api"
        ])
        .contains("does not match"));
        assert!(refused(&[
            "--resolve",
            "api.example.test:8443:nowhere",
            "http://api.example.test:8443/api"
        ])
        .contains("HOST:PORT:ADDR"));
    }

    #[test]
    fn bad_usage_is_named() {
        assert!(refused(&[]).contains("URL is missing"));
        assert!(refused(&["ftp://h/api"]).contains("scheme"));
        assert!(refused(&["http://h/api?x=1"]).contains("query"));
        assert!(refused(&["http://u:p@h/api"]).contains("credentials"));
        assert!(refused(&["http://h/api", "http://i/api"]).contains("unexpected argument"));
        assert!(refused(&["--bogus", "http://h/api"]).contains("unknown option"));
        assert!(refused(&["http://h/api", "--ca"]).contains("needs a value"));
        assert!(refused(&["--ca", "/nonexistent/ca.pem", "http://h/api"]).contains("--ca"));
        assert!(refused(&["--body-probe-max", "12k", "http://h/api"]).contains("number"));
        assert!(refused(&["--body-probe-max", "1", "http://h/api"]).contains("2048"));
        assert_eq!(parsed(&["--help"]).err(), Some(Refusal::Help));
        assert_eq!(parsed(&["http://h/api", "-h"]).err(), Some(Refusal::Help));
    }

    #[test]
    fn https_needs_the_tls_feature() {
        let https = parsed(&["https://h/api"]);
        if cfg!(feature = "tls") {
            assert!(https.is_ok());
        } else {
            assert!(refused(&["https://h/api"]).contains("without TLS"));
        }
    }
}
