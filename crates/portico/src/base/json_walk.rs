//! A validating walk over JSON text, for readers that need where values are rather than what they
//! are: the gateway copies a target's list items into the merged page as the target wrote them.
//!
//! It refuses every text serde_json refuses, and accepts what serde_json accepts but for two things
//! it gives up on (`None`): a key with a lone surrogate escape where the caller reads keys
//! ([`Walk::object`]), and nesting deeper than serde_json's own limit. On `None` the caller reads the
//! text with serde_json, whose errors are the ones a user sees. (Reading a list's answer with
//! serde_json's visitors cost a quarter more instructions: each field a `RawValue` whose text is
//! checked as UTF-8 again, each skipped value a `Result` through several layers.)

use std::borrow::Cow;
use std::ops::Range;

/// serde_json's recursion limit; deeper text is left to it.
const MAX_DEPTH: u32 = 128;

/// A walk over `text`, one place at a time; every method validates what it walks over.
pub struct Walk<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Walk<'a> {
    /// A walk from the beginning of `text`.
    pub fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Walks the object here: `field` gets each key, decoded, with the walk at the key's value, which
    /// `field` must walk over. The object's place.
    pub fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &str) -> Option<()>,
    ) -> Option<Range<usize>> {
        self.container(b'{', b'}', |walk| {
            let key = walk.key()?;
            walk.expect(b':')?;
            field(walk, &key)
        })
    }

    /// Walks the array here: `element` must walk over each element. The array's place.
    pub fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<Range<usize>> {
        self.container(b'[', b']', element)
    }

    /// Walks the container that `open` opens here: `member` walks over each member (an element, or
    /// a key and its value), the commas between them are taken here. The container's place.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<Range<usize>> {
        let start = self.skip_space();
        self.expect(open)?;
        if self.take(close) {
            return Some(start..self.at);
        }
        loop {
            member(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                byte if byte == close => {
                    self.at += 1;
                    return Some(start..self.at);
                }
                _ => return None,
            }
        }
    }

    /// The value here, if it is `known` (the text of an object or array walked before), passed over
    /// unread: a container ends at its own closing bracket, so the same bytes here are the same
    /// valid value, whatever follows them. Its place.
    pub fn known_value(&mut self, known: &str) -> Option<Range<usize>> {
        if !known.starts_with(['{', '[']) {
            return None;
        }
        let start = self.skip_space();
        let rest = self.text.as_bytes().get(start..)?;
        if !rest.starts_with(known.as_bytes()) {
            return None;
        }
        self.at = start + known.len();
        Some(start..self.at)
    }

    /// Walks over the value here, whatever it is; its place.
    pub fn value(&mut self) -> Option<Range<usize>> {
        let start = self.skip_space();
        // The open containers, innermost in the lowest bit: set for an object, clear for an array.
        let (mut objects, mut depth) = (0u128, 0u32);
        loop {
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.at += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if !self.take(close) {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return None;
                        }
                        objects = objects << 1 | u128::from(open == b'{');
                        if open == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: it ends containers, or the next member or element follows.
            loop {
                if depth == 0 {
                    return Some(start..self.at);
                }
                let in_object = objects & 1 == 1;
                match (self.peek()?, in_object) {
                    (b',', true) => {
                        self.at += 1;
                        self.member_key()?;
                        break;
                    }
                    (b',', false) => {
                        self.at += 1;
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        self.at += 1;
                        objects >>= 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// The byte after any whitespace, the walk left at it.
    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.as_bytes().get(self.at).copied()
    }

    /// Takes `byte` if it comes next (after any whitespace).
    fn take(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.at += usize::from(next);
        next
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.take(byte).then_some(())
    }

    /// Past whitespace (JSON's four bytes, as serde_json reads it); the place.
    fn skip_space(&mut self) -> usize {
        let bytes = self.text.as_bytes();
        // Most values follow their `:` or `,` directly: one comparison for them.
        while let Some(&byte) = bytes.get(self.at) {
            if byte > b' ' || !matches!(byte, b' ' | b'\n' | b'\t' | b'\r') {
                break;
            }
            self.at += 1;
        }
        self.at
    }

    /// A key and its colon, inside a value: any valid string.
    fn member_key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.expect(b':')
    }

    /// A key the caller reads: borrowed from the text unless it has escapes, which are rare enough
    /// to leave to serde_json (it refuses a lone surrogate in a key it decodes: so does the walk).
    fn key(&mut self) -> Option<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at;
        let escaped = self.string()?;
        let quoted = self.text.get(start..self.at)?;
        if escaped {
            return serde_json::from_str::<String>(quoted).ok().map(Cow::Owned);
        }
        quoted.get(1..quoted.len() - 1).map(Cow::Borrowed)
    }

    /// Walks over the string at its opening quote; whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        let bytes = self.text.as_bytes();
        let mut at = self.at + 1;
        let mut escaped = false;
        loop {
            at = to_special(bytes, at);
            match *bytes.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    at = escape_end(bytes, at + 1)?;
                }
                // A control character, which JSON strings must escape.
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let mut at = self.at + usize::from(bytes.get(self.at) == Some(&b'-'));
        match bytes.get(at)? {
            b'0' => at += 1,
            b'1'..=b'9' => at = digits_end(bytes, at),
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            at = some_digits_end(bytes, at + 1)?;
        }
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
            at = some_digits_end(bytes, at)?;
        }
        self.at = at;
        Some(())
    }
}

fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// Past the digits at `at`, of which there must be one at least.
fn some_digits_end(bytes: &[u8], at: usize) -> Option<usize> {
    let end = digits_end(bytes, at);
    (end > at).then_some(end)
}

/// Past the escape whose letter is at `at` (after the backslash).
fn escape_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => {
            let hex = bytes.get(at + 1..at + 5)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(at + 5)
        }
        _ => None,
    }
}

/// The first `"`, `\` or control character at or after `at` (or the end). Bytes of multi-byte
/// characters have their high bit set and are never taken for one.
fn to_special(bytes: &[u8], at: usize) -> usize {
    // SAFETY: SSE2 is part of x86-64: every machine this code runs on has it.
    #[cfg(target_arch = "x86_64")]
    let at = match unsafe { to_special_in_blocks(bytes, at) } {
        Ok(found) => return found,
        Err(tail) => tail,
    };
    to_special_in_words(bytes, at)
}

/// [`to_special`] sixteen bytes at a time, with SSE2 (which every x86-64 has): `Ok` with the place
/// found, or `Err` with where fewer than sixteen bytes are left. Strings are scanned in a list's
/// answer more than anything else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn to_special_in_blocks(bytes: &[u8], mut at: usize) -> Result<usize, usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let last_control = _mm_set1_epi8(0x1f);
    let rest = bytes.get(at..).unwrap_or_default();
    for block in rest.chunks_exact(16) {
        // SAFETY: `block` is sixteen readable bytes, and this load needs no alignment.
        let block = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
        // A byte is a control character when the unsigned minimum with 0x1f leaves it unchanged.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(block, last_control), block);
        let quote_or_backslash = _mm_or_si128(
            _mm_cmpeq_epi8(block, quote),
            _mm_cmpeq_epi8(block, backslash),
        );
        let marks = _mm_movemask_epi8(_mm_or_si128(control, quote_or_backslash)) as u32;
        if marks != 0 {
            return Ok(at + marks.trailing_zeros() as usize);
        }
        at += 16;
    }
    Err(at)
}

/// [`to_special`] eight bytes at a time.
fn to_special_in_words(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let rest = bytes.get(at..).unwrap_or_default();
    for chunk in rest.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // Each term marks the bytes of its kind; the lowest mark is exact (a borrow only runs
        // upwards), which is the one taken.
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let marks = (control
            | quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash)
            & HIGHS;
        if marks != 0 {
            return at + (marks.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes
        .get(at)
        .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
    {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::json_text::testing::random_json;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_first_special_byte_is_found_wherever_it_is() {
        let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let len = rng.random_range(0..80);
            // Mostly plain text (ASCII and bytes of multi-byte characters), now and then a special.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..40) {
                    0 => b'"',
                    1 => b'\\',
                    2 => rng.random_range(0..0x20),
                    3..=8 => rng.random_range(0x80..=0xff),
                    _ => rng.random_range(0x20..0x7f),
                })
                .collect();
            let from = rng.random_range(0..=len);
            let expected = (from..len).find(|&i| special(bytes[i])).unwrap_or(len);
            assert_eq!(to_special(&bytes, from), expected, "{bytes:?} from {from}");
            assert_eq!(to_special_in_words(&bytes, from), expected);
        }
    }

    #[test]
    fn a_known_container_is_passed_over_and_nothing_else() {
        let mut walk = Walk::new(r#" {"a":[1]} ,2"#);
        assert_eq!(walk.known_value(r#"{"a":[2]}"#), None);
        assert_eq!(walk.known_value(r#"{"a":[1]}"#), Some(1..10));
        assert_eq!(walk.peek(), Some(b','));
        // A number's text does not decide where it ends: "1" begins "12".
        assert_eq!(Walk::new("12").known_value("1"), None);
    }

    /// Whether the walk takes `text` as one JSON value.
    fn walks(text: &str) -> bool {
        let mut walk = Walk::new(text);
        walk.value().is_some() && walk.at_end()
    }

    fn serde_reads(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn takes_what_serde_takes_and_refuses_what_it_refuses() {
        let cases = [
            ("0", true),
            ("-0", true),
            ("01", false),
            ("1.", false),
            ("1.5", true),
            (".5", false),
            ("-", false),
            ("+1", false),
            ("1e", false),
            ("1e+", false),
            ("1E-2", true),
            ("-12.5e+30", true),
            ("tru", false),
            ("nulll", false),
            (" [ true , false , null ] ", true),
            ("[1,]", false),
            ("[,1]", false),
            (r#"{"a":1,}"#, false),
            (r#"{"a" 1}"#, false),
            (r#"{"a":1 "b":2}"#, false),
            (r#"{1:2}"#, false),
            ("[}", false),
            ("{]", false),
            ("[[]", false),
            ("[]]", false),
            ("{}", true),
            ("", false),
            ("   ", false),
            // Form feed is whitespace to Rust, not to JSON.
            ("\u{c}1", false),
            (r#""\u12""#, false),
            (r#""\u12g4""#, false),
            (r#""\x""#, false),
            (r#""\/\b\f\n\r\t\"\\""#, true),
            // A lone surrogate: serde_json only checks it when it decodes the string.
            (r#""\ud800""#, true),
            ("\"a\u{1}b\"", false),
            ("\"tab\tinside\"", false),
            (
                "\"été, 中文, 🦀 and a quote: \\\" then more than eight bytes\"",
                true,
            ),
            (r#"{"k\u0065y": {"x": ["\"", "]", "}"]}}"#, true),
            ("\"unterminated", false),
            ("\"ends in a backslash\\", false),
        ];
        for (text, valid) in cases {
            assert_eq!(serde_reads(text), valid, "serde_json on {text:?}");
            assert_eq!(walks(text), valid, "the walk on {text:?}");
        }
    }

    #[test]
    fn agrees_with_serde_on_random_and_broken_json() {
        const BREAKERS: &[u8] = b"{}[],:\"\\ 0123456789.eE+-tfnulr\x01\x0c\x1fa";
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut valid, mut invalid) = (0, 0);
        for round in 0..40_000 {
            let mut text = String::new();
            random_json(&mut rng, 4, &mut text);
            let mut bytes = text.into_bytes();
            // Half the texts get one to three edits: a byte inserted, removed or replaced.
            for _ in 0..if round % 2 == 0 {
                0
            } else {
                rng.random_range(1..4)
            } {
                let at = rng.random_range(0..=bytes.len());
                let byte = BREAKERS[rng.random_range(0..BREAKERS.len())];
                match rng.random_range(0..3) {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => drop(bytes.remove(at)),
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => {}
                }
            }
            // The generator and the edits write ASCII only.
            let text = String::from_utf8(bytes).expect("ASCII");
            let expected = serde_reads(&text);
            assert_eq!(walks(&text), expected, "{text:?}");
            if expected { valid += 1 } else { invalid += 1 }
        }
        assert!(
            valid > 15_000 && invalid > 5_000,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn nesting_deeper_than_serde_json_allows_is_left_to_it() {
        let nested = |depth| "[".repeat(depth) + "0" + &"]".repeat(depth);
        assert!(walks(&nested(128)));
        assert_eq!(Walk::new(&nested(129)).value(), None);
        let deep_object = r#"{"a":"#.repeat(128) + "1" + &"}".repeat(128);
        assert!(walks(&deep_object));
    }

    #[test]
    fn an_object_gives_its_keys_and_places() {
        let text = r#" { "a" : [1, {"b": 2}] , "c":"x", "a": null } "#;
        let mut walk = Walk::new(text);
        let mut seen = Vec::new();
        let span = walk.object(|walk, key| {
            let value = walk.value()?;
            seen.push(format!("{key}={}", &text[value]));
            Some(())
        });
        assert_eq!(span.map(|s| &text[s]), Some(&text[1..text.len() - 1]));
        assert_eq!(seen, [r#"a=[1, {"b": 2}]"#, r#"c="x""#, "a=null"]);
        assert!(walk.at_end());
        // A key with escapes is decoded; one serde_json would not decode gives up.
        let mut keys = Vec::new();
        let mut walk = Walk::new(r#"{"n\u0061me": 1, "\"": 2}"#);
        let read = walk.object(|walk, key| {
            keys.push(key.to_string());
            walk.value().map(drop)
        });
        assert!(read.is_some());
        assert_eq!(keys, ["name", "\""]);
        let mut walk = Walk::new(r#"{"\ud800": 1}"#);
        assert_eq!(walk.object(|walk, _| walk.value().map(drop)), None);
        // So does a field the caller did not walk over, and an array's element likewise.
        assert_eq!(Walk::new(r#"{"a": 1}"#).object(|_, _| Some(())), None);
        let mut walk = Walk::new("[1, 2]");
        let mut elements = 0;
        let span = walk.array(|walk| {
            elements += 1;
            walk.value().map(drop)
        });
        assert_eq!((span, elements), (Some(0..6), 2));
    }
}
