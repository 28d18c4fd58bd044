//! The `Host` check of the management port, against DNS rebinding: a page
//! on `evil.example` whose name is re-pointed at 127.0.0.1 can make a
//! developer's browser send requests to `127.0.0.1:7999`, and read the
//! answers, but the browser still names `evil.example` in `Host`. So the
//! management port answers only to the names it is known by: loopback
//! (`localhost`, `127.0.0.1`, `[::1]`), the address it listens on, and the
//! configured ones; anything else gets 421 (Misdirected Request).
//!
//! It guards every route of the listener (health, metrics and the OpenAPI
//! documents too), before the token check.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// One entry of the allowlist: a host with an optional port, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    /// Any `Host` at all (the opt-out).
    Any,
    /// This host; on any port when `port` is `None`.
    Host { host: HostName, port: Option<u16> },
}

/// A host as written in a `Host` header, compared the way DNS and IP do:
/// names case-insensitively without a trailing dot, addresses by value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedHost::Any => f.write_str("*"),
            AllowedHost::Host { host, port } => {
                match host {
                    HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
                    HostName::Ip(ip) => write!(f, "{ip}")?,
                    HostName::Name(name) => f.write_str(name)?,
                }
                match port {
                    Some(port) => write!(f, ":{port}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl FromStr for AllowedHost {
    type Err = String;

    /// `*`, or `host[:port]` with `host` a name, an IPv4 address or a
    /// bracketed IPv6 address, as in a `Host` header.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(AllowedHost::Any);
        }
        let (host, port) = parse_authority(text).ok_or_else(|| {
            format!("`{text}` is not a host name or address with an optional :port, nor `*`")
        })?;
        Ok(AllowedHost::Host { host, port })
    }
}

/// Splits `host[:port]` (the syntax of a `Host` header), or `None` when it
/// is not one.
fn parse_authority(text: &str) -> Option<(HostName, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let host = HostName::Ip(IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?));
        (host, after)
    } else {
        let (name, after) = match text.find(':') {
            Some(colon) => text.split_at(colon),
            None => (text, ""),
        };
        let host = match name.parse::<Ipv4Addr>() {
            Ok(ip) => HostName::Ip(IpAddr::V4(ip)),
            Err(_) => HostName::Name(dns_name(name)?),
        };
        (host, after)
    };
    let port = match port {
        "" => None,
        port => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// A DNS name in its comparable form, or `None` when it is not one.
fn dns_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}

/// The hosts one management listener answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    any: bool,
    hosts: Vec<(HostName, Option<u16>)>,
}

impl AllowedHosts {
    /// Loopback names and addresses, the address of `listener` unless it
    /// is a wildcard (0.0.0.0, [::]), and `configured`.
    pub fn new(listener: SocketAddr, configured: &[AllowedHost]) -> AllowedHosts {
        let mut hosts = vec![
            (HostName::Name("localhost".into()), None),
            (HostName::Ip(Ipv4Addr::LOCALHOST.into()), None),
            (HostName::Ip(Ipv6Addr::LOCALHOST.into()), None),
        ];
        if !listener.ip().is_unspecified() {
            hosts.push((HostName::Ip(listener.ip()), None));
        }
        let mut any = false;
        for entry in configured {
            match entry {
                AllowedHost::Any => any = true,
                AllowedHost::Host { host, port } => hosts.push((host.clone(), *port)),
            }
        }
        AllowedHosts { any, hosts }
    }

    /// Whether `authority` (a `Host` header's value) names this listener.
    pub fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let Some((host, port)) = parse_authority(authority) else {
            return false;
        };
        self.hosts.iter().any(|(allowed, allowed_port)| {
            *allowed == host && allowed_port.is_none_or(|p| Some(p) == port)
        })
    }

    /// Why `request` is refused, or `None` when it may go on. Every
    /// authority the request carries must be allowed: each `Host` header,
    /// and the URI's (HTTP/2's `:authority`, or an absolute-form target).
    /// A request naming none is let through: browsers always send `Host`,
    /// so it cannot come from a rebinding page.
    fn refusal(&self, request: &Request) -> Option<String> {
        let uri = request.uri().authority().map(|a| a.as_str());
        let headers = request.headers().get_all(header::HOST).iter();
        for value in headers.map(|v| v.to_str().ok()).chain(uri.map(Some)) {
            match value {
                Some(authority) if self.allows(authority) => {}
                Some(authority) => {
                    return Some(format!(
                        "this management API does not answer to the host `{authority}`; \
                         list it in CLACKS_MANAGEMENT_ALLOWED_HOSTS if your servers reach it by that name"
                    ));
                }
                None => return Some("the Host header is not valid".into()),
            }
        }
        None
    }
}

/// Middleware: refuses a request for a host this listener does not answer
/// to with 421 problem+json.
pub async fn require_allowed_host(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    match allowed.refusal(&request) {
        None => next.run(request).await,
        Some(detail) => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected-request",
            detail,
        )
        .into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn loopback_listener() -> AllowedHosts {
        AllowedHosts::new("127.0.0.1:7999".parse().unwrap(), &[])
    }

    #[test]
    fn loopback_names_on_any_port() {
        let allowed = loopback_listener();
        for host in [
            "localhost",
            "localhost:7999",
            "LocalHost.:80",
            "127.0.0.1",
            "127.0.0.1:7999",
            "[::1]",
            "[::1]:7999",
            "[0:0:0:0:0:0:0:1]:1",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        let allowed = loopback_listener();
        for host in [
            "evil.example",
            "evil.example:7999",
            "localhost.evil.example",
            "127.0.0.2",
            "127.0.0.1:notaport",
            "127.0.0.1:70000",
            "::1",
            "[::1",
            "localhost:7999:1",
            "",
            "local host",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn the_listener_address_and_configured_entries() {
        let configured: Vec<AllowedHost> = ["clacks.internal", "Chat.Example.:8443", "[fd00::5]"]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        let allowed = AllowedHosts::new("10.1.2.3:7999".parse().unwrap(), &configured);
        for host in [
            "10.1.2.3:7999",
            "clacks.internal:7999",
            "chat.example:8443",
            "[fd00::5]:1",
            "localhost",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in ["chat.example", "chat.example:443", "10.1.2.4"] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn a_wildcard_listener_adds_no_host_and_star_opts_out() {
        let wildcard = AllowedHosts::new("0.0.0.0:7999".parse().unwrap(), &[]);
        assert!(!wildcard.allows("0.0.0.0:7999"));
        assert!(wildcard.allows("localhost:7999"));
        let any = AllowedHosts::new("0.0.0.0:7999".parse().unwrap(), &[AllowedHost::Any]);
        assert!(any.allows("anything.example"));
    }

    #[test]
    fn entries_parse_and_print_back() {
        for entry in ["*", "clacks.internal", "10.0.0.5:7999", "[fd00::5]:7999"] {
            assert_eq!(entry.parse::<AllowedHost>().unwrap().to_string(), entry);
        }
        for bad in ["", "a b", "http://x", "[::1]x", "host:"] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad}");
        }
    }
}
