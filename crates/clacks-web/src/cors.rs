//! Which web pages may call the client port from another origin: the
//! configured origins (`CLACKS_CORS_ORIGINS`), plus, in dev mode, pages
//! served from this machine. Preflights are always answered (a refused
//! origin gets no `Access-Control-Allow-Origin`, so its browser blocks the
//! call). Credentials (cookies) are never allowed: clients authenticate
//! with `Authorization`, which a page sets itself.
//!
//! WebSockets are not subject to CORS; they authenticate with the token
//! in `connection_init`, which a foreign page does not have.

use std::str::FromStr;
use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use url::Url;

use crate::loopback::is_loopback_origin;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// `CLACKS_CORS_ORIGINS`: comma-separated origins, or `*` alone. Empty
/// entries are skipped, so an empty value means none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigins(Allowed);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `*`: every origin.
    Any,
    /// These origins (maybe none), as browsers write them
    /// (`https://app.example.com`, `http://localhost:3000`).
    Listed(Vec<String>),
}

impl Default for CorsOrigins {
    fn default() -> Self {
        CorsOrigins(Allowed::Listed(Vec::new()))
    }
}

impl FromStr for CorsOrigins {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let entries: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries == ["*"] {
            return Ok(CorsOrigins(Allowed::Any));
        }
        if entries.contains(&"*") {
            // It would silently make the others pointless.
            return Err("`*` already allows every origin; give it alone or list origins".into());
        }
        entries
            .into_iter()
            .map(parse_origin)
            .collect::<Result<_, _>>()
            .map(|origins| CorsOrigins(Allowed::Listed(origins)))
    }
}

/// `scheme://host[:port]`, normalized (lower case, default port dropped)
/// to the form a browser sends in `Origin`.
fn parse_origin(raw: &str) -> Result<String, String> {
    let url = Url::parse(raw).map_err(|e| {
        format!("`{raw}` is not an origin ({e}); write scheme://host[:port], e.g. https://app.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}`: an origin is http:// or https://"));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "`{raw}` has more than scheme://host[:port]; write {}",
            url.origin().ascii_serialization()
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// The CORS policy of the client port.
pub fn layer(origins: &CorsOrigins, dev_mode: bool) -> CorsLayer {
    let allow_origin = match &origins.0 {
        Allowed::Any => AllowOrigin::any(),
        Allowed::Listed(origins) => {
            let listed: Vec<HeaderValue> = origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect();
            AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                listed.contains(origin)
                    || (dev_mode && origin.to_str().is_ok_and(is_loopback_origin))
            })
        }
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<CorsOrigins, String> {
        raw.parse()
    }

    fn listed(origins: &[&str]) -> CorsOrigins {
        CorsOrigins(Allowed::Listed(
            origins.iter().map(|o| (*o).to_owned()).collect(),
        ))
    }

    #[test]
    fn origins_are_parsed_to_the_form_browsers_send() {
        assert_eq!(parse("*"), Ok(CorsOrigins(Allowed::Any)));
        assert_eq!(parse(" * ,"), Ok(CorsOrigins(Allowed::Any)));
        assert_eq!(parse(""), Ok(CorsOrigins::default()));
        assert_eq!(parse(" , "), Ok(CorsOrigins::default()));
        assert_eq!(
            parse(" https://App.Example.com , http://localhost:3000,"),
            Ok(listed(&[
                "https://app.example.com",
                "http://localhost:3000"
            ]))
        );
        assert_eq!(
            parse("https://app.example.com:443/"),
            Ok(listed(&["https://app.example.com"]))
        );
        for bad in [
            "app.example.com",
            "ftp://example.com",
            "https://example.com/app",
            "https://example.com?x=1",
            "https://user@example.com",
            "https://a.example,*",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
