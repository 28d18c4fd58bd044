//! A scan of the raw document text before the parser sees it: how many
//! tokens it has and how deeply its brackets nest.
//!
//! The parser recurses once per nesting level (selection sets, lists and
//! input objects), so a document of 100,000 `[` could exhaust the stack.
//! This scan is a loop over the bytes, with no recursion, and it follows the
//! lexical grammar closely enough that brackets inside strings and comments
//! are not counted. It never rejects anything itself: text the parser would
//! refuse is only counted, and the parser reports it.

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scan {
    /// Lexical tokens (punctuators, names, numbers, strings); whitespace,
    /// commas and comments are not tokens.
    pub tokens: u64,
    /// The deepest nesting of selection sets (`{` outside any argument
    /// list), which equals the textual depth of fields.
    pub selection_nesting: u64,
    /// The deepest nesting of argument lists and the values inside them
    /// (`(`, `[` and input object `{`).
    pub value_nesting: u64,
}

const BOM: &[u8] = "\u{feff}".as_bytes();

pub(super) fn scan(source: &str) -> Scan {
    let bytes = source.as_bytes();
    let mut scan = Scan {
        tokens: 0,
        selection_nesting: 0,
        value_nesting: 0,
    };
    let mut selections: u64 = 0;
    let mut parens: u64 = 0;
    let mut values: u64 = 0;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                at += 1;
                continue;
            }
            b'#' => {
                at = skip_until(bytes, at, |b| b == b'\n' || b == b'\r');
                continue;
            }
            _ if bytes[at..].starts_with(BOM) => {
                at += BOM.len();
                continue;
            }
            _ => {}
        }
        scan.tokens += 1;
        at = match byte {
            b'"' if bytes[at..].starts_with(b"\"\"\"") => block_string_end(bytes, at + 3),
            b'"' => string_end(bytes, at + 1),
            b'.' if bytes[at..].starts_with(b"...") => at + 3,
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                skip_until(bytes, at, |b| !(b == b'_' || b.is_ascii_alphanumeric()))
            }
            b'-' | b'0'..=b'9' => skip_until(bytes, at + 1, |b| {
                !(b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            }),
            b'(' => {
                parens += 1;
                scan.value_nesting = scan.value_nesting.max(parens + values);
                at + 1
            }
            b')' => {
                parens = parens.saturating_sub(1);
                at + 1
            }
            b'[' => {
                values += 1;
                scan.value_nesting = scan.value_nesting.max(parens + values);
                at + 1
            }
            b']' => {
                values = values.saturating_sub(1);
                at + 1
            }
            b'{' if parens == 0 => {
                selections += 1;
                scan.selection_nesting = scan.selection_nesting.max(selections);
                at + 1
            }
            b'{' => {
                values += 1;
                scan.value_nesting = scan.value_nesting.max(parens + values);
                at + 1
            }
            b'}' if parens == 0 => {
                selections = selections.saturating_sub(1);
                at + 1
            }
            b'}' => {
                values = values.saturating_sub(1);
                at + 1
            }
            // Punctuators and anything the parser will refuse: one token.
            _ => at + 1,
        };
    }
    scan
}

/// The index of the first byte from `at` on that `stop` accepts (or the end).
fn skip_until(bytes: &[u8], at: usize, stop: impl Fn(u8) -> bool) -> usize {
    bytes[at..]
        .iter()
        .position(|&b| stop(b))
        .map_or(bytes.len(), |offset| at + offset)
}

/// Just past the closing quote of a string whose content starts at `at`
/// (an unterminated one ends at the line end; the parser reports it).
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return at + 1,
            b'\n' | b'\r' => return at,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// Just past the closing `"""` of a block string whose content starts at
/// `at`; `\"""` is the only escape in a block string.
fn block_string_end(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        if bytes[at..].starts_with(b"\\\"\"\"") {
            at += 4;
        } else if bytes[at..].starts_with(b"\"\"\"") {
            return at + 3;
        } else {
            at += 1;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(source: &str) -> u64 {
        scan(source).tokens
    }

    #[test]
    fn counts_tokens_as_the_grammar_does() {
        assert_eq!(tokens("{ me { id } }"), 6);
        assert_eq!(tokens("query Q($a: [Int!] = [1, -2.5e3]) { f(a: $a) }"), 25);
        assert_eq!(tokens("{ ...F } fragment F on Query { __typename }"), 11);
        assert_eq!(tokens("# only a comment\n,,, \u{feff}"), 0);
        assert_eq!(tokens(r#"{ f(s: "a \" } ] ) # not a comment") }"#), 8);
        assert_eq!(tokens(r#"{ f(s: """ line " "" \""" } """) }"#), 8);
        assert_eq!(
            tokens("{ f(x: @) }"),
            8,
            "stray characters are single tokens"
        );
    }

    #[test]
    fn measures_selection_and_value_nesting_separately() {
        let plain = scan("{ a { b { c } } }");
        assert_eq!((plain.selection_nesting, plain.value_nesting), (3, 0));
        let values = scan("{ a(x: [{ y: [1] }]) { b } }");
        assert_eq!((values.selection_nesting, values.value_nesting), (2, 4));
        let quoted = scan(r#"{ a(s: "{{{{[[[[") }"#);
        assert_eq!((quoted.selection_nesting, quoted.value_nesting), (1, 1));
    }

    #[test]
    fn survives_deep_and_broken_text() {
        let deep = "[".repeat(100_000);
        let found = scan(&format!("{{ a(x: {deep}"));
        assert_eq!(found.value_nesting, 100_001);
        assert_eq!(scan(&"{".repeat(100_000)).selection_nesting, 100_000);
        assert_eq!(scan("}}}]]])))").selection_nesting, 0);
        assert_eq!(tokens("\"unterminated\n{"), 2);
        assert_eq!(tokens("\"\"\"unterminated block"), 1);
        assert_eq!(tokens("é"), 2, "each byte of a stray character counts");
    }
}
