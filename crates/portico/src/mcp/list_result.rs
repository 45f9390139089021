//! A target's answer to a list request, validated and split into its items in one walk.
//!
//! The gateway copies a list's items into the merged page as the targets wrote them, so it needs where
//! each item is and where its name is. Reading the answer with [`read`] gets both while serde_json
//! validates it: the items array is visited element by element and each element's fields are read as
//! borrowed `RawValue`s, whose places in the text mark where the element and its name are. (Before, the
//! answer was validated as one `RawValue`, then walked again by a scan.) Whatever this reading does not
//! expect (an error, a result of another shape, an item that is not an object, a key of the result
//! written with escapes) is left to [`jsonrpc::parse_incoming`].

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::base::json_text::Key;
use crate::base::json_text::scan::{self, skip_space};
use crate::mcp::jsonrpc::{self, Incoming, Json, Payload};

/// What a list result holds: the field with the items, and the item field that names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub items: &'static str,
    pub name: &'static str,
}

/// The shape of the result of `method`, if it is a list method.
pub fn shape(method: &str) -> Option<Shape> {
    let (items, name) = match method {
        "tools/list" => ("tools", "name"),
        "prompts/list" => ("prompts", "name"),
        "resources/list" => ("resources", "uri"),
        "resources/templates/list" => ("resourceTemplates", "uriTemplate"),
        _ => return None,
    };
    Some(Shape { items, name })
}

/// Where a page's items are in its result's text.
#[derive(Debug, Clone)]
pub struct Spans {
    pub shape: Shape,
    pub items: Vec<Item>,
    /// The value of `nextCursor`, if the result has one.
    pub cursor: Option<Range<usize>>,
}

/// One item: its place in the result, and where its name's value is in the item.
#[derive(Debug, Clone)]
pub struct Item {
    pub span: Range<usize>,
    pub found: scan::Found,
}

/// Reads a target's message expecting the answer to a request whose result has `shape`: the result
/// is split as it is validated. Anything else is read as [`jsonrpc::parse_incoming`] reads it.
pub fn parse_answer(text: &str, shape: Option<Shape>) -> Result<Incoming, serde_json::Error> {
    if let Some((id, result)) = shape.and_then(|shape| read(text, shape)) {
        return Ok(Incoming::Response {
            id,
            payload: Payload::Result(result),
        });
    }
    jsonrpc::parse_incoming(text)
}

/// `text` as a response whose result has `shape`: its id and its result with the items' places.
fn read(text: &str, shape: Shape) -> Option<(Option<u64>, Json)> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let response = Response { text, shape }
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    let (id, range, mut spans) = response?;
    for item in &mut spans.items {
        item.span = item.span.start - range.start..item.span.end - range.start;
    }
    if let Some(cursor) = &mut spans.cursor {
        *cursor = cursor.start - range.start..cursor.end - range.start;
    }
    Some((id, Json::page(&text[range], spans)))
}

/// Where a value the walk read as a `RawValue` is in `text`.
fn span_of(text: &str, raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    start..start + raw.get().len()
}

/// Where the value after `key` (borrowed from `text`) starts: its `:` and the spaces around it skipped.
fn after_key(text: &str, key: &str) -> usize {
    let closing_quote = key.as_ptr() as usize - text.as_ptr() as usize + key.len();
    let colon = skip_space(text.as_bytes(), closing_quote + 1);
    skip_space(text.as_bytes(), colon + 1)
}

/// Where a container that starts at `start` and whose last value ended at `last` closes: one past
/// its `closing` byte. Errs when the text is not shaped so (the walk then gives up).
fn closed_at<E: de::Error>(bytes: &[u8], last: usize, closing: u8) -> Result<usize, E> {
    let at = skip_space(bytes, last);
    match bytes.get(at) {
        Some(&byte) if byte == closing => Ok(at + 1),
        _ => Err(E::custom("unexpected layout")),
    }
}

/// The top level: the result's place and spans, unless the message is not a plain result.
struct Response<'a> {
    text: &'a str,
    shape: Shape,
}

/// The response's numeric id, the result's place and its spans.
type Read = Option<(Option<u64>, Range<usize>, Spans)>;

impl<'de> DeserializeSeed<'de> for Response<'de> {
    type Value = Read;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Read, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Response<'de> {
    type Value = Read;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC response")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        let (mut id, mut result, mut plain) = (None, None, true);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match (&*key, &key) {
                ("id", _) => {
                    // Twice is refused by `parse_incoming`: left to it.
                    let raw: &'de RawValue = map.next_value()?;
                    plain &= id.replace(raw.get().parse().ok()).is_none();
                }
                ("result", Key::Borrowed(key)) if result.is_none() => {
                    let start = after_key(self.text, key);
                    let seed = ListResult {
                        text: self.text,
                        shape: self.shape,
                        start,
                    };
                    result = Some(map.next_value_seed(seed)?);
                }
                ("result" | "error" | "method", _) => {
                    plain = false;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(result
            .filter(|_| plain)
            .map(|(range, spans)| (id.flatten(), range, spans)))
    }
}

/// The result object: the items array split, `nextCursor` located, the rest validated.
struct ListResult<'a> {
    text: &'a str,
    shape: Shape,
    start: usize,
}

impl<'de> DeserializeSeed<'de> for ListResult<'de> {
    type Value = (Range<usize>, Spans);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListResult<'de> {
    type Value = (Range<usize>, Spans);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list result")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let bytes = self.text.as_bytes();
        let (mut items, mut cursor, mut last) = (None, None, self.start + 1);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            // Every place below is counted from a key's or a value's own place in the text.
            let Key::Borrowed(key) = key else {
                return Err(de::Error::custom("a key with escapes"));
            };
            if key == self.shape.items {
                let start = after_key(self.text, key);
                let seed = Items {
                    text: self.text,
                    name: self.shape.name,
                    start,
                };
                let (found, end) = map.next_value_seed(seed)?;
                if items.replace(found).is_some() {
                    return Err(de::Error::custom("items twice"));
                }
                last = end;
                continue;
            }
            let value: &'de RawValue = map.next_value()?;
            let span = span_of(self.text, value);
            last = span.end;
            if key == "nextCursor" && cursor.replace(span).is_some() {
                return Err(de::Error::custom("nextCursor twice"));
            }
        }
        let end = closed_at(bytes, last, b'}')?;
        let spans = Spans {
            shape: self.shape,
            items: items.unwrap_or_default(),
            cursor,
        };
        Ok((self.start..end, spans))
    }
}

/// The items array: each element's place and its name's.
struct Items<'a> {
    text: &'a str,
    name: &'static str,
    start: usize,
}

impl<'de> DeserializeSeed<'de> for Items<'de> {
    type Value = (Vec<Item>, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'de> {
    type Value = (Vec<Item>, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let bytes = self.text.as_bytes();
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        // Just past the `[`, then past each element.
        let mut last = self.start + 1;
        loop {
            let mut start = skip_space(bytes, last);
            if !items.is_empty() && bytes.get(start) == Some(&b',') {
                start = skip_space(bytes, start + 1);
            }
            let seed = Element {
                text: self.text,
                name: self.name,
                start,
            };
            let Some(item) = seq.next_element_seed(seed)? else {
                break;
            };
            last = item.span.end;
            items.push(item);
        }
        let end = closed_at(bytes, last, b']')?;
        Ok((items, end))
    }
}

/// One item, which must be an object: where it ends, and where its name field's value is.
struct Element<'a> {
    text: &'a str,
    name: &'static str,
    start: usize,
}

impl<'de> DeserializeSeed<'de> for Element<'de> {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Item, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Element<'de> {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an item object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        if self.text.as_bytes().get(self.start) != Some(&b'{') {
            return Err(de::Error::custom("unexpected layout"));
        }
        let (mut found, mut last): (Option<(Range<usize>, usize)>, usize) = (None, self.start + 1);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            let span = span_of(self.text, value);
            last = span.end;
            if *key == *self.name {
                found = Some(match found {
                    None => (span.start - self.start..span.end - self.start, 1),
                    Some((first, count)) => (first, count + 1),
                });
            }
        }
        let end = closed_at(self.text.as_bytes(), last, b'}')?;
        let found = match found {
            Some((span, count)) => scan::Found::Field(span, count),
            None => scan::Found::None,
        };
        Ok(Item {
            span: self.start..end,
            found,
        })
    }
}
