//! List results read shallowly: the items stay raw JSON, and only the field that names an item is
//! parsed, prefixed and written back. Merging hundreds of tools costs copies, not JSON trees.

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::naming::{self, ListKind};

/// One page of one target's list result.
pub struct Page<'a> {
    pub items: Vec<Item<'a>>,
    pub next_cursor: Option<String>,
}

/// One listed item: raw JSON, its fields read at most once, when something needs its name.
pub struct Item<'a> {
    pub raw: &'a RawValue,
    fields: Option<Vec<(Key<'a>, &'a RawValue)>>,
    name: Option<Option<String>>,
}

/// An object key: borrowed from the JSON text unless it has escapes.
enum Key<'a> {
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

impl<'a> Item<'a> {
    pub fn new(raw: &'a RawValue) -> Self {
        Self {
            raw,
            fields: None,
            name: None,
        }
    }

    fn fields(&mut self) -> Option<&[(Key<'a>, &'a RawValue)]> {
        if self.fields.is_none() {
            let Fields(fields) = serde_json::from_str(self.raw.get()).ok()?;
            self.fields = Some(fields);
        }
        self.fields.as_deref()
    }

    /// The item's name (or URI, or URI template), if it has one.
    pub fn name(&mut self, kind: ListKind) -> Option<&str> {
        if self.name.is_none() {
            let field = kind.name_field();
            let name = self
                .fields()
                .and_then(|fields| fields.iter().find(|(key, _)| &**key == field))
                .and_then(|(_, value)| serde_json::from_str(value.get()).ok());
            self.name = Some(name);
        }
        self.name.as_ref().and_then(|n| n.as_deref())
    }

    /// Writes the item to `out` with its name prefixed by `target`; every other field verbatim.
    pub fn write_prefixed(&mut self, out: &mut String, kind: ListKind, target: &str) {
        let name = self
            .name(kind)
            .map(|n| naming::join(target, kind.separator(), n));
        let raw = self.raw;
        let Some(fields) = self.fields() else {
            out.push_str(raw.get());
            return;
        };
        out.push('{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(out, key);
            out.push(':');
            match &name {
                Some(name) if &**key == kind.name_field() => push_json_string(out, name),
                _ => out.push_str(value.get()),
            }
        }
        out.push('}');
    }
}

/// Reads the items and the cursor of a list result, in one pass over its text.
pub fn read_page(result: &RawValue, kind: ListKind) -> Result<Page<'_>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(result.get());
    let page = PageSeed(kind).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(page)
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
                page.items = raw.into_iter().map(Item::new).collect();
            } else if &*key == "nextCursor" {
                page.next_cursor = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(page)
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

pub fn push_json_string(out: &mut String, text: &str) {
    let needs_escape = text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    if !needs_escape {
        out.push('"');
        out.push_str(text);
        out.push('"');
        return;
    }
    // Serializing a string cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
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
        assert_eq!(out, r#"{"name":"t_a\"b","x":1}"#);
        assert!(read_page(&raw(r#"{"tools":{}}"#), ListKind::Tools).is_err());
    }

    #[test]
    fn prefixes_only_the_top_level_name() {
        let item = raw(
            r#"{"name":"read","inputSchema":{"properties":{"name":{"type":"string"}}},"x":"\"q\""}"#,
        );
        let mut out = String::new();
        Item::new(&item).write_prefixed(&mut out, ListKind::Tools, "files");
        assert_eq!(
            out,
            r#"{"name":"files_read","inputSchema":{"properties":{"name":{"type":"string"}}},"x":"\"q\""}"#
        );
    }
}
