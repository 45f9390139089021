//! List results read shallowly: the items stay raw JSON, and only the field that names an item is
//! parsed, prefixed and written back. Merging hundreds of tools costs copies, not JSON trees.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::naming::{self, ListKind};

/// One page of one target's list result.
pub struct Page<'a> {
    pub items: Vec<&'a RawValue>,
    pub next_cursor: Option<String>,
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
            page.items = serde_json::from_str(value.get())?;
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

/// The name (or URI) of an item, if it has one; the item's other fields are skipped, not kept.
pub fn name_of(item: &RawValue, kind: ListKind) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        name: Option<String>,
        uri: Option<String>,
        #[serde(rename = "uriTemplate")]
        uri_template: Option<String>,
    }
    let named: Named = serde_json::from_str(item.get()).ok()?;
    match kind {
        ListKind::Tools | ListKind::Prompts => named.name,
        ListKind::Resources => named.uri,
        ListKind::ResourceTemplates => named.uri_template,
    }
}

/// Writes `item` to `out` with its name field prefixed by `target`; every other field verbatim.
pub fn write_prefixed(out: &mut String, item: &RawValue, kind: ListKind, target: &str) {
    let Ok(Fields(fields)) = serde_json::from_str(item.get()) else {
        out.push_str(item.get());
        return;
    };
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, key);
        out.push(':');
        let name = (key == kind.name_field())
            .then(|| serde_json::from_str::<String>(value.get()).ok())
            .flatten();
        match name {
            Some(name) => push_json_string(out, &naming::join(target, kind.separator(), &name)),
            None => out.push_str(value.get()),
        }
    }
    out.push('}');
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
        let page = read_page(&result, ListKind::Tools).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        assert_eq!(
            name_of(page.items[1], ListKind::Tools).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn prefixes_only_the_top_level_name() {
        let item = raw(
            r#"{"name":"read","inputSchema":{"properties":{"name":{"type":"string"}}},"x":"\"q\""}"#,
        );
        let mut out = String::new();
        write_prefixed(&mut out, &item, ListKind::Tools, "files");
        assert_eq!(
            out,
            r#"{"name":"files_read","inputSchema":{"properties":{"name":{"type":"string"}}},"x":"\"q\""}"#
        );
    }
}
