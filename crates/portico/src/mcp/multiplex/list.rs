//! List requests: every target asked at once, the pages merged in config order into one reply.

use super::*;
use crate::base::json_text::push_json_string;
use crate::mcp::message::Written;

impl Mux {
    /// A list request: every target (or those the cursor names) concurrently, merged in config order.
    pub(super) async fn list(
        self: &Arc<Self>,
        kind: ListKind,
        request: Value,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let id = request["id"].clone();
        let pages: Option<cursor::Pages> = match request["params"]["cursor"].as_str() {
            None => None,
            Some(c) => match cursor::decode(c) {
                Some(pages) => Some(pages),
                None => {
                    return Outcome::of(Reply::error(id, code::INVALID_PARAMS, "invalid cursor"));
                }
            },
        };
        let live = self.live();
        let backend = self.backend.load_full();
        let asked: Vec<(usize, Option<String>)> = live
            .iter()
            .copied()
            .filter_map(|t| {
                let target = self.target(t);
                let name = &*target.name;
                match &pages {
                    None => Some((t, None)),
                    Some(pages) => pages
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, c)| (t, Some(c.clone()))),
                }
            })
            .filter(|(t, _)| self.declares(*t, kind))
            .collect();
        // A first page is asked of every target alike: the request is written once.
        let first_page = match pages {
            // A `cursor` that is not a string names no page: it is not passed on.
            None => Written::new(with_cursor(&request, None)),
            Some(_) => None,
        };
        let calls = asked.iter().map(|(t, page)| {
            let request = match (&first_page, page) {
                (Some(written), _) => Message::from(written),
                (None, page) => with_cursor(&request, page.as_deref()).into(),
            };
            self.forward(*t, request, stream)
        });
        let replies = join_all(calls).await;
        let mut pages = Vec::with_capacity(replies.len());
        for ((t, _), reply) in asked.iter().zip(&replies) {
            let target = self.target(*t);
            match reply
                .response
                .result_raw()
                .map(|result| items::read_page(result, kind))
            {
                Some(Ok(page)) => {
                    if kind == ListKind::Tools
                        && page.next_cursor.is_none()
                        && pages_of_one(&request)
                    {
                        target
                            .health
                            .tools
                            .store(page.items.len(), Ordering::Relaxed);
                    }
                    pages.push((*t, page))
                }
                failed => {
                    if backend.failure_mode == FailureMode::FailClosed {
                        let message = format!("target {} unavailable", target.name);
                        return Outcome::of(Reply::error(id, code::INTERNAL_ERROR, message));
                    }
                    let error = match failed {
                        Some(Err(e)) => format!("invalid list result: {e}"),
                        _ => reply.response.error_message().unwrap_or_default(),
                    };
                    tracing::warn!(target: "portico::mux", target = %target.name, method = kind.method(), error,
                        "target left out of the list");
                }
            }
        }
        if let Some(caller) = caller {
            for (t, page) in &mut pages {
                self.filter_items(*t, caller, kind, &mut page.items);
            }
        }
        let never = backend.prefix_mode == PrefixMode::Never && live.len() > 1;
        if never {
            for (t, page) in &mut pages {
                self.record_bare_names(kind, *t, &mut page.items);
            }
        }
        // Sized once: the items as the targets wrote them, each name's prefix, a comma between two.
        let size = pages
            .iter()
            .map(|(t, page)| {
                let prefix = self.target(*t).name.len() + 2;
                page.items
                    .iter()
                    .map(|i| i.text.len() + prefix)
                    .sum::<usize>()
            })
            .sum::<usize>();
        let mut merged = String::with_capacity(size + 64);
        merged.push('{');
        push_json_string(&mut merged, kind.result_key());
        merged.push_str(":[");
        let mut first = true;
        let mut next = cursor::Pages::new();
        for (t, page) in pages {
            let target = self.target(t).name.clone();
            if let Some(c) = page.next_cursor {
                next.push((target.to_string(), c));
            }
            for mut item in page.items {
                if never && self.is_ambiguous(kind, &mut item) {
                    continue;
                }
                if !first {
                    merged.push(',');
                }
                first = false;
                if backend.prefixed {
                    item.write_prefixed(&mut merged, kind, &target);
                } else {
                    merged.push_str(item.text);
                }
            }
        }
        merged.push(']');
        if !next.is_empty() {
            merged.push_str(",\"nextCursor\":");
            push_json_string(&mut merged, &cursor::encode(&next));
        }
        merged.push('}');
        // Valid by construction (validated items, strings written escaped): not validated again.
        let payload = Payload::Result(jsonrpc::Json::written(merged));
        Outcome::of(Reply { id, payload })
    }

    /// Whether target `t` is connected and declared the capability `kind` needs.
    pub(super) fn declares(&self, t: usize, kind: ListKind) -> bool {
        let upstream = self.slot(t).upstream.load();
        upstream
            .as_ref()
            .is_some_and(|u| u.declares(kind.capability()))
    }
}

/// `request` with `cursor` in its params set to `page`, or removed.
fn with_cursor(request: &Value, page: Option<&str>) -> Value {
    let mut request = request.clone();
    if let Some(params) = jsonrpc::params_mut(&mut request) {
        match page {
            Some(page) => params.insert("cursor".to_string(), Value::String(page.to_string())),
            None => params.remove("cursor"),
        };
    }
    request
}

/// Whether a list request asks for the first page (so one page without a next cursor is the whole list).
pub(super) fn pages_of_one(request: &Value) -> bool {
    request["params"]["cursor"].is_null()
}
