//! A target's answer to a list request, validated and split into its items in one walk.
//!
//! The gateway copies a list's items into the merged page as the targets wrote them, so it needs where
//! each item is and where its name is. Reading the answer with [`read`] gets both in the one walk that
//! validates it ([`Walk`], as strict as serde_json): the items array is walked element by element, and
//! each element's fields mark where the element and its name are. Whatever this reading does not
//! expect (an error, a result of another shape, an item that is not an object, a key it reads written
//! with escapes, invalid JSON) is left to [`jsonrpc::parse_incoming`], whose errors are serde_json's.

use std::ops::Range;

use crate::base::json_text::scan;
use crate::base::json_walk::Walk;
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
    let mut walk = Walk::new(text);
    let (mut id, mut result, mut plain) = (None, None, true);
    walk.object(|walk, key| {
        match key {
            "id" => {
                let raw = &text[walk.value()?];
                // Twice is refused by `parse_incoming`: left to it.
                plain &= id.replace(raw.parse().ok()).is_none();
            }
            "result" if result.is_none() => result = Some(list_result(walk, shape)?),
            "result" | "error" | "method" => {
                plain = false;
                walk.value()?;
            }
            _ => {
                walk.value()?;
            }
        }
        Some(())
    })?;
    if !plain || !walk.at_end() {
        return None;
    }
    let (range, mut spans) = result?;
    for item in &mut spans.items {
        item.span = item.span.start - range.start..item.span.end - range.start;
    }
    if let Some(cursor) = &mut spans.cursor {
        *cursor = cursor.start - range.start..cursor.end - range.start;
    }
    Some((id.flatten(), Json::page(&text[range], spans)))
}

/// The result object: the items array split, `nextCursor` located, the rest walked over.
fn list_result(walk: &mut Walk, shape: Shape) -> Option<(Range<usize>, Spans)> {
    let (mut items, mut cursor) = (None, None);
    let range = walk.object(|walk, key| {
        if key == shape.items {
            let mut found = Vec::with_capacity(16);
            walk.array(|walk| {
                found.push(item(walk, shape.name)?);
                Some(())
            })?;
            return items.replace(found).is_none().then_some(());
        }
        let span = walk.value()?;
        if key == "nextCursor" && cursor.replace(span).is_some() {
            return None;
        }
        Some(())
    })?;
    let spans = Spans {
        shape,
        items: items.unwrap_or_default(),
        cursor,
    };
    Some((range, spans))
}

/// One item, which must be an object: its place, and where its `name` field's value is in it.
fn item(walk: &mut Walk, name: &str) -> Option<Item> {
    let mut found: Option<(Range<usize>, usize)> = None;
    let span = walk.object(|walk, key| {
        let value = walk.value()?;
        if key == name {
            found = Some(match found.take() {
                None => (value, 1),
                Some((first, count)) => (first, count + 1),
            });
        }
        Some(())
    })?;
    let found = match found {
        Some((value, count)) => scan::Found::Field(value, count).relative_to(span.start),
        None => scan::Found::None,
    };
    Some(Item { span, found })
}
