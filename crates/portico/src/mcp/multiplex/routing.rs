//! Requests that name what they want (`tools/call`, `prompts/get`, `resources/*`, `completion/complete`)
//! routed to the target that serves it, and the few sent to every target.

use super::*;

impl Mux {
    /// Resolves a client-facing name to `(target, the target's own name)`.
    pub(super) async fn resolve(
        self: &Arc<Self>,
        kind: ListKind,
        name: &str,
    ) -> Option<(usize, String)> {
        if self.backend.load().prefixed {
            let (target, rest) = naming::split(name, kind.separator())?;
            return Some((self.target_index(target)?, rest.to_string()));
        }
        if let Some(t) = self.single_target() {
            return Some((t, name.to_string()));
        }
        // prefixMode: never, several targets: names are looked up in what the targets listed.
        let key = (kind as u8, name.to_string());
        if let Some(found) = lock(&self.bare_names).get(&key) {
            return found.map(|t| (t, name.to_string()));
        }
        self.index_bare_names(kind).await;
        let listed = lock(&self.bare_names).get(&key).copied();
        let found = match listed {
            Some(found) => found,
            // A resource no target lists may be an instance of a template one of them does.
            None if kind == ListKind::Resources => self.template_owner(name).await,
            None => None,
        };
        found.map(|t| (t, name.to_string()))
    }

    /// The one target with a resource template that `uri` is an instance of (`prefixMode: never`).
    async fn template_owner(self: &Arc<Self>, uri: &str) -> Option<usize> {
        self.index_bare_names(ListKind::ResourceTemplates).await;
        let templates = ListKind::ResourceTemplates as u8;
        let owners: std::collections::BTreeSet<usize> = lock(&self.bare_names)
            .iter()
            .filter(|((kind, template), _)| {
                *kind == templates && naming::matches_template(template, uri)
            })
            .filter_map(|(_, owner)| *owner)
            .collect();
        let mut owners = owners.into_iter();
        match (owners.next(), owners.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }

    /// Lists every page of `kind` from every target to learn who serves which bare name.
    pub(super) async fn index_bare_names(self: &Arc<Self>, kind: ListKind) {
        let (sink, _rx) = mpsc::channel(1);
        let mut cursor: Option<String> = None;
        loop {
            let mut params = json!({});
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let request = json!({"jsonrpc": "2.0", "id": "portico-index", "method": kind.method(), "params": params});
            let outcome = self.list(kind, request, &sink, None).await;
            cursor = outcome
                .response
                .result_raw()
                .and_then(|result| items::read_page(result, kind).ok())
                .and_then(|page| page.next_cursor);
            if cursor.is_none() {
                break;
            }
        }
    }

    /// `tools/call`, `prompts/get`, `resources/*`: routed by the name or URI in `params`.
    pub(super) async fn by_name(
        self: &Arc<Self>,
        kind: ListKind,
        mut request: Message,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let field = if kind == ListKind::Resources {
            "uri"
        } else {
            "name"
        };
        let name = request.item(field).unwrap_or_default().to_string();
        let Some((t, own_name)) = self.resolve(kind, &name).await else {
            return Outcome::of(unknown(request.id().clone(), kind, &name));
        };
        let reads_arguments = kind != ListKind::Resources && self.reads_arguments(t);
        if reads_arguments {
            request.arguments_mut();
        }
        let method = request.method();
        let verdict = self.authorize(t, caller, method, kind, &own_name, request.arguments());
        if let Some(denied) = self.refusal(request.id(), kind, &name, t, &own_name, &verdict) {
            return denied;
        }
        let guarded_result = matches!(method, "tools/call" | "prompts/get" | "resources/read");
        if method == "resources/subscribe"
            && let Some(upstream) = self.slot(t).upstream.load_full()
        {
            // The target sends `notifications/resources/updated` outside the request.
            upstream.listen();
        }
        // Only the name changes, nothing is added.
        request.rename(field, &own_name);
        let arguments = reads_arguments.then(|| request.arguments_mut()).flatten();
        if let Some(denied) = arguments.and_then(|arguments| self.guard_request(t, arguments)) {
            let mut refused = self.refused_by_guard(t, request.id().clone(), denied, own_name);
            refused.authz = verdict.map(|v| v.describe());
            return refused;
        }
        let mut outcome = self.forward(t, request, stream).await;
        outcome.authz = verdict.map(|v| v.describe());
        if guarded_result {
            self.guard_response(t, &mut outcome);
        }
        if self.backend.load().prefixed {
            match kind {
                ListKind::Resources => self.prefix_contents(&mut outcome.response, t),
                ListKind::Tools => self.prefix_resource_links(&mut outcome.response, t),
                _ => {}
            }
        }
        outcome.item = Some(own_name);
        outcome
    }

    /// Whether a policy of target `t` reads a call's arguments: its authorization rules, or its
    /// request guards. Only then are a named request's arguments parsed.
    fn reads_arguments(&self, t: usize) -> bool {
        let policies = &self.target(t).policies;
        policies.authorization.is_some()
            || policies
                .ai
                .as_ref()
                .is_some_and(|ai| ai.policy.request.is_some())
    }

    /// `completion/complete`: routed by the prompt name or resource URI of `params.ref`.
    pub(super) async fn complete(
        self: &Arc<Self>,
        mut request: Value,
        stream: &mpsc::Sender<String>,
        caller: Option<&Caller>,
    ) -> Outcome {
        let reference = &request["params"]["ref"];
        let (kind, field) = match reference["type"].as_str() {
            Some("ref/prompt") => (ListKind::Prompts, "name"),
            _ => (ListKind::Resources, "uri"),
        };
        let name = reference[field].as_str().unwrap_or_default().to_string();
        let Some((t, own_name)) = self.resolve(kind, &name).await else {
            return Outcome::of(unknown(request["id"].clone(), kind, &name));
        };
        let method = jsonrpc::method(&request);
        let verdict = self.authorize(t, caller, method, kind, &own_name, None);
        if let Some(denied) = self.refusal(&request["id"], kind, &name, t, &own_name, &verdict) {
            return denied;
        }
        // `params.ref` is an object (checked in `request`); only its name changes.
        let Some(params) = jsonrpc::params_mut(&mut request) else {
            return Outcome::of(unknown(request["id"].clone(), kind, &name));
        };
        if let Some(reference) = params.get_mut("ref").and_then(Value::as_object_mut) {
            reference.insert(field.to_string(), Value::String(own_name.clone()));
        }
        let denied = params
            .iter_mut()
            .filter(|(key, _)| matches!(key.as_str(), "argument" | "context"))
            .find_map(|(_, part)| self.guard_request(t, part));
        if let Some(denied) = denied {
            let mut refused = self.refused_by_guard(t, request["id"].clone(), denied, own_name);
            refused.authz = verdict.map(|v| v.describe());
            return refused;
        }
        let mut outcome = self.forward(t, request.into(), stream).await;
        outcome.authz = verdict.map(|v| v.describe());
        outcome.item = Some(own_name);
        outcome
    }

    /// `logging/setLevel`: every connected target gets it; the client gets `{}`.
    pub(super) async fn broadcast(
        self: &Arc<Self>,
        request: Value,
        stream: &mpsc::Sender<String>,
    ) -> Outcome {
        let targets: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|t| self.slot(*t).upstream.load().is_some())
            .collect();
        join_all(
            targets
                .into_iter()
                .map(|t| self.forward(t, request.clone().into(), stream)),
        )
        .await;
        Outcome::of(Reply::result(request["id"].clone(), &json!({})))
    }

    /// Prefixes the URIs of a `resources/read` result, so the client can use them again.
    pub(super) fn prefix_contents(&self, response: &mut Reply, t: usize) {
        let Some(result) = response.result_raw() else {
            return;
        };
        let Ok(mut result) = serde_json::from_str::<Value>(result.get()) else {
            return;
        };
        let Some(contents) = result.get_mut("contents").and_then(Value::as_array_mut) else {
            return;
        };
        let target = self.target(t).name.clone();
        for content in contents {
            naming::prefix_item(content, ListKind::Resources, &target);
        }
        *response = Reply::result(response.id.take(), &result);
    }

    /// Prefixes the URIs of `resource_link` items in a tool result, so the client can read them through
    /// Portico. Results without any are passed on untouched, unparsed.
    pub(super) fn prefix_resource_links(&self, response: &mut Reply, t: usize) {
        let Some(result) = response.result_raw() else {
            return;
        };
        if !result.get().contains("\"resource_link\"") {
            return;
        }
        let Ok(mut result) = serde_json::from_str::<Value>(result.get()) else {
            return;
        };
        let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) else {
            return;
        };
        let target = self.target(t).name.clone();
        for item in content
            .iter_mut()
            .filter(|item| item["type"] == "resource_link")
        {
            naming::prefix_item(item, ListKind::Resources, &target);
        }
        *response = Reply::result(response.id.take(), &result);
    }

    /// Records which target serves each bare name (`prefixMode: never`); a name served by several
    /// targets is marked ambiguous.
    pub(super) fn record_bare_names(&self, kind: ListKind, t: usize, list: &mut [items::Item<'_>]) {
        let mut names = lock(&self.bare_names);
        for item in list {
            let Some(name) = item.name(kind) else {
                continue;
            };
            let entry = names
                .entry((kind as u8, name.to_string()))
                .or_insert(Some(t));
            if *entry != Some(t) {
                *entry = None;
            }
        }
    }

    pub(super) fn is_ambiguous(&self, kind: ListKind, item: &mut items::Item<'_>) -> bool {
        let Some(name) = item.name(kind) else {
            return false;
        };
        let ambiguous = lock(&self.bare_names).get(&(kind as u8, name.to_string())) == Some(&None);
        if ambiguous {
            tracing::warn!(target: "portico::mux", name, "served by several targets under prefixMode: never; hidden");
        }
        ambiguous
    }
}

/// `-32602` for a name no target serves; an unknown resource's error carries its URI in `data`.
pub(super) fn unknown(id: Value, kind: ListKind, name: &str) -> Reply {
    let mut error = json!({"code": code::INVALID_PARAMS, "message": format!("Unknown {}: {name}", kind.noun())});
    if kind == ListKind::Resources {
        error["data"] = json!({ "uri": name });
    }
    Reply {
        id,
        payload: jsonrpc::Payload::Error(jsonrpc::Json::of(&error)),
    }
}
