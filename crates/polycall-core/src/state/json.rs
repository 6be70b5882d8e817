//! The slice of JSON the state snapshots need (docs/protocol.md §9.2).
//!
//! node-polycall's state checksum is a hash over the text `JSON.stringify` writes, so the
//! writer here reproduces that text exactly (compact, its string escapes, integers as plain
//! digits), and the reader keeps the source text of every value next to the decoded value.
//! Compact JSON is compositional: the text of a nested value inside `JSON.stringify(outer)` is
//! exactly `JSON.stringify(inner)`. Hashing a value's source span therefore gives the checksum
//! node-polycall computed, without re-serialising numbers (whose JavaScript formatting this
//! crate does not reproduce) or user metadata.

use core::fmt::Write as _;
use std::borrow::Cow;

/// Nesting depth the reader accepts; deeper input is refused instead of growing the stack.
const MAX_DEPTH: usize = 128;

/// Appends `s` as a JSON string literal, escaped the way `JSON.stringify` escapes it:
/// `"` and `\` with a backslash, `\b \f \n \r \t` by name, other code points below U+0020 as
/// `\u00xx` (lower-case hex), everything else as is.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    loop {
        // Copy the run up to the next character that needs an escape at once.
        let run = rest
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(run);
        out.push_str(plain);
        let mut chars = tail.chars();
        match chars.next() {
            None => break,
            Some('"') => out.push_str("\\\""),
            Some('\\') => out.push_str("\\\\"),
            Some('\u{8}') => out.push_str("\\b"),
            Some('\u{c}') => out.push_str("\\f"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some('\t') => out.push_str("\\t"),
            Some(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
        rest = chars.as_str();
    }
    out.push('"');
}

/// Appends an unsigned integer the way JavaScript prints it (plain digits below 10^21).
pub(crate) fn write_u64(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            // n % 10 < 10, so the digit fits in a byte.
            *d = b'0' + u8::try_from(n % 10).unwrap_or(0);
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(digits.get(at..).unwrap_or_default()).unwrap_or_default());
}

/// A parsed JSON value and the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node<'a> {
    /// The value's source text, exactly as it appeared.
    pub raw: &'a str,
    /// The decoded value.
    pub value: Value<'a>,
}

/// A decoded JSON value. Numbers stay as their source text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<Member<'a>>),
}

/// One `"key": value` member of an object, in source order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member<'a> {
    /// The key's source text, quotes included.
    pub raw_key: &'a str,
    /// The decoded key.
    pub key: Key<'a>,
    /// The value.
    pub node: Node<'a>,
}

/// An object member's decoded key: a slice of the text unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key<'a>(Cow<'a, str>);

impl Key<'_> {
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Key<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl<'a> Node<'a> {
    /// The members of an object, or `None`.
    pub fn members(&self) -> Option<&[Member<'a>]> {
        match &self.value {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// The items of an array, or `None`.
    pub fn items(&self) -> Option<&[Node<'a>]> {
        match &self.value {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The member `key` of an object (the first one, should a key repeat).
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.members()?
            .iter()
            .find(|m| m.key == key)
            .map(|m| &m.node)
    }

    /// The decoded string, or `None`.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, or `None`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The number as a non-negative integer no larger than 2^53 - 1 (JavaScript's safe
    /// range), or `None` for anything else, including fractions and exponents.
    pub fn as_safe_u64(&self) -> Option<u64> {
        let Value::Number(text) = self.value else {
            return None;
        };
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<u64>().ok().filter(|n| *n < (1 << 53))
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

/// Parses one JSON document (surrounding whitespace allowed, nothing after it).
pub(crate) fn parse(text: &str) -> Result<Node<'_>, String> {
    let mut p = Parser { text, pos: 0 };
    let node = p.value(0)?;
    p.skip_ws();
    if p.pos != text.len() {
        return Err(format!("unexpected text at offset {}", p.pos));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.pos))
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", char::from(byte)))
        }
    }

    fn slice(&self, start: usize) -> &'a str {
        self.text.get(start..self.pos).unwrap_or_default()
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, String> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        self.skip_ws();
        let start = self.pos;
        let value = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b't') => self.word("true", Value::Bool(true))?,
            Some(b'f') => self.word("false", Value::Bool(false))?,
            Some(b'n') => self.word("null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                Value::Number(self.slice(start))
            }
            _ => return self.err("expected a value"),
        };
        Ok(Node {
            raw: self.slice(start),
            value,
        })
    }

    fn word(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, String> {
        if self
            .text
            .get(self.pos..)
            .is_some_and(|t| t.starts_with(word))
        {
            self.pos += word.len();
            Ok(value)
        } else {
            self.err("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else if self.digits() == 0 {
            return self.err("expected a digit");
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.err("expected a digit");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err("expected a digit");
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.text.get(self.pos..self.pos + 4);
        let Some(n) = digits
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
        else {
            return self.err("expected four hex digits");
        };
        self.pos += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, String> {
        self.expect(b'"')?;
        let mut out: Option<String> = None;
        loop {
            // Take the run up to the next quote, backslash or control character at once.
            let rest = self.text.get(self.pos..).unwrap_or_default();
            let run = rest
                .bytes()
                .position(|b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            let plain = rest.get(..run).unwrap_or_default();
            self.pos += run;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    // Without escapes the value is a slice of the text.
                    return Ok(match out {
                        None => Cow::Borrowed(plain),
                        Some(mut s) => {
                            s.push_str(plain);
                            Cow::Owned(s)
                        }
                    });
                }
                Some(b'\\') => {
                    let s = out.get_or_insert_with(String::new);
                    s.push_str(plain);
                    self.pos += 1;
                    let escaped = self.peek();
                    self.pos += 1;
                    let c = match escaped {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return self.err("bad escape"),
                    };
                    if let Some(s) = out.as_mut() {
                        s.push(c);
                    }
                }
                Some(_) => return self.err("control character in string"),
                None => return self.err("unterminated string"),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let unit = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&unit) {
            if self.text.get(self.pos..self.pos + 2) != Some("\\u") {
                return self.err("lone surrogate");
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return self.err("lone surrogate");
            }
            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        } else {
            unit
        };
        char::from_u32(code).map_or_else(|| self.err("lone surrogate"), Ok)
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, String> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            let start = self.pos;
            let key = Key(self.string()?);
            let raw_key = self.slice(start);
            self.skip_ws();
            self.expect(b':')?;
            let node = self.value(depth + 1)?;
            // JSON.stringify never repeats a key; JSON.parse would keep the last one and this
            // reader the first, so a repeated key is refused rather than read differently.
            if members.iter().any(|m| m.key == key) {
                return self.err("repeated key");
            }
            members.push(Member { raw_key, key, node });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(s: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped_like_json_stringify() {
        assert_eq!(written("plain"), r#""plain""#);
        assert_eq!(written("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(written("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(written("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        // Not escaped by JSON.stringify: DEL, U+2028, non-ASCII, astral characters.
        assert_eq!(written("\u{7f}\u{2028}é😀"), "\"\u{7f}\u{2028}é😀\"");
    }

    #[test]
    fn integers_print_as_plain_digits() {
        for n in [0, 7, 10, 99, 1_700_000_000_000, (1 << 53) - 1, u64::MAX] {
            let mut out = String::from("x");
            write_u64(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn values_keep_their_source_text() {
        let text = r#"{"a":[1,-2.5e3,true,null],"b":{"c":"d\u00e9"}, "e" : 0}"#;
        let node = parse(text).unwrap();
        assert_eq!(node.raw, text);
        let a = node.get("a").unwrap();
        assert_eq!(a.raw, "[1,-2.5e3,true,null]");
        assert_eq!(a.items().unwrap()[1].raw, "-2.5e3");
        assert_eq!(node.get("b").unwrap().raw, r#"{"c":"d\u00e9"}"#);
        assert_eq!(
            node.get("b").unwrap().get("c").unwrap().as_str(),
            Some("dé")
        );
        assert_eq!(node.get("e").unwrap().as_safe_u64(), Some(0));
        assert_eq!(node.members().unwrap()[2].raw_key, r#""e""#);
    }

    #[test]
    fn escapes_decode_including_surrogate_pairs() {
        let node = parse(r#""\"\\\/\b\f\n\r\t\u0041\ud83d\ude00""#).unwrap();
        assert_eq!(node.as_str(), Some("\"\\/\u{8}\u{c}\n\r\tA😀"));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "01",
            "1.",
            "1e",
            "-",
            "tru",
            "\"abc",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\u{1}\"",
            "{} x",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\":1,\"a\":2}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn safe_integers_only() {
        let n = |t: &str| parse(t).unwrap().as_safe_u64();
        assert_eq!(n("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(n("9007199254740991"), Some(9_007_199_254_740_991));
        assert_eq!(n("9007199254740992"), None);
        assert_eq!(n("-1"), None);
        assert_eq!(n("1.5"), None);
        assert_eq!(n("1e3"), None);
        assert_eq!(n("\"1\""), None);
    }
}
