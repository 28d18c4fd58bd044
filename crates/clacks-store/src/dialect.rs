//! What differs between the three SQL backends, kept in one place.

use std::borrow::Cow;

use clacks_core::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::invalid(
                "DATABASE_URL",
                "must start with sqlite:, mysql:// (MySQL or MariaDB) or postgres://",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }

    /// Statements are written once with `$1, $2, ...` placeholders (which
    /// SQLite and PostgreSQL take as they are); MySQL only knows `?`, so each
    /// `$n` becomes `?`. That is only sound when the placeholders appear in
    /// order and each once, which every statement here respects.
    pub(crate) fn sql(self, statement: &'static str) -> Cow<'static, str> {
        if self != Backend::MySql {
            return Cow::Borrowed(statement);
        }
        let mut out = String::with_capacity(statement.len());
        let mut chars = statement.chars().peekable();
        let mut expected = 1u32;
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                let mut n = 0u32;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d;
                    chars.next();
                }
                debug_assert_eq!(n, expected, "placeholders out of order in: {statement}");
                expected += 1;
                out.push('?');
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }

    /// What makes a SELECT read the newest committed rows, whatever the
    /// transaction read before. Only MySQL needs it: its plain reads see
    /// the snapshot of the transaction's first read, while PostgreSQL
    /// (READ COMMITTED) takes a new snapshot per statement and SQLite has
    /// one writer at a time. (`LOCK IN SHARE MODE` rather than `FOR SHARE`:
    /// MariaDB knows only the former.)
    pub(crate) fn latest_rows(self) -> &'static str {
        match self {
            Backend::MySql => " LOCK IN SHARE MODE",
            Backend::Sqlite | Backend::Postgres => "",
        }
    }

    /// Whether `INSERT/UPDATE ... RETURNING` exists (not in MySQL 8).
    pub(crate) fn has_returning(self) -> bool {
        self != Backend::MySql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_placeholders() {
        assert_eq!(
            Backend::MySql.sql("SELECT a FROM t WHERE b = $1 AND c > $2 LIMIT $3"),
            "SELECT a FROM t WHERE b = ? AND c > ? LIMIT ?"
        );
        assert_eq!(Backend::Postgres.sql("x = $1"), "x = $1");
    }

    #[test]
    fn url_schemes() {
        assert_eq!(
            Backend::from_url("sqlite:clacks.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("mysql://root@localhost/test").ok(),
            Some(Backend::MySql)
        );
        assert_eq!(
            Backend::from_url("postgresql://x/y").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::from_url("nonsense").is_err());
    }
}
