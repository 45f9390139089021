//! A target's answer to a request, validated in one walk; a list request's answer split into its items
//! in the same walk.
//!
//! The gateway copies a list's items into the merged page as the targets wrote them, so it needs where
//! each item is and where its name is. Reading the answer with [`read`] gets both in the one walk that
//! validates it ([`Walk`], as strict as serde_json): the items array is walked element by element, and
//! each element's fields mark where the element and its name are. Any other result is only walked
//! over, and kept as the target wrote it. Whatever this reading does not expect (an error, a request,
//! a list result of another shape, an item that is not an object, a key written with escapes it
//! cannot decode, invalid JSON) is left to [`jsonrpc::parse_incoming`], whose errors are serde_json's.
//!
//! A target answers every list request alike until its list changes, and every session of a backend
//! lists the same targets: each worker keeps the last results it split ([`Splits`]), and a result
//! that is byte for byte one of them is passed over unread, its places taken from the one kept.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

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

/// Reads a target's message expecting the answer to a request, whose result, if the request listed,
/// has `shape`: a list result is split as it is validated, any other result validated in the same
/// walk. Anything else (an error, a request, a notification) is read as
/// [`jsonrpc::parse_incoming`] reads it.
pub fn parse_answer(text: &str, shape: Option<Shape>) -> Result<Incoming, serde_json::Error> {
    if let Some((id, result)) = read(text, shape) {
        return Ok(Incoming::Response {
            id,
            payload: Payload::Result(result),
        });
    }
    jsonrpc::parse_incoming(text)
}

/// `text` as a response: its id and its result, with the items' places when `shape` is given.
fn read(text: &str, shape: Option<Shape>) -> Option<(Option<u64>, Json)> {
    let mut walk = Walk::new(text);
    // The result's place, and its items' places (relative to it) if it was split.
    let (mut id, mut result, mut plain) = (None, None, true);
    walk.object(|walk, key| {
        match key {
            "id" => {
                let raw = &text[walk.value()?];
                // Twice is refused by `parse_incoming`: left to it.
                plain &= id.replace(raw.parse().ok()).is_none();
            }
            "result" if result.is_none() => {
                result = Some(match shape {
                    Some(shape) => {
                        let (range, spans) = split_result(walk, text, shape)?;
                        (range, Some(spans))
                    }
                    None => (walk.value()?, None),
                })
            }
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
    let (range, page) = result?;
    let result = &text[range];
    let Some(spans) = page else {
        // A `null` result is no result to `parse_incoming`.
        return (result != "null").then(|| (id.flatten(), Json::written(result.into())));
    };
    Some((id.flatten(), Json::page(result, spans)))
}

/// The result here in `text`, split: its place and its items' places (relative to it); one kept in
/// [`SPLITS`] is passed over, one walked is kept there (a valid result is valid whatever surrounds it).
fn split_result(walk: &mut Walk, text: &str, shape: Shape) -> Option<(Range<usize>, Arc<Spans>)> {
    if let Some(kept) = SPLITS.with_borrow_mut(|splits| splits.find(walk, shape)) {
        return Some(kept);
    }
    let (range, mut spans) = list_result(walk, shape)?;
    for item in &mut spans.items {
        item.span = item.span.start - range.start..item.span.end - range.start;
    }
    if let Some(cursor) = &mut spans.cursor {
        *cursor = cursor.start - range.start..cursor.end - range.start;
    }
    let spans = Arc::new(spans);
    SPLITS.with_borrow_mut(|splits| splits.keep(&text[range.clone()], spans.clone()));
    Some((range, spans))
}

thread_local! {
    static SPLITS: RefCell<Splits> = const { RefCell::new(Splits::new()) };
}

/// List results kept by a worker.
const SPLITS_KEPT: usize = 16;
/// The most bytes of result text a worker keeps; a result larger than this is not kept.
const SPLITS_MAX_BYTES: usize = 1 << 20;

/// The list results a worker split last, most recently used first: each one's text and places.
struct Splits {
    kept: VecDeque<(Box<str>, Arc<Spans>)>,
    bytes: usize,
}

impl Splits {
    const fn new() -> Self {
        Self {
            kept: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The kept result of `shape` whose text comes next in `walk`, which is then past it.
    fn find(&mut self, walk: &mut Walk, shape: Shape) -> Option<(Range<usize>, Arc<Spans>)> {
        let (i, range) = self
            .kept
            .iter()
            .enumerate()
            .find_map(|(i, (text, spans))| {
                let range = (spans.shape == shape).then(|| walk.known_value(text))??;
                Some((i, range))
            })?;
        let found = self.kept.remove(i)?;
        let spans = found.1.clone();
        self.kept.push_front(found);
        Some((range, spans))
    }

    /// Keeps `text`, a result just split into `spans`, dropping the least recently used over the limits.
    fn keep(&mut self, text: &str, spans: Arc<Spans>) {
        if text.len() > SPLITS_MAX_BYTES {
            return;
        }
        self.bytes += text.len();
        self.kept.push_front((text.into(), spans));
        while self.kept.len() > SPLITS_KEPT || self.bytes > SPLITS_MAX_BYTES {
            let Some((dropped, _)) = self.kept.pop_back() else {
                break;
            };
            self.bytes -= dropped.len();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS: &str = r#"{"tools":[{"name":"a","inputSchema":{"type":"object"}},{"x":1,"name":"b"}],"nextCursor":"2"}"#;

    fn answer(id: u64, result: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result": {result}}}"#)
    }

    fn page(text: &str, method: &str) -> Option<Json> {
        match parse_answer(text, shape(method)) {
            Ok(Incoming::Response {
                payload: Payload::Result(json),
                ..
            }) => Some(json),
            _ => None,
        }
    }

    /// Where a split result's items and cursor are.
    fn places(json: &Json) -> (Vec<Range<usize>>, Option<Range<usize>>) {
        let spans = json.spans().expect("split");
        let items = spans.items.iter().map(|i| i.span.clone()).collect();
        (items, spans.cursor.clone())
    }

    #[test]
    fn a_result_read_before_is_passed_over_with_its_places_kept() {
        let first = page(&answer(1, TOOLS), "tools/list").unwrap();
        let again = page(
            &format!("{{\"result\":\n{TOOLS}, \"id\": 2}}"),
            "tools/list",
        )
        .unwrap();
        assert_eq!(again.get(), TOOLS);
        assert!(
            std::ptr::eq(first.spans().unwrap(), again.spans().unwrap()),
            "the places kept are taken"
        );
        let (items, cursor) = places(&again);
        assert_eq!(items.len(), 2);
        assert_eq!(&TOOLS[items[1].clone()], r#"{"x":1,"name":"b"}"#);
        assert_eq!(&TOOLS[cursor.unwrap()], r#""2""#);
    }

    #[test]
    fn a_result_that_only_begins_as_one_kept_is_walked() {
        page(&answer(1, TOOLS), "tools/list").unwrap();
        let longer = TOOLS.replace(r#""2"}"#, r#""2","_meta":{"k":[1]}}"#);
        let json = page(&answer(2, &longer), "tools/list").unwrap();
        assert_eq!(json.get(), longer);
        let (items, cursor) = places(&json);
        assert_eq!(items.len(), 2);
        assert_eq!(&longer[cursor.unwrap()], r#""2""#);
        // The same text read as another list's result is split for that list.
        let prompts = page(&answer(3, TOOLS), "prompts/list").unwrap();
        assert_eq!(
            prompts.spans().unwrap().shape,
            shape("prompts/list").unwrap()
        );
        assert!(prompts.spans().unwrap().items.is_empty());
    }

    #[test]
    fn what_follows_a_kept_result_is_still_checked() {
        page(&answer(1, TOOLS), "tools/list").unwrap();
        for broken in [
            format!(r#"{{"jsonrpc":"2.0","id":2,"result":{TOOLS},}}"#),
            format!(r#"{{"jsonrpc":"2.0","id":2,"result":{TOOLS}x}}"#),
            format!(r#"{{"jsonrpc":"2.0","id":2,"result":{TOOLS}"#),
            format!(r#"{{"jsonrpc":"2.0","id":2,"result":{TOOLS}}}]"#),
        ] {
            assert!(
                parse_answer(&broken, shape("tools/list")).is_err(),
                "{broken}"
            );
        }
        // Twice a result is left to serde_json, which refuses it.
        let twice = format!(r#"{{"jsonrpc":"2.0","id":2,"result":{TOOLS},"result":{TOOLS}}}"#);
        assert!(parse_answer(&twice, shape("tools/list")).is_err());
    }

    /// What a response reads as: its id and its payload's kind and text, or another message.
    fn reading(answer: Result<Incoming, serde_json::Error>) -> Option<(Option<u64>, bool, String)> {
        match answer.ok()? {
            Incoming::Response { id, payload } => {
                let is_result = matches!(payload, Payload::Result(_));
                Some((id, is_result, payload.json().get().to_string()))
            }
            Incoming::Other(_) => None,
        }
    }

    #[test]
    fn any_answer_reads_as_serde_reads_it() {
        use crate::base::json_text::testing::random_json;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut walked = 0;
        for round in 0..20_000 {
            let mut payload = String::new();
            random_json(&mut rng, 3, &mut payload);
            let mut text = match round % 5 {
                0 => format!(r#"{{"result":{payload},"id":{round},"jsonrpc":"2.0"}}"#),
                1 => format!(r#"{{"jsonrpc":"2.0","id":"{round}","error":{payload}}}"#),
                2 => format!(r#"{{"jsonrpc":"2.0","id":1,"result":{payload},"id":2}}"#),
                3 => format!(r#"{{"jsonrpc":"2.0","method":"x","result":{payload}}}"#),
                _ => format!("{{ \"id\" : {round} , \"result\" :\n{payload} }}"),
            };
            // Now and then broken, by a byte cut out.
            if rng.random_range(0..3) == 0 {
                let cut = rng.random_range(0..text.len());
                if text.is_char_boundary(cut) && text.is_char_boundary(cut + 1) {
                    text.remove(cut);
                }
            }
            let serde = reading(jsonrpc::parse_incoming(&text));
            assert_eq!(reading(parse_answer(&text, None)), serde, "{text}");
            walked += usize::from(read(&text, None).is_some());
        }
        assert!(walked > 5_000, "{walked} answers read by the walk");
    }

    #[test]
    fn a_worker_keeps_few_results_and_no_large_one() {
        let mut splits = Splits::new();
        let spans = || {
            Arc::new(Spans {
                shape: shape("tools/list").unwrap(),
                items: Vec::new(),
                cursor: None,
            })
        };
        for i in 0..SPLITS_KEPT + 4 {
            splits.keep(&format!(r#"{{"tools":[],"n":{i}}}"#), spans());
        }
        assert_eq!(splits.kept.len(), SPLITS_KEPT);
        assert!(
            splits.kept[0]
                .0
                .contains(&format!(":{}}}", SPLITS_KEPT + 3))
        );
        let kept_bytes: usize = splits.kept.iter().map(|(text, _)| text.len()).sum();
        assert_eq!(splits.bytes, kept_bytes);
        let large = format!(r#"{{"tools":[],"_":"{}"}}"#, "x".repeat(SPLITS_MAX_BYTES));
        splits.keep(&large, spans());
        assert_eq!(
            splits.bytes, kept_bytes,
            "a result over the limit is not kept"
        );
        let half = format!(
            r#"{{"tools":[],"_":"{}"}}"#,
            "x".repeat(SPLITS_MAX_BYTES / 2)
        );
        splits.keep(&half, spans());
        splits.keep(&half, spans());
        assert!(splits.bytes <= SPLITS_MAX_BYTES);
        assert_eq!(
            splits.kept.len(),
            1,
            "older results make room for a new one"
        );
    }
}
