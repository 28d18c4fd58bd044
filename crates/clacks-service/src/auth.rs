//! JWT authentication (SPEC section 2): HS256 only, `sub`, `exp` and `nbf`
//! required and validated with a small leeway, `iss` and `aud` required and
//! checked when configured. Every other claim is kept as the user's
//! profile. Also how a client hands a token over ([`bearer_token`]), for
//! every transport.

use std::time::Duration;

use clacks_core::{Error, Result, UserId, now_ms};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::Limits;

/// Claims a token request may not set: Clacks sets them itself.
pub const RESERVED_CLAIMS: [&str; 7] = ["sub", "exp", "nbf", "iat", "iss", "aud", "jti"];

/// Whether credentials must name their scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerScheme {
    /// `Bearer <token>`: an `Authorization` header.
    Required,
    /// `Bearer <token>` or a bare `<token>`: a WebSocket `connection_init`
    /// payload, written by hand in browsers.
    Optional,
}

/// The token of credentials `Bearer <token>` (RFC 6750; the scheme in any
/// casing, as the original documentation wrote `bearer`). The one rule for
/// every place a client hands a token over: whitespace around the value
/// and between scheme and token is ignored, a token contains none. `None`
/// when the value is not of that form.
pub fn bearer_token(value: &str, scheme: BearerScheme) -> Option<&str> {
    let value = value.trim();
    let token = match value.split_once(char::is_whitespace) {
        Some((name, token)) if name.eq_ignore_ascii_case("bearer") => token.trim_start(),
        Some(_) => return None,
        None if scheme == BearerScheme::Optional => value,
        None => return None,
    };
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// Required `iss`, and the one minted tokens carry.
    pub issuer: Option<String>,
    /// Required `aud`, and the one minted tokens carry.
    pub audience: Option<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            leeway: Duration::from_secs(5),
            issuer: None,
            audience: None,
        }
    }
}

/// An authenticated end user.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub user_id: UserId,
    /// The `name` claim, when present.
    pub name: Option<String>,
    /// Every claim of the token, as given, as JSON: kept for the life of
    /// every connection and read only by `me { claims }`, so compact.
    claims: Box<str>,
    /// `exp`, in seconds since the epoch: live connections close then.
    pub expires_at: i64,
}

impl Caller {
    /// Every claim of the token, as given.
    pub fn claims(&self) -> Map<String, Value> {
        serde_json::from_str(&self.claims).unwrap_or_default()
    }
}

/// What the management API asks for when minting a token.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub name: Option<String>,
    pub extra_claims: Map<String, Value>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MintedToken {
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: AuthSettings,
}

impl Auth {
    pub fn new(secret: &[u8], settings: AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked
        // when present: the library checks `iss`/`aud` only if the token
        // has them, unless they are required claims.
        let mut required = vec!["exp", "nbf", "sub"];
        match &settings.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            settings,
        }
    }

    /// Validates a bearer token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Caller> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token.trim(),
            &self.decoding,
            &self.validation,
        )
        .map_err(|e| {
            Error::Unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_owned(),
                ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidSignature => "token signature invalid".to_owned(),
                ErrorKind::InvalidAlgorithm => "token algorithm must be HS256".to_owned(),
                // Absent or of the wrong type: the library tells neither apart.
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("token lacks a valid {claim} claim")
                }
                ErrorKind::InvalidClaimFormat(claim) => format!("token claim {claim} is malformed"),
                ErrorKind::InvalidIssuer => "token issuer not accepted".to_owned(),
                ErrorKind::InvalidAudience => "token audience not accepted".to_owned(),
                _ => "token invalid".to_owned(),
            })
        })?;
        let claims = data.claims;
        // RFC 7519: `iss` is one string (the library also takes a list).
        if self.settings.issuer.is_some() && !claims.get("iss").is_some_and(Value::is_string) {
            return Err(Error::Unauthenticated("token iss must be a string".into()));
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Unauthenticated("token sub must be a string".into()))?;
        let user_id = UserId::parse(sub).map_err(|e| {
            Error::Unauthenticated(format!("token sub is not a valid user id: {e}"))
        })?;
        let expires_at = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let name = claims
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Caller {
            user_id,
            name,
            claims: Value::Object(claims).to_string().into(),
            expires_at,
        })
    }

    /// Mints a token as the management API and `clacks token` do: the
    /// user id is validated, the lifetime defaults to and is bounded by
    /// `limits`.
    pub fn mint_for(
        &self,
        user: String,
        request: TokenRequest,
        limits: &Limits,
    ) -> Result<MintedToken> {
        let user = UserId::parse(user)?;
        self.mint(
            &user,
            request,
            limits.default_token_ttl,
            limits.max_token_ttl,
        )
    }

    /// Signs a token for `user`, valid from now for the requested lifetime.
    pub fn mint(
        &self,
        user: &UserId,
        request: TokenRequest,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Result<MintedToken> {
        let ttl = request.ttl.unwrap_or(default_ttl);
        if ttl.is_zero() || ttl > max_ttl {
            return Err(Error::invalid(
                "ttl",
                format!("must be between 1 and {} seconds", max_ttl.as_secs()),
            ));
        }
        if let Some(reserved) = request
            .extra_claims
            .keys()
            .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(Error::invalid(
                "claims",
                format!("{reserved} is set by Clacks and cannot be given"),
            ));
        }
        let now = now_ms() / 1000;
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let expires_at = now.saturating_add(ttl_secs);
        let mut claims = request.extra_claims;
        if let Some(name) = request.name {
            claims.insert("name".into(), Value::String(name));
        }
        claims.insert("sub".into(), Value::String(user.as_str().to_owned()));
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), expires_at.into());
        if let Some(issuer) = &self.settings.issuer {
            claims.insert("iss".into(), Value::String(issuer.clone()));
        }
        if let Some(audience) = &self.settings.audience {
            claims.insert("aud".into(), Value::String(audience.clone()));
        }
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a token failed: {e}")))?;
        Ok(MintedToken { token, expires_at })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn auth() -> Auth {
        Auth::new(b"0123456789abcdef0123456789abcdef", AuthSettings::default())
    }

    fn sign(claims: Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify_with_profile() {
        let auth = auth();
        let mut extra = Map::new();
        extra.insert("avatar".into(), "a.png".into());
        let minted = auth
            .mint(
                &UserId::parse("alice").unwrap(),
                TokenRequest {
                    name: Some("Alice".into()),
                    extra_claims: extra,
                    ttl: None,
                },
                DAY,
                DAY,
            )
            .unwrap();
        let caller = auth.verify(&minted.token).unwrap();
        assert_eq!(caller.user_id.as_str(), "alice");
        assert_eq!(caller.name.as_deref(), Some("Alice"));
        assert_eq!(caller.claims()["avatar"], "a.png");
        assert_eq!(caller.expires_at, minted.expires_at);
    }

    #[test]
    fn rejects_what_spec_section_2_rejects() {
        let auth = auth();
        let secret = b"0123456789abcdef0123456789abcdef";
        let now = now_ms() / 1000;
        let expired = sign(
            serde_json::json!({"sub": "a", "exp": now - 600, "nbf": now - 700}),
            secret,
        );
        assert!(
            matches!(auth.verify(&expired), Err(Error::Unauthenticated(m)) if m.contains("expired"))
        );
        let future = sign(
            serde_json::json!({"sub": "a", "exp": now + 600, "nbf": now + 300}),
            secret,
        );
        assert!(
            matches!(auth.verify(&future), Err(Error::Unauthenticated(m)) if m.contains("nbf"))
        );
        let no_nbf = sign(serde_json::json!({"sub": "a", "exp": now + 600}), secret);
        assert!(auth.verify(&no_nbf).is_err());
        let no_sub = sign(serde_json::json!({"exp": now + 600, "nbf": now}), secret);
        assert!(auth.verify(&no_sub).is_err());
        let wrong_key = sign(
            serde_json::json!({"sub": "a", "exp": now + 600, "nbf": now}),
            b"another key entirely, 32 bytes!!",
        );
        assert!(auth.verify(&wrong_key).is_err());
        let string_exp = sign(
            serde_json::json!({"sub": "a", "exp": "soon", "nbf": now}),
            secret,
        );
        assert!(auth.verify(&string_exp).is_err());
        // alg: none, unsigned.
        use base64_like::encode;
        let none = format!(
            "{}.{}.",
            encode(br#"{"alg":"none","typ":"JWT"}"#),
            encode(format!(r#"{{"sub":"a","exp":{},"nbf":{}}}"#, now + 600, now).as_bytes())
        );
        assert!(auth.verify(&none).is_err());
        assert!(auth.verify("garbage").is_err());
    }

    #[test]
    fn mint_refuses_reserved_claims_and_bad_ttl() {
        let auth = auth();
        let alice = UserId::parse("alice").unwrap();
        let mut extra = Map::new();
        extra.insert("sub".into(), "mallory".into());
        let request = TokenRequest {
            name: None,
            extra_claims: extra,
            ttl: None,
        };
        assert!(auth.mint(&alice, request, DAY, DAY).is_err());
        let too_long = TokenRequest {
            ttl: Some(DAY * 2),
            ..Default::default()
        };
        assert!(auth.mint(&alice, too_long, DAY, DAY).is_err());
    }

    #[test]
    fn configured_issuer_and_audience_are_required_and_type_checked() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let auth = Auth::new(
            secret,
            AuthSettings {
                issuer: Some("https://app.example".into()),
                audience: Some("clacks".into()),
                ..AuthSettings::default()
            },
        );
        let now = now_ms() / 1000;
        let token = |extra: Value| {
            let mut claims = serde_json::json!({"sub": "a", "exp": now + 600, "nbf": now});
            for (k, v) in extra.as_object().unwrap() {
                claims[k] = v.clone();
            }
            sign(claims, secret)
        };
        let iss = "https://app.example";
        let refused = |why: &str, claims: Value, says: &str| match auth.verify(&token(claims)) {
            Err(Error::Unauthenticated(message)) => {
                assert!(message.contains(says), "{why}: {message}")
            }
            other => panic!("{why}: {other:?}"),
        };
        refused("no iss", serde_json::json!({"aud": "clacks"}), "iss");
        refused("no aud", serde_json::json!({"iss": iss}), "aud");
        refused("neither", serde_json::json!({}), "claim");
        refused(
            "numeric aud",
            serde_json::json!({"iss": iss, "aud": 1}),
            "aud",
        );
        refused(
            "numeric iss",
            serde_json::json!({"iss": 5, "aud": "clacks"}),
            "iss",
        );
        refused(
            "iss as a list",
            serde_json::json!({"iss": [iss], "aud": "clacks"}),
            "iss must be a string",
        );
        refused(
            "null aud",
            serde_json::json!({"iss": iss, "aud": null}),
            "aud",
        );
        refused(
            "another issuer",
            serde_json::json!({"iss": "https://evil.example", "aud": "clacks"}),
            "issuer",
        );
        refused(
            "another audience",
            serde_json::json!({"iss": iss, "aud": ["other"]}),
            "audience",
        );
        assert!(
            auth.verify(&token(serde_json::json!({"iss": iss, "aud": "clacks"})))
                .is_ok()
        );
        assert!(
            auth.verify(&token(
                serde_json::json!({"iss": iss, "aud": ["other", "clacks"]})
            ))
            .is_ok(),
            "an audience list naming us"
        );
        let minted = auth
            .mint(
                &UserId::parse("a").unwrap(),
                TokenRequest::default(),
                DAY,
                DAY,
            )
            .unwrap();
        assert!(
            auth.verify(&minted.token).is_ok(),
            "minted tokens carry both"
        );
    }

    #[test]
    fn unconfigured_issuer_and_audience_are_not_checked() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let now = now_ms() / 1000;
        let token = sign(
            serde_json::json!({"sub": "a", "exp": now + 600, "nbf": now, "iss": 5, "aud": "x"}),
            secret,
        );
        assert!(auth().verify(&token).is_ok());
    }

    #[test]
    fn bearer_credentials_have_one_whitespace_rule() {
        use BearerScheme::{Optional, Required};
        for (value, scheme, token) in [
            ("Bearer abc", Required, Some("abc")),
            ("bearer abc", Required, Some("abc")),
            ("BEARER\tabc", Required, Some("abc")),
            ("  Bearer   abc  ", Required, Some("abc")),
            ("Bearer", Required, None),
            ("Bearer ", Required, None),
            ("abc", Required, None),
            ("Basic abc", Required, None),
            ("Bearer abc def", Required, None),
            ("Bearerabc", Required, None),
            ("abc", Optional, Some("abc")),
            (" abc\n", Optional, Some("abc")),
            ("Bearer abc", Optional, Some("abc")),
            ("Basic abc", Optional, None),
            ("", Optional, None),
        ] {
            assert_eq!(bearer_token(value, scheme), token, "{value:?} {scheme:?}");
        }
    }

    /// Unpadded base64url, enough to forge an `alg: none` token.
    mod base64_like {
        pub fn encode(bytes: &[u8]) -> String {
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
