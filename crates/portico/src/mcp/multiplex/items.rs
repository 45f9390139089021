//! List results read shallowly: the items stay raw JSON, and only the field that names an item is
//! parsed, prefixed and written back. Merging hundreds of tools costs copies, not JSON trees.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
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
    fields: Option<Vec<(String, &'a RawValue)>>,
    name: Option<Option<String>>,
}

impl<'a> Item<'a> {
    pub fn new(raw: &'a RawValue) -> Self {
        Self {
            raw,
            fields: None,
            name: None,
        }
    }

    fn fields(&mut self) -> Option<&[(String, &'a RawValue)]> {
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
                .and_then(|fields| fields.iter().find(|(key, _)| key == field))
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
                Some(name) if key == kind.name_field() => push_json_string(out, name),
                _ => out.push_str(value.get()),
            }
        }
        out.push('}');
    }
}

/// Reads the items and the cursor of a list result.
pub fn read_page(result: &RawValue, kind: ListKind) -> Result<Page<'_>, serde_json::Error> {
    let Fields(fields) = serde_json::from_str(result.get())?;
    let mut page = Page {
        items: Vec::new(),
        next_cursor: None,
    };
    for (key, value) in fields {
        if key == kind.result_key() {
            let raw: Vec<&RawValue> = serde_json::from_str(value.get())?;
            page.items = raw.into_iter().map(Item::new).collect();
        } else if key == "nextCursor" {
            page.next_cursor = serde_json::from_str(value.get())?;
        }
    }
    Ok(page)
}

/// An object's fields in order, values unparsed.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

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
                while let Some(key) = map.next_key::<String>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

pub fn push_json_string(out: &mut String, text: &str) {
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
