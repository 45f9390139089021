//! A target that speaks only the 2026-07-28 revision: no `initialize`, no upstream session. Portico
//! asks it `server/discover` (once `initialize` is refused), then sends every request with the
//! session's context in `_meta` (protocol version, the client's capabilities and info) and the
//! revision's headers. When the target needs the client's input (`resultType: "input_required"`), each
//! question goes to the client as a request of the target's, on the call's stream, and the call is
//! sent again with the answers (`inputResponses`) and the target's `requestState`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use base64::Engine;
use serde_json::{Map, json};
use tokio::sync::oneshot;

use super::*;

use crate::mcp::revision_2026::{
    META_CAPABILITIES, META_CLIENT_INFO, META_SERVER_INFO, META_VERSION, METHOD_HEADER,
    NAME_HEADER, REVISION,
};
/// Rounds of questions one call may take before Portico gives up on it.
const MAX_ROUNDS: usize = 10;

/// The `_meta` entries every request to the target carries: the session's context.
pub struct Context {
    meta: Map<String, Value>,
}

impl Context {
    /// The context of a session whose client sent `init_params` (its `initialize` params).
    fn of(init_params: &Value) -> Self {
        let mut meta = Map::new();
        meta.insert(META_VERSION.into(), json!(REVISION));
        meta.insert(
            META_CAPABILITIES.into(),
            init_params
                .get("capabilities")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        if let Some(info) = init_params.get("clientInfo") {
            meta.insert(META_CLIENT_INFO.into(), info.clone());
        }
        Self { meta }
    }

    /// `message` with the context added to its `params._meta` (its own entries, such as a
    /// `progressToken`, kept).
    fn apply(&self, mut message: Value) -> Value {
        if !message["params"].is_object() {
            message["params"] = json!({});
        }
        let meta = &mut message["params"]["_meta"];
        if !meta.is_object() {
            *meta = json!({});
        }
        if let Some(meta) = meta.as_object_mut() {
            for (key, value) in &self.meta {
                meta.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        message
    }
}

/// The client's answers awaited, by the id each question was put to the client under.
#[derive(Default)]
pub struct Answers {
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    next: AtomicU64,
}

impl Answers {
    fn ask(&self) -> (String, oneshot::Receiver<Value>) {
        let id = format!("input-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        (id, rx)
    }

    /// Takes the client's answer (a JSON-RPC response) to a question; anything else is dropped.
    pub fn deliver(&self, message: Value) {
        let Some(id) = message["id"].as_str() else {
            return;
        };
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(waiting) = waiting {
            let _ = waiting.send(message);
        }
    }
}

/// The item a request names, which its `Mcp-Name` header repeats (`=?base64?…?=` when a header
/// cannot carry it as it is).
fn name_header(request: &Value) -> Option<HeaderValue> {
    let key = match jsonrpc::method(request) {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    let name = request["params"][key].as_str()?;
    let plain = name.bytes().all(|b| (0x20..0x7f).contains(&b)) && name.trim() == name;
    if plain {
        return HeaderValue::from_str(name).ok();
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(name);
    HeaderValue::from_str(&format!("=?base64?{encoded}?=")).ok()
}

impl HttpUpstream {
    /// Asks the target `server/discover` in the context of `init_params`; when it speaks the
    /// revision, every later request goes that way. Returns the discovery as an `initialize` result.
    pub async fn discover(&self, id: u64, init_params: &Value) -> Result<Value, UpstreamError> {
        let context = Context::of(init_params);
        let message =
            context.apply(json!({"jsonrpc": "2.0", "id": id, "method": "server/discover"}));
        let payload = self.post_in_context(&message).await?;
        let payload = self.read_response(payload, Some(id)).await?;
        let Payload::Result(raw) = payload else {
            return Err(UpstreamError::Initialize("server/discover failed".into()));
        };
        let discovered: Value = serde_json::from_str(raw.get()).unwrap_or_default();
        let speaks = discovered["supportedVersions"]
            .as_array()
            .is_some_and(|versions| versions.iter().any(|v| v == REVISION));
        if !speaks {
            return Err(UpstreamError::Initialize(format!(
                "neither initialize nor server/discover with {REVISION}"
            )));
        }
        self.set_context(context);
        let server_info = discovered["_meta"][META_SERVER_INFO].clone();
        let mut initialized = json!({
            "protocolVersion": REVISION,
            "capabilities": discovered["capabilities"],
            "serverInfo": server_info,
        });
        if let Some(instructions) = discovered.get("instructions") {
            initialized["instructions"] = instructions.clone();
        }
        Ok(initialized)
    }

    /// Speaks the revision from now on, in the context of the session's `initialize` request.
    pub(super) fn use_context(&self, init_request: &[u8]) {
        let init: Value = serde_json::from_slice(init_request).unwrap_or_default();
        self.set_context(Context::of(&init["params"]));
    }

    fn set_context(&self, context: Context) {
        self.context.store(Some(Arc::new(context)));
        write(
            &self.protocol_version,
            Some(HeaderValue::from_static(REVISION)),
        );
    }

    /// POSTs `message` (its `_meta` complete) with the revision's headers.
    async fn post_in_context(&self, message: &Value) -> Result<Response, UpstreamError> {
        let body =
            serde_json::to_vec(message).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let version = Some(HeaderValue::from_static(REVISION));
        let mut request = request(
            Method::POST,
            &self.uri,
            ACCEPT_BOTH,
            body.into(),
            &(None, version),
        );
        let headers = request.headers_mut();
        if let Ok(method) = HeaderValue::from_str(jsonrpc::method(message)) {
            headers.insert(METHOD_HEADER, method);
        }
        if let Some(name) = name_header(message) {
            headers.insert(NAME_HEADER, name);
        }
        if let Some(traceparent) = crate::telemetry::traces::current_traceparent()
            .and_then(|value| HeaderValue::try_from(value).ok())
        {
            headers.insert("traceparent", traceparent);
        }
        send(&self.client, &self.outbound, request).await
    }

    /// One request, in as many rounds as the target's questions take.
    pub(super) async fn request_in_context(
        &self,
        context: &Context,
        request: Value,
    ) -> Result<Payload, UpstreamError> {
        let id = request["id"].as_u64();
        let mut request = context.apply(request);
        for _ in 0..MAX_ROUNDS {
            let response = self.post_in_context(&request).await?;
            let payload = self.read_response(response, id).await?;
            let Payload::Result(raw) = &payload else {
                return Ok(payload);
            };
            // Most results are complete: only a result that may ask is parsed.
            if !raw.get().contains("input_required") {
                return Ok(payload);
            }
            let result: Value = serde_json::from_str(raw.get()).unwrap_or_default();
            if result["resultType"] != "input_required" {
                return Ok(payload);
            }
            let answers = self.ask_client(&result["inputRequests"], id).await?;
            if let Some(params) = jsonrpc::params_mut(&mut request) {
                params.insert("inputResponses".into(), Value::Object(answers));
                match result.get("requestState") {
                    Some(state) => params.insert("requestState".into(), state.clone()),
                    None => params.remove("requestState"),
                };
            }
        }
        Err(UpstreamError::Protocol(format!(
            "asked for input more than {MAX_ROUNDS} times in one call"
        )))
    }

    /// Puts each question to the client (on the stream of call `related`) and waits for every answer.
    async fn ask_client(
        &self,
        questions: &Value,
        related: Option<u64>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let questions = questions.as_object().cloned().unwrap_or_default();
        let mut pending = Vec::with_capacity(questions.len());
        for (key, question) in questions {
            let (id, answer) = self.answers.ask();
            let method = question["method"].clone();
            let asked =
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": question["params"]});
            self.sink.message(asked, related);
            pending.push((key, method, answer));
        }
        let mut answers = Map::new();
        for (key, method, answer) in pending {
            let answer = answer.await.map_err(|_| UpstreamError::Closed)?;
            match answer.get("result") {
                Some(result) => {
                    answers.insert(key, result.clone());
                }
                None => {
                    let why = answer["error"]["message"].as_str().unwrap_or("no answer");
                    return Err(UpstreamError::Unanswered(format!("{method}: {why}")));
                }
            }
        }
        Ok(answers)
    }
}
