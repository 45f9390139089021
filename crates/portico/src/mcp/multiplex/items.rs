//! List results read shallowly: the items stay raw JSON, and only the field that names an item is
//! parsed, prefixed and written back. Merging hundreds of tools costs copies, not JSON trees.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::naming::{self, ListKind};
use crate::base::json_text::{Key, push_json_content, push_json_string, scan};
use crate::mcp::jsonrpc::Json;

/// One page of one target's list result.
pub struct Page<'a> {
    pub items: Vec<Item<'a>>,
    pub next_cursor: Option<String>,
}

/// One listed item: its JSON text (validated when its page was read), and its name field: found
/// while the page was scanned, or at most once later, when something needs it.
pub struct Item<'a> {
    pub text: &'a str,
    found: Option<scan::Found>,
    name: Option<NameField<'a>>,
}

/// Where an item's name is.
enum NameField<'a> {
    /// The value of the one top-level name field (a JSON string): its bytes in the item's text,
    /// quotes included, and the name they decode to (borrowed unless it has escapes).
    At(Range<usize>, Cow<'a, str>),
    /// Several top-level name fields: every one is rewritten, and the first one counts.
    Repeated(Cow<'a, str>),
    /// No name field, not a string, or not an object.
    Missing,
}

impl<'a> Item<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            found: None,
            name: None,
        }
    }

    /// Finds the top-level name field (unless the page's scan found it), other values skipped
    /// unparsed.
    fn name_field(&mut self, kind: ListKind) -> &NameField<'a> {
        let raw = self.text;
        let found = self.found.take();
        self.name.get_or_insert_with(|| {
            let found = match found.unwrap_or_else(|| scan::field(raw, kind.name_field())) {
                scan::Found::Field(span, count) => Some((span, count)),
                scan::Found::None => None,
                // A key with escapes: serde compares it decoded.
                scan::Found::Unsure => {
                    let mut deserializer = serde_json::Deserializer::from_str(raw);
                    match NameSeed(kind.name_field()).deserialize(&mut deserializer) {
                        // The value is a slice of `raw`: its place there is the distance between the two.
                        Ok(Some((value, count))) => {
                            let start = value.get().as_ptr() as usize - raw.as_ptr() as usize;
                            Some((start..start + value.get().len(), count))
                        }
                        _ => None,
                    }
                }
            };
            let Some((span, count)) = found else {
                return NameField::Missing;
            };
            let Some(name) = decode_string(&raw[span.clone()]) else {
                return NameField::Missing;
            };
            if count > 1 {
                return NameField::Repeated(name);
            }
            NameField::At(span, name)
        })
    }

    /// The item's name (or URI, or URI template), if it has one.
    pub fn name(&mut self, kind: ListKind) -> Option<&str> {
        match self.name_field(kind) {
            NameField::At(_, name) | NameField::Repeated(name) => Some(name),
            NameField::Missing => None,
        }
    }

    /// Writes the item to `out` with its name prefixed by `target`; every other byte verbatim.
    pub fn write_prefixed(&mut self, out: &mut String, kind: ListKind, target: &str) {
        let raw = self.text;
        match self.name_field(kind) {
            NameField::At(span, _) => {
                // The name's JSON text after its opening quote is the same whether or not it is
                // prefixed: only the prefix is written.
                let after_quote = span.start + 1;
                out.push_str(&raw[..after_quote]);
                push_json_content(out, target);
                out.push(kind.separator());
                out.push_str(&raw[after_quote..]);
            }
            NameField::Repeated(name) => {
                let name = naming::join(target, kind.separator(), name);
                self.write_rewritten(out, kind, &name);
            }
            NameField::Missing => out.push_str(raw),
        }
    }

    /// Writes the item field by field, every top-level name field replaced by `name`.
    fn write_rewritten(&self, out: &mut String, kind: ListKind, name: &str) {
        let Ok(Fields(fields)) = serde_json::from_str(self.text) else {
            out.push_str(self.text);
            return;
        };
        let name = Some(name);
        out.push('{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(out, key);
            out.push(':');
            match name {
                Some(name) if &**key == kind.name_field() => push_json_string(out, name),
                _ => out.push_str(value.get()),
            }
        }
        out.push('}');
    }
}

/// The string a JSON string's text decodes to: borrowed unless it has escapes; `None` for another
/// kind of value.
fn decode_string(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// Reads the items and the cursor of a list result, in one pass over its text.
pub fn read_page(result: &Json, kind: ListKind) -> Result<Page<'_>, serde_json::Error> {
    if let Some(page) = split_page(result, kind) {
        return Ok(page);
    }
    if let Some(page) = scan_page(result.get(), kind) {
        return Ok(page);
    }
    let mut deserializer = serde_json::Deserializer::from_str(result.get());
    let page = PageSeed(kind).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(page)
}

/// A page whose items were found while it was validated (`list_result`); `None` when it was not read
/// so, or as another kind, or its cursor is not a string.
fn split_page(result: &Json, kind: ListKind) -> Option<Page<'_>> {
    let spans = result.spans()?;
    if spans.shape.items != kind.result_key() || spans.shape.name != kind.name_field() {
        return None;
    }
    let text = result.get();
    let next_cursor = match &spans.cursor {
        Some(span) => serde_json::from_str::<Option<String>>(&text[span.clone()]).ok()?,
        None => None,
    };
    let items = spans
        .items
        .iter()
        .map(|item| Item {
            text: &text[item.span.clone()],
            found: Some(item.found.clone()),
            name: None,
        })
        .collect();
    Some(Page { items, next_cursor })
}

/// A page read by a scan of its validated text; `None` for anything but the plain shape (a key with
/// escapes, a repeated field, items that are not an array, a cursor that is not a string), which
/// serde then reads.
fn scan_page(text: &str, kind: ListKind) -> Option<Page<'_>> {
    let bytes = text.as_bytes();
    let mut object = scan::Object::at(bytes, 0)?;
    let (mut items, mut cursor) = (None, None);
    while let Some(key) = object.key() {
        let key = key?;
        if key == kind.result_key().as_bytes() {
            let (elements, end) =
                scan::elements(bytes, object.value_start(), kind.name_field().as_bytes())?;
            object.after_value(end);
            if items.replace(elements).is_some() {
                return None;
            }
        } else if key == b"nextCursor" {
            if cursor.replace(object.skip_value()).is_some() {
                return None;
            }
        } else {
            object.skip_value();
        }
    }
    let items = items
        .unwrap_or_default()
        .into_iter()
        .map(|element| Item {
            text: &text[element.span.clone()],
            found: Some(element.found.relative_to(element.span.start)),
            name: None,
        })
        .collect();
    let next_cursor = match cursor {
        Some(span) => serde_json::from_str::<Option<String>>(&text[span]).ok()?,
        None => None,
    };
    Some(Page { items, next_cursor })
}

/// Deserializes a list result into a [`Page`]: the items array is split into raw items as it is
/// read; other fields are skipped unparsed.
struct PageSeed(ListKind);

impl<'de> DeserializeSeed<'de> for PageSeed {
    type Value = Page<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Page<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed {
    type Value = Page<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list result object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Page<'de>, A::Error> {
        let mut page = Page {
            items: Vec::new(),
            next_cursor: None,
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if &*key == self.0.result_key() {
                let raw: Vec<&'de RawValue> = map.next_value()?;
                page.items = raw.into_iter().map(|raw| Item::new(raw.get())).collect();
            } else if &*key == "nextCursor" {
                page.next_cursor = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(page)
    }
}

/// Finds the value of one top-level field of an object (and how many times the field occurs).
struct NameSeed(&'static str);

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Option<(&'de RawValue, usize)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Option<(&'de RawValue, usize)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Option<(&'de RawValue, usize)> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if &*key != self.0 {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let value = map.next_value::<&'de RawValue>()?;
            found = Some(match found {
                None => (value, 1),
                Some((first, count)) => (first, count + 1),
            });
        }
        Ok(found)
    }
}

/// An object's fields in order, values unparsed.
struct Fields<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::json_text::testing::random_json;

    fn raw(text: &str) -> Json {
        Json::from(&*RawValue::from_string(text.to_string()).unwrap())
    }

    #[test]
    fn reads_items_and_cursor() {
        let result = raw(r#"{"tools":[{"name":"a"},{"name":"b"}],"nextCursor":"2","_meta":{}}"#);
        let mut page = read_page(&result, ListKind::Tools).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        assert_eq!(page.items[1].name(ListKind::Tools), Some("b"));
    }

    #[test]
    fn escaped_keys_and_other_fields_are_read_alike() {
        let result = raw(
            r#"{"_meta":{"tools":[1]},"too\u006cs":[{"na\u006de":"a\"b","x":1}],"nextCursor":null}"#,
        );
        let mut page = read_page(&result, ListKind::Tools).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.next_cursor, None);
        assert_eq!(page.items[0].name(ListKind::Tools), Some("a\"b"));
        let mut out = String::new();
        page.items[0].write_prefixed(&mut out, ListKind::Tools, "t");
        assert_eq!(out, r#"{"na\u006de":"t_a\"b","x":1}"#, "the key as written");
        assert!(read_page(&raw(r#"{"tools":{}}"#), ListKind::Tools).is_err());
    }

    #[test]
    fn repeated_or_odd_name_fields() {
        let write = |text: &str| {
            let item = raw(text);
            let mut out = String::new();
            Item::new(item.get()).write_prefixed(&mut out, ListKind::Tools, "t");
            out
        };
        assert_eq!(
            write(r#"{"name":"a","x":{"name":"b"},"name":"c"}"#),
            r#"{"name":"t_a","x":{"name":"b"},"name":"t_a"}"#,
            "every top-level name is rewritten, to the first"
        );
        assert_eq!(write(r#"{"name":7}"#), r#"{"name":7}"#);
        assert_eq!(
            write(r#"{ "x" : 1 , "name" : "a" }"#),
            r#"{ "x" : 1 , "name" : "t_a" }"#
        );
        assert_eq!(write(r#"["name"]"#), r#"["name"]"#);
    }

    #[test]
    fn the_scan_finds_what_serde_finds() {
        let cases = [
            r#"{"name":"a"}"#,
            r#" { "x" : [1, {"name": "no"}, "]}\"" ] , "name" : "a\"b" , "y": -1.5e3 } "#,
            r#"{"x":true,"y":null,"z":{"a":{"b":[[]]}},"name":"last"}"#,
            r#"{"name":"a","name":"b"}"#,
            r#"{"x":"name","y":{"name":"inner"}}"#,
            r#"{}"#,
            r#"[{"name":"a"}]"#,
            r#"{"name":12}"#,
        ];
        for case in cases {
            let by_serde = {
                let mut deserializer = serde_json::Deserializer::from_str(case);
                NameSeed("name")
                    .deserialize(&mut deserializer)
                    .ok()
                    .flatten()
                    .map(|(value, count)| (value.get().to_string(), count))
            };
            let by_scan = match scan::field(case, "name") {
                scan::Found::Field(span, count) => Some((case[span].to_string(), count)),
                scan::Found::None => None,
                scan::Found::Unsure => panic!("no escaped keys in {case}"),
            };
            assert_eq!(by_scan, by_serde, "{case}");
        }
        assert!(matches!(
            scan::field(r#"{"na\u006de":"a"}"#, "name"),
            scan::Found::Unsure
        ));
    }

    #[test]
    fn scans_agree_with_serde_on_random_json() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut checked = 0;
        for round in 0..20_000 {
            let mut text = String::new();
            if round % 2 == 0 {
                random_json(&mut rng, 4, &mut text);
            } else {
                // A page: items of any kind, most of them objects, with and without names.
                text.push_str("{\"tools\": [");
                for i in 0..rand::Rng::random_range(&mut rng, 0..5) {
                    if i > 0 {
                        text.push(',');
                    }
                    random_json(&mut rng, 3, &mut text);
                }
                text.push_str("] }");
            }
            // The scans only ever see text serde_json has validated.
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                continue;
            }
            checked += 1;
            let mut deserializer = serde_json::Deserializer::from_str(&text);
            let by_serde = NameSeed("name")
                .deserialize(&mut deserializer)
                .ok()
                .flatten()
                .map(|(value, count)| (value.get().to_string(), count));
            match scan::field(&text, "name") {
                scan::Found::Field(span, count) => {
                    assert_eq!(Some((text[span].to_string(), count)), by_serde, "{text}")
                }
                scan::Found::None => assert_eq!(by_serde, None, "{text}"),
                scan::Found::Unsure => {}
            }
            if let Some(page) = scan_page(&text, ListKind::Tools) {
                // Names found while the page was scanned are the names found item by item.
                assert_is_serde_page(page, &text, &text);
            }
        }
        assert!(checked > 10_000, "only {checked} valid documents");
    }

    /// Asserts that `page` is the page serde reads from the list result `text`: its items, cursor,
    /// names and prefixed output. `context` is shown when it is not.
    fn assert_is_serde_page(page: Page, text: &str, context: &str) {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let expected = PageSeed(ListKind::Tools)
            .deserialize(&mut deserializer)
            .expect(context);
        assert_eq!(texts(&page), texts(&expected), "{context}");
        assert_eq!(page.next_cursor, expected.next_cursor, "{context}");
        assert_eq!(
            names_and_prefixed(page),
            names_and_prefixed(expected),
            "{context}"
        );
    }

    /// Each item's text.
    fn texts(page: &Page) -> Vec<String> {
        page.items.iter().map(|i| i.text.to_string()).collect()
    }

    /// Each item's name, and the item written with the prefix `t`.
    fn names_and_prefixed(mut page: Page) -> Vec<(Option<String>, String)> {
        page.items
            .iter_mut()
            .map(|item| {
                let mut out = String::new();
                item.write_prefixed(&mut out, ListKind::Tools, "t");
                (item.name(ListKind::Tools).map(str::to_string), out)
            })
            .collect()
    }

    #[test]
    fn a_page_split_while_validated_is_the_page_serde_reads() {
        use crate::mcp::jsonrpc::{Incoming, Payload};
        use crate::mcp::list_result;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut split, mut checked) = (0, 0);
        for round in 0..20_000 {
            let mut result = String::new();
            if round % 4 == 0 {
                random_json(&mut rng, 4, &mut result);
            } else {
                result.push_str(
                    ["{\"tools\": [", " {\"x\":{\"tools\":1}, \"tools\" :\n[ "][round % 2],
                );
                for i in 0..rand::Rng::random_range(&mut rng, 0..5) {
                    if i > 0 {
                        result.push_str([",", " ,\t"][i % 2]);
                    }
                    random_json(&mut rng, 3, &mut result);
                }
                result.push_str(["] }", " ] , \"nextCursor\" : \"n\\\"2\" }"][round % 3 / 2]);
            }
            let response = format!("{{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{result}}}");
            let Ok(answer) = list_result::parse_answer(&response, list_result::shape("tools/list"))
            else {
                assert!(
                    serde_json::from_str::<serde_json::Value>(&response).is_err(),
                    "{response}"
                );
                continue;
            };
            let Incoming::Response {
                id: Some(7),
                payload: Payload::Result(json),
            } = answer
            else {
                // Read as any message is (a `null` result is no result).
                let any = crate::mcp::jsonrpc::parse_incoming(&response);
                assert!(!matches!(any, Ok(Incoming::Response { .. })), "{response}");
                continue;
            };
            assert_eq!(
                json.get(),
                result.trim(),
                "the result as the target wrote it"
            );
            checked += 1;
            let Some(page) = split_page(&json, ListKind::Tools) else {
                continue;
            };
            split += 1;
            assert_is_serde_page(page, json.get(), &result);
        }
        assert!(
            split > 5_000 && checked > split,
            "{split} pages split of {checked}"
        );
    }

    #[test]
    fn a_scanned_page_is_the_page_serde_reads() {
        let serde_page = |text: &str| {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let page = PageSeed(ListKind::Tools)
                .deserialize(&mut deserializer)
                .unwrap();
            let items: Vec<String> = page.items.iter().map(|i| i.text.to_string()).collect();
            (items, page.next_cursor)
        };
        let cases = [
            r#"{"tools":[{"name":"a","s":{"x":[1,{"y":"]"}]}},{"name":"b"}],"nextCursor":"c2"}"#,
            r#" { "_meta" : {"tools":[9]} , "tools" : [ {"name":"a"} , 7 , "s" , [ ] ] } "#,
            r#"{"tools":[],"nextCursor":null}"#,
            r#"{"nextCursor":"x\"y"}"#,
        ];
        for case in cases {
            let page = scan_page(case, ListKind::Tools).expect(case);
            let items: Vec<String> = page.items.iter().map(|i| i.text.to_string()).collect();
            assert_eq!((items, page.next_cursor), serde_page(case), "{case}");
        }
        for unusual in [
            r#"{"tools":{}}"#,
            r#"{"tools":[],"tools":[]}"#,
            r#"{"too\u006cs":[]}"#,
            r#"{"tools":[],"nextCursor":5}"#,
            // Not JSON, which the scan never gets (a target's result is validated first): no hang.
            r#"{"tools":[,]}"#,
        ] {
            assert!(scan_page(unusual, ListKind::Tools).is_none(), "{unusual}");
        }
    }

    #[test]
    fn prefixes_only_the_top_level_name() {
        let item = raw(
            r#"{"name":"read","inputSchema":{"properties":{"name":{"type":"string"}}},"x":"\"q\""}"#,
        );
        let mut out = String::new();
        Item::new(item.get()).write_prefixed(&mut out, ListKind::Tools, "files");
        assert_eq!(
            out,
            r#"{"name":"files_read","inputSchema":{"properties":{"name":{"type":"string"}}},"x":"\"q\""}"#
        );
    }
}
