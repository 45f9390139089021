//! JSON text that is already known to be valid, read and written without building a tree: where a
//! field is, where a value ends, and strings written with the escapes JSON needs.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

/// An object key: borrowed from the JSON text unless it has escapes.
pub enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl std::ops::Deref for Key<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_string()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Scans of JSON text that is already validated (by `serde_json` or `json_walk`), or whose reading by
/// a validating reader follows and decides (the depth pre-check, a message's likely id): no second
/// validation, just the structure, each byte looked at once. Text that is not JSON never makes them
/// panic or read out of bounds.
pub mod scan {
    use std::ops::Range;

    #[derive(Debug, Clone)]
    pub enum Found {
        /// The value of the field (its bytes), and how many times the field occurs.
        Field(Range<usize>, usize),
        /// Not an object, or no such field.
        None,
        /// A key has escapes, so it may spell the field: the caller decodes.
        Unsure,
    }

    impl Found {
        /// The same place, counted from `start` instead of the text's beginning.
        pub fn relative_to(self, start: usize) -> Self {
            match self {
                Found::Field(span, count) => {
                    Found::Field(span.start - start..span.end - start, count)
                }
                other => other,
            }
        }
    }

    /// Where the top-level field `name` of `object` is.
    pub fn field(object: &str, name: &str) -> Found {
        match Object::at(object.as_bytes(), 0) {
            Some(object) => object.find(name.as_bytes()).1,
            None => Found::None,
        }
    }

    /// A walk over an object's top-level fields: each key, then its value skipped or read by the
    /// caller.
    pub struct Object<'a> {
        bytes: &'a [u8],
        at: usize,
        done: bool,
    }

    impl<'a> Object<'a> {
        /// The object at `at` (after any whitespace); `None` if there is none.
        pub fn at(bytes: &'a [u8], at: usize) -> Option<Self> {
            let at = skip_space(bytes, at);
            (bytes.get(at) == Some(&b'{')).then_some(Self {
                bytes,
                at: at + 1,
                done: false,
            })
        }

        /// The next key, leaving the walk at its value: `None` after the last field (the walk is
        /// then past the closing brace), `Some(None)` for a key with escapes.
        pub fn key(&mut self) -> Option<Option<&'a [u8]>> {
            let bytes = self.bytes;
            let at = skip_space(bytes, self.at);
            if self.done || bytes.get(at) != Some(&b'"') {
                if !self.done {
                    self.at = (at + 1).min(bytes.len());
                }
                self.done = true;
                return None;
            }
            let key_end = string_end(bytes, at);
            let key = bytes.get(at + 1..key_end - 1).unwrap_or_default();
            // Past the `:`.
            self.at = skip_space(bytes, skip_space(bytes, key_end) + 1);
            Some((!key.contains(&b'\\')).then_some(key))
        }

        /// Where the value the walk is at starts.
        pub fn value_start(&self) -> usize {
            self.at
        }

        /// Skips the value the walk is at; its place.
        pub fn skip_value(&mut self) -> Range<usize> {
            let start = self.at;
            let end = value_end(self.bytes, start);
            self.after_value(end);
            start..end
        }

        /// Goes on after a value the caller read, which ended at `end`.
        pub fn after_value(&mut self, end: usize) {
            let after = skip_space(self.bytes, end);
            self.at = match self.bytes.get(after) {
                Some(b',') => after + 1,
                _ => after,
            };
        }

        /// Walks the whole object for the top-level field `name`: where the object ends, and
        /// where the field is.
        pub fn find(mut self, name: &[u8]) -> (usize, Found) {
            let (mut found, mut unsure): (Option<(Range<usize>, usize)>, bool) = (None, false);
            while let Some(key) = self.key() {
                let value = self.skip_value();
                match key {
                    None => unsure = true,
                    Some(key) if key == name => {
                        found = Some(match found {
                            None => (value, 1),
                            Some((first, count)) => (first, count + 1),
                        })
                    }
                    Some(_) => {}
                }
            }
            let found = match (unsure, found) {
                (true, _) => Found::Unsure,
                (false, Some((span, count))) => Found::Field(span, count),
                (false, None) => Found::None,
            };
            (self.at, found)
        }
    }

    /// One element of an array: its place, and where its top-level field of the name asked is.
    pub struct Element {
        pub span: Range<usize>,
        pub found: Found,
    }

    /// The elements of the array at `at`, each object's top-level field `name` found on the way,
    /// and where the array ends; `None` if there is no array at `at`.
    pub fn elements(bytes: &[u8], at: usize, name: &[u8]) -> Option<(Vec<Element>, usize)> {
        if bytes.get(at) != Some(&b'[') {
            return None;
        }
        let mut elements = Vec::new();
        let mut at = skip_space(bytes, at + 1);
        loop {
            match bytes.get(at) {
                None => return Some((elements, bytes.len())),
                Some(b']') => return Some((elements, at + 1)),
                _ => {}
            }
            let (end, found) = match Object::at(bytes, at) {
                Some(object) => object.find(name),
                None => (value_end(bytes, at), Found::None),
            };
            // Only text that is not JSON could stop the walk; serde then reads it (and refuses it).
            if end <= at {
                return None;
            }
            elements.push(Element {
                span: at..end,
                found,
            });
            at = skip_space(bytes, end);
            if bytes.get(at) == Some(&b',') {
                at = skip_space(bytes, at + 1);
            }
        }
    }

    /// Past the whitespace at `at`.
    pub fn skip_space(bytes: &[u8], mut at: usize) -> usize {
        while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
            at += 1;
        }
        at
    }

    /// The end (one past the closing quote) of the string starting at `at`.
    pub fn string_end(bytes: &[u8], at: usize) -> usize {
        let mut at = at + 1;
        loop {
            at = skip_unescaped(bytes, at);
            match bytes.get(at) {
                Some(b'"') => return at + 1,
                Some(_) => at += 2,
                None => return bytes.len(),
            }
        }
    }

    /// The first `"` or `\` at or after `at`: eight bytes at a time (most strings in a list are
    /// shorter than a vector search's set-up, longer than a byte loop should be).
    fn skip_unescaped(bytes: &[u8], mut at: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        // Marks the zero bytes of `word`; the lowest mark is exact (a borrow only runs upwards).
        let zeros = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
        while let Some(chunk) = bytes.get(at..at + 8) {
            let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let word = u64::from_le_bytes(chunk);
            let marks =
                zeros(word ^ (ONES * u64::from(b'"'))) | zeros(word ^ (ONES * u64::from(b'\\')));
            if marks != 0 {
                return at + (marks.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        while bytes.get(at).is_some_and(|&b| b != b'"' && b != b'\\') {
            at += 1;
        }
        at
    }

    /// The end of the value starting at `at`.
    fn value_end(bytes: &[u8], at: usize) -> usize {
        match bytes.get(at) {
            Some(b'"') => string_end(bytes, at),
            Some(b'{' | b'[') => {
                let (mut depth, mut at) = (0usize, at);
                while let Some(&byte) = bytes.get(at) {
                    match byte {
                        b'"' => {
                            at = string_end(bytes, at);
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                return at + 1;
                            }
                        }
                        _ => {}
                    }
                    at += 1;
                }
                bytes.len()
            }
            // A number, `true`, `false` or `null`.
            _ => {
                let rest = &bytes[at.min(bytes.len())..];
                at + rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(rest.len())
            }
        }
    }
}

/// Writes `text` as a JSON string.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    push_json_content(out, text);
    out.push('"');
}

/// Writes `text` as the inside of a JSON string: escaped, without the quotes.
pub fn push_json_content(out: &mut String, text: &str) {
    let needs_escape = text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    if !needs_escape {
        out.push_str(text);
        return;
    }
    // Serializing a string cannot fail.
    let quoted = serde_json::to_string(text).unwrap_or_default();
    out.push_str(
        quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default(),
    );
}

/// Random JSON for the tests of the readers of JSON text.
#[cfg(test)]
pub mod testing {
    /// Random JSON as targets may write it: odd whitespace, escapes, brackets and quotes inside
    /// strings, the field names the scans look for at every depth.
    pub fn random_json(rng: &mut rand::rngs::StdRng, depth: u32, out: &mut String) {
        use rand::Rng;
        let space = |rng: &mut rand::rngs::StdRng, out: &mut String| {
            for _ in 0..rng.random_range(0..3u32) {
                out.push([' ', '\n', '\t', '\r'][rng.random_range(0..4)]);
            }
        };
        let string = |rng: &mut rand::rngs::StdRng, out: &mut String| {
            const PIECES: [&str; 15] = [
                "name",
                "name",
                // Longer than the eight bytes the string scan takes at a time.
                "a plain run of text, fifty bytes long or about so.",
                "\\u00e9t\\u00e9 \\\"quoted\\\" \\\\",
                "tools",
                "nextCursor",
                "a",
                "]",
                "}",
                "{",
                "[",
                "\\\"",
                "\\\\",
                "\\u006e",
                ",:",
            ];
            out.push('"');
            for _ in 0..rng.random_range(0..4u32) {
                out.push_str(PIECES[rng.random_range(0..PIECES.len())]);
            }
            out.push('"');
        };
        space(rng, out);
        // Objects more often than anything else: list items are objects.
        match rng.random_range(0..if depth == 0 { 4 } else { 8 }) {
            0 => string(rng, out),
            1 => out.push_str(["1", "-2.5e3", "0"][rng.random_range(0..3)]),
            2 => out.push_str(["true", "false"][rng.random_range(0..2)]),
            3 => out.push_str("null"),
            4 => {
                out.push('[');
                for i in 0..rng.random_range(0..4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_json(rng, depth - 1, out);
                }
                space(rng, out);
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.random_range(0..5) {
                    if i > 0 {
                        out.push(',');
                    }
                    space(rng, out);
                    string(rng, out);
                    space(rng, out);
                    out.push(':');
                    random_json(rng, depth - 1, out);
                }
                space(rng, out);
                out.push('}');
            }
        }
        space(rng, out);
    }
}
