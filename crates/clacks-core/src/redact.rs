//! Connection URLs as they may be printed: in logs, error messages and
//! `--help`, a URL never shows its password, token or secret parameters.

const HIDDEN: &str = "***";

/// `text` with the secrets of every URL in it replaced by `***`:
/// `mysql://app:pw@db/chat` prints as `mysql://app:***@db/chat`,
/// `postgres://db/chat?password=pw` as `postgres://db/chat?password=***`.
///
/// A user name without a password is kept for the database schemes
/// (`mysql://app@db`), where it is only a name; for any other scheme it is
/// hidden, since NATS reads `nats://TOKEN@host` as a token. Works on a
/// comma-separated list of URLs (the hosts before the last one with
/// credentials are hidden too) and on any text around them: when in doubt
/// it hides more, never less.
pub fn redact_url(text: &str) -> String {
    redact_query_secrets(&redact_userinfo(text))
}

/// Schemes whose user part, alone, is a plain user name.
const NAME_ONLY_USER_SCHEMES: [&str; 4] = ["mysql", "mariadb", "postgres", "postgresql"];

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(slashes) = rest.find("//") {
        let (before, after) = rest.split_at(slashes + 2);
        out.push_str(before);
        rest = after;
        // `scheme:///path` has no authority. Otherwise the userinfo ends at
        // the last `@` before a space: a password may hold any of `@:,/?#`
        // (unencoded, the URL is broken, but it must not be printed), and
        // hiding a host of a list, or a bit of the path, costs nothing.
        if after.starts_with('/') {
            continue;
        }
        let scope = &after[..after.find(char::is_whitespace).unwrap_or(after.len())];
        let Some(at) = scope.rfind('@') else {
            continue;
        };
        let userinfo = &scope[..at];
        // What is kept must be one user name, not a piece of a list.
        let plain = |name: &str| !name.contains([',', '/', '@']);
        match userinfo.split_once(':') {
            Some((user, _)) if plain(user) => {
                out.push_str(user);
                out.push(':');
                out.push_str(HIDDEN);
            }
            None if plain(userinfo)
                && NAME_ONLY_USER_SCHEMES.contains(&scheme_before(before).as_str()) =>
            {
                out.push_str(userinfo);
            }
            _ => out.push_str(HIDDEN),
        }
        rest = &after[at..];
    }
    out.push_str(rest);
    out
}

/// The scheme written right before the `//` that ends `before`, lowercase.
fn scheme_before(before: &str) -> String {
    let head = before.trim_end_matches('/').trim_end_matches(':');
    let start = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |i| i + 1);
    head[start..].to_ascii_lowercase()
}

fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token"].iter().any(|s| key.contains(s))
}

fn redact_query_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['?', '&']) {
        out.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let (key, after_key) = rest.split_at(rest.find(['=', '&', '?', '#']).unwrap_or(rest.len()));
        out.push_str(key);
        rest = after_key;
        if let Some(value) = rest.strip_prefix('=')
            && is_secret_parameter(key)
        {
            // A secret value runs to the next parameter; a `?` in it is
            // part of the secret.
            out.push('=');
            out.push_str(HIDDEN);
            rest = &value[value.find(['&', '#']).unwrap_or(value.len())..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_tokens_and_secret_parameters_are_hidden() {
        for (url, printed) in [
            (
                "mysql://app:pw@db:3306/chat",
                "mysql://app:***@db:3306/chat",
            ),
            ("mysql://app@db/chat", "mysql://app@db/chat"),
            ("postgres://u:p@ss:w@db/x", "postgres://u:***@db/x"),
            ("mysql://u:p,q/r@db/x", "mysql://u:***@db/x"),
            ("mysql://u:p#q?r@db/x", "mysql://u:***@db/x"),
            ("postgres://db/x?email=a@b", "postgres://***@b"),
            ("postgres://u:p@db/x?email=a@b", "postgres://u:***@b"),
            (
                "postgres://db/chat?sslmode=require&password=pw&x=1",
                "postgres://db/chat?sslmode=require&password=***&x=1",
            ),
            (
                "postgres://db/chat?PassWord=a?b&x=1",
                "postgres://db/chat?PassWord=***&x=1",
            ),
            ("nats://s3cret@nats:4222", "nats://***@nats:4222"),
            ("nats://u:p@n1:4222,nats://tok@n2", "nats://u:***@n2"),
            ("nats://n1,nats://tok@n2", "nats://***@n2"),
            ("nats://tok@n1,nats://n2", "nats://***@n1,nats://n2"),
            ("nats://u:p@n1,v:q@n2", "nats://u:***@n2"),
            ("sqlite://clacks.db", "sqlite://clacks.db"),
            (
                "sqlite:///home/a@b/db.sqlite",
                "sqlite:///home/a@b/db.sqlite",
            ),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            (
                "NATS at nats://u:p@h: connection refused",
                "NATS at nats://u:***@h: connection refused",
            ),
        ] {
            assert_eq!(redact_url(url), printed, "{url}");
        }
    }
}
