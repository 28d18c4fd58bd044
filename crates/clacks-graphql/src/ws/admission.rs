//! Who may open a WebSocket: the client's address (read from a reverse
//! proxy's forwarded header only when the TCP peer is a proxy the operator
//! declared), and the answer to an upgrade refused under the connection
//! limits, given before the upgrade as HTTP 503 / 429 with a JSON body.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clacks_delivery::Refusal;
use serde_json::json;

use crate::error::TOO_MANY_CONNECTIONS;

/// The reverse proxies whose forwarded header is believed: addresses or
/// CIDR networks, comma-separated (`203.0.113.7, 10.0.0.0/8, fd00::/8`;
/// empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ProxyNetwork>);

impl TrustedProxies {
    fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.0.contains(&address))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(ProxyNetwork::from_str)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProxyNetwork(ipnet::IpNet);

impl FromStr for ProxyNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(ProxyNetwork(address.to_canonical().into()));
        }
        text.parse::<ipnet::IpNet>()
            .map(|network| ProxyNetwork(network.trunc()))
            .map_err(|_| {
                format!("`{text}` is neither an IP address nor a CIDR network like 10.0.0.0/8")
            })
    }
}

/// The header a trusted proxy writes the client's address into. Only
/// that one is read: a proxy passes the other through untouched, so a
/// client could have written it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most
    /// load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(format!("`{other}` is not `x-forwarded-for` or `forwarded`")),
        }
    }
}

/// The client's address: the TCP peer's, unless the peer is a trusted
/// proxy; then the forwarded header is read from the right (the entry the
/// nearest proxy appended) past every trusted proxy, and the first other
/// address is the client. Entries further left were written by the client
/// itself and prove nothing.
pub fn client_address(
    peer: SocketAddr,
    headers: &HeaderMap,
    proxies: &TrustedProxies,
    header: ForwardedHeader,
) -> IpAddr {
    let trusted = |address: IpAddr| proxies.contains(address);
    let mut nearest = peer.ip().to_canonical();
    if !trusted(nearest) {
        return nearest;
    }
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let hops: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.into_iter().rev() {
        let address = match header {
            ForwardedHeader::XForwardedFor => node_address(hop),
            ForwardedHeader::Forwarded => forwarded_for(hop).and_then(node_address),
        };
        match address {
            Some(address) if trusted(address) => nearest = address,
            Some(address) => return address,
            // `unknown`, an obfuscated name, garbage: the last hop known.
            None => return nearest,
        }
    }
    nearest
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then_some(value)
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`, quoted or not.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|address| address.to_canonical())
}

/// The answer to an upgrade refused under the connection limits: 503
/// (`UNAVAILABLE`: this node is full or shutting down; another node, or a
/// retry, will do) or 429 (`TOO_MANY_CONNECTIONS`: this client holds too
/// many), with a GraphQL-style error body.
pub fn refused(refusal: Refusal) -> Response {
    let (status, extensions) = describe(refusal);
    let body = json!({
        "errors": [{ "message": refusal.to_string(), "extensions": extensions }]
    });
    (status, axum::Json(body)).into_response()
}

/// Counts a refusal, and says it as an HTTP status and the `extensions`
/// of its error (the code, and the limit reached).
pub fn describe(refusal: Refusal) -> (StatusCode, serde_json::Value) {
    metrics::counter!("clacks_ws_refused_total", "reason" => refusal.name()).increment(1);
    let (status, code, limit) = match refusal {
        Refusal::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", None),
        Refusal::NodeFull { limit } => {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", Some(limit))
        }
        Refusal::AddressFull { limit } | Refusal::UserFull { limit } => (
            StatusCode::TOO_MANY_REQUESTS,
            TOO_MANY_CONNECTIONS,
            Some(limit),
        ),
    };
    let mut extensions = json!({ "code": code });
    if let Some(limit) = limit {
        extensions["limit"] = json!(limit);
    }
    (status, extensions)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        list.join(",").parse().unwrap()
    }

    fn resolve(peer: &str, header: ForwardedHeader, values: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        let name = match header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        for value in values {
            headers.append(name, value.parse().unwrap());
        }
        client_address(peer.parse().unwrap(), &headers, &proxies(trusted), header).to_string()
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let header = ["198.51.100.9"];
        assert_eq!(
            resolve("203.0.113.7:5000", XFF, &header, &[]),
            "203.0.113.7"
        );
        assert_eq!(
            resolve("203.0.113.7:5000", XFF, &header, &["10.0.0.0/8"]),
            "203.0.113.7"
        );
        assert_eq!(
            resolve("10.1.2.3:5000", XFF, &header, &["10.0.0.0/8"]),
            "198.51.100.9"
        );
        // A trusted proxy that sent no header: the proxy itself.
        assert_eq!(
            resolve("10.1.2.3:5000", XFF, &[], &["10.0.0.0/8"]),
            "10.1.2.3"
        );
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted = ["10.0.0.0/8", "192.0.2.1"];
        // The client prepended a lie; the proxies appended the truth.
        assert_eq!(
            resolve(
                "10.0.0.2:1",
                XFF,
                &["6.6.6.6, 198.51.100.9", "192.0.2.1"],
                &trusted
            ),
            "198.51.100.9"
        );
        // Every hop trusted: the farthest one.
        assert_eq!(
            resolve("10.0.0.2:1", XFF, &["10.0.0.5, 192.0.2.1"], &trusted),
            "10.0.0.5"
        );
        // An unparsable hop: the last one known.
        assert_eq!(
            resolve("10.0.0.2:1", XFF, &["nonsense, 10.0.0.7"], &trusted),
            "10.0.0.7"
        );
        assert_eq!(
            resolve("10.0.0.2:1", XFF, &["[2001:db8::5]:443"], &trusted),
            "2001:db8::5"
        );
        assert_eq!(
            resolve("10.0.0.2:1", XFF, &["198.51.100.9:8080"], &trusted),
            "198.51.100.9"
        );
    }

    #[test]
    fn forwarded_header_per_rfc_7239() {
        let forwarded = ForwardedHeader::Forwarded;
        let trusted = ["::1"];
        assert_eq!(
            resolve(
                "[::1]:1",
                forwarded,
                &[r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711";proto=https"#],
                &trusted
            ),
            "2001:db8:cafe::17"
        );
        assert_eq!(
            resolve("[::1]:1", forwarded, &["for=unknown"], &trusted),
            "::1"
        );
        // The other header is ignored.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.9".parse().unwrap());
        let address = client_address(
            "[::1]:1".parse().unwrap(),
            &headers,
            &proxies(&trusted),
            forwarded,
        );
        assert_eq!(address.to_string(), "::1");
    }

    #[test]
    fn trusted_proxies_parse() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.1,::ffff:198.51.100.1,fd00::/8"
            .parse()
            .unwrap();
        for inside in ["10.9.9.9", "192.0.2.1", "198.51.100.1", "fd12::1"] {
            assert!(proxies.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["11.0.0.1", "192.0.2.2", "fe80::1"] {
            assert!(!proxies.contains(outside.parse().unwrap()), "{outside}");
        }
        assert_eq!("".parse(), Ok(TrustedProxies::default()));
        assert_eq!(" , ".parse(), Ok(TrustedProxies::default()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("10.0.0.1, proxy.local".parse::<TrustedProxies>().is_err());
        assert_eq!("Forwarded".parse(), Ok(ForwardedHeader::Forwarded));
        assert!("x-real-ip".parse::<ForwardedHeader>().is_err());
    }
}
