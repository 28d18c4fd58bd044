//! What counts as "this machine": the `Host` a dev-mode request must name
//! (so a public page cannot reach the dev endpoints through DNS
//! rebinding) and the page origins dev mode lets through CORS.

use std::net::IpAddr;

use url::{Host, Url};

/// A `Host` header value (`name[:port]` or `[v6][:port]`) that names this
/// machine: `localhost`, a `*.localhost` name (RFC 6761: browsers resolve
/// them to loopback themselves), an address in 127.0.0.0/8, or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    // The URL parser does the work of splitting the port off and
    // normalizing case and IP literals; anything beyond `host[:port]` is
    // not a Host header.
    match Url::parse(&format!("http://{host}")) {
        Ok(url) => {
            url.path() == "/"
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none()
                && url.host().is_some_and(|host| names_this_machine(&host))
        }
        Err(_) => false,
    }
}

/// An `Origin` header value of a page served from this machine over http
/// or https (`http://localhost:5173`, `http://127.0.0.1:8080`,
/// `http://[::1]:3000`).
pub fn is_loopback_origin(origin: &str) -> bool {
    match Url::parse(origin) {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.origin().ascii_serialization() == origin
                && url.host().is_some_and(|host| names_this_machine(&host))
        }
        Err(_) => false,
    }
}

fn names_this_machine(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            name == "localhost" || name.ends_with(".localhost")
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).to_canonical().is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8000",
            "LocalHost:8000",
            "localhost.:8000",
            "chat.localhost:8000",
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8000",
            "[::ffff:127.0.0.1]:8000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "example.com",
            "localhost.example.com:8000",
            "notlocalhost:8000",
            "10.0.0.1:8000",
            "0.0.0.0:8000",
            "[::]:8000",
            "user@localhost:8000",
            "localhost:8000/path",
            "localhost:notaport",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn loopback_origins() {
        for origin in [
            "http://localhost:5173",
            "http://localhost",
            "https://localhost:8443",
            "http://127.0.0.1:8000",
            "http://[::1]:3000",
            "http://app.localhost:3000",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "null",
            "http://example.com",
            "http://localhost.example.com",
            "http://10.0.0.1:8000",
            "file://localhost",
            "ws://localhost:8000",
            // Not how a browser writes an origin.
            "http://localhost:5173/",
            "http://LOCALHOST:5173",
            "http://localhost:80",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
