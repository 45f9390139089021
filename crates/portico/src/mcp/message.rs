//! A client's message, and the request it becomes on its way to a target.
//!
//! Most requests name one item (`tools/call`, `prompts/get`, `resources/read`, ...) and need of the
//! gateway only a fresh id and the target's own name for the item. Those stay the client's text
//! ([`Named`]): validated once, the few fields a decision reads located, and written to the target as
//! the client sent them with only the changed values replaced. Fields the gateway does not know, key
//! order and number formats arrive as sent, and no JSON tree is built for the arguments. A client's
//! `initialize` is read the same way ([`Initialize`]): its `params` are what the session keeps and
//! each target is initialized with. Every other message is parsed into a `Value`, and so is a request
//! the reading is not sure of: a key written with escapes, or a field the gateway decides on given
//! twice (the gateway and the target could read different values of it). A request the gateway sends
//! to every target alike (a list's first page) is written once for all of them ([`Shared`]).

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::base::json_text::{push_json_string, scan};
use crate::mcp::jsonrpc::{self, Kind};
use crate::mcp::params::{self, Invalid};

/// A message from the client: a named request or an `initialize` kept as text, or anything else
/// parsed.
#[derive(Debug)]
pub enum Message {
    /// Boxed: the message is moved along with the futures that handle it.
    Named(Box<Named>),
    Initialize(Box<Initialize>),
    Shared(Box<Shared>),
    Parsed(Value),
}

impl From<Value> for Message {
    fn from(message: Value) -> Self {
        Message::Parsed(message)
    }
}

impl From<&Arc<Written>> for Message {
    fn from(request: &Arc<Written>) -> Self {
        Message::Shared(Box::new(Shared {
            request: request.clone(),
            id_taken: false,
            sent_id: None,
        }))
    }
}

/// `null`: the id of a message whose id was taken.
static NO_ID: Value = Value::Null;

impl Message {
    /// Reads a message the client sent (its nesting depth already checked).
    pub fn read(text: Bytes) -> Result<Self, serde_json::Error> {
        let text = match String::from_utf8(Vec::from(text)) {
            Ok(text) => text,
            // serde says where.
            Err(not_utf8) => {
                return serde_json::from_slice(not_utf8.as_bytes()).map(Message::Parsed);
            }
        };
        let read = match serde_json::from_str::<Envelope<'_>>(&text) {
            Ok(envelope) => Read::of(&text, &envelope),
            Err(_) => None,
        };
        match read {
            Some(Read::Named(mut named)) => {
                named.text = text;
                Ok(Message::Named(named))
            }
            Some(Read::Initialize(mut init)) => {
                init.text = text;
                Ok(Message::Initialize(init))
            }
            None => serde_json::from_str(&text).map(Message::Parsed),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Message::Named(_) | Message::Initialize(_) => Kind::Request,
            Message::Shared(shared) => jsonrpc::kind(&shared.request.tree),
            Message::Parsed(message) => jsonrpc::kind(message),
        }
    }

    /// Whether the client sent a JSON-RPC batch (an array).
    pub fn is_batch(&self) -> bool {
        matches!(self, Message::Parsed(Value::Array(_)))
    }

    /// The client's id (`null` when there is none, or after [`Self::take_id`]).
    pub fn id(&self) -> &Value {
        match self {
            Message::Named(named) => &named.id,
            Message::Initialize(init) => &init.id,
            Message::Shared(shared) if shared.id_taken => &NO_ID,
            Message::Shared(shared) => &shared.request.tree["id"],
            Message::Parsed(message) => &message["id"],
        }
    }

    pub fn method(&self) -> &str {
        match self {
            Message::Named(named) => named.method,
            Message::Initialize(_) => "initialize",
            Message::Shared(shared) => jsonrpc::method(&shared.request.tree),
            Message::Parsed(message) => jsonrpc::method(message),
        }
    }

    /// `params._meta`, if the request has one (an `initialize` read as text has none).
    pub fn meta(&self) -> Option<&Value> {
        match self {
            Message::Named(named) => named.meta.as_ref(),
            Message::Initialize(_) => None,
            message => message.parsed_ref()?.get("params")?.get("_meta"),
        }
    }

    /// The string in `params.<field>`: the item a named request is for.
    pub fn item(&self, field: &str) -> Option<&str> {
        match self {
            Message::Named(named) => (named.field == field).then_some(named.name.as_str()),
            // An `initialize` names no item.
            Message::Initialize(_) => None,
            message => message.parsed_ref()?.get("params")?.get(field)?.as_str(),
        }
    }

    /// The tree of a parsed message (`None` for one kept as text); a shared request's tree holds the
    /// client's id (read [`Self::id`] for the id).
    fn parsed_ref(&self) -> Option<&Value> {
        match self {
            Message::Parsed(message) => Some(message),
            Message::Shared(shared) => Some(&shared.request.tree),
            _ => None,
        }
    }

    /// The message as a tree from now on: an `initialize` read as text is parsed for a change, a
    /// shared request copied.
    fn parsed_mut(&mut self) -> Option<&mut Value> {
        match self {
            Message::Initialize(init) => *self = Message::Parsed(init.to_value()),
            Message::Shared(shared) => *self = Message::Parsed(shared.to_value()),
            _ => {}
        }
        match self {
            Message::Parsed(message) => Some(message),
            _ => None,
        }
    }

    /// Replaces the item's name in `params.<field>` (an object: [`crate::mcp::params::check`]).
    pub fn rename(&mut self, field: &str, name: &str) {
        match self {
            Message::Named(named) if named.field == field => named.renamed = Some(name.into()),
            Message::Named(_) => {}
            message => {
                if let Some(params) = message.parsed_mut().and_then(jsonrpc::params_mut) {
                    params.insert(field.to_string(), Value::String(name.to_string()));
                }
            }
        }
    }

    /// `params.arguments`, parsed for a decision (authorization, a guard); what is decided on is
    /// what the target gets, so a named request's arguments are written from this value from now on.
    pub fn arguments_mut(&mut self) -> Option<&mut Value> {
        match self {
            Message::Named(named) => named.arguments_mut(),
            message => jsonrpc::params_mut(message.parsed_mut()?)?.get_mut("arguments"),
        }
    }

    /// `params.arguments` as a tree: a named request's only once [`Self::arguments_mut`] parsed them.
    pub fn arguments(&self) -> Option<&Value> {
        match self {
            Message::Named(named) => named.arguments.as_ref()?.1.as_ref(),
            message => message.parsed_ref()?.get("params")?.get("arguments"),
        }
    }

    /// Takes the client's id out: the request goes on under the gateway's own.
    pub fn take_id(&mut self) -> Value {
        match self {
            Message::Named(named) => std::mem::take(&mut named.id),
            Message::Shared(shared) if shared.id_taken => Value::Null,
            Message::Shared(shared) => {
                shared.id_taken = true;
                shared.request.tree["id"].clone()
            }
            message => message
                .parsed_mut()
                .and_then(|m| m.get_mut("id"))
                .map(Value::take)
                .unwrap_or_default(),
        }
    }

    /// Gives the request the id it is sent to a target with.
    pub fn set_id(&mut self, id: u64) {
        match self {
            Message::Named(named) => named.sent_id = Some(id),
            Message::Shared(shared) => shared.sent_id = Some(id),
            message => {
                if let Some(message) = message.parsed_mut() {
                    jsonrpc::set_id(message, json!(id));
                }
            }
        }
    }

    /// The id set by [`Self::set_id`] (or a numeric id the message came with).
    pub fn sent_id(&self) -> Option<u64> {
        match self {
            Message::Named(named) => named.sent_id.or_else(|| named.id.as_u64()),
            Message::Initialize(init) => init.id.as_u64(),
            Message::Shared(shared) => shared.sent_id.or_else(|| {
                let id = &shared.request.tree["id"];
                id.as_u64().filter(|_| !shared.id_taken)
            }),
            Message::Parsed(message) => message["id"].as_u64(),
        }
    }

    /// Sets `params._meta.<key>`, adding `_meta` if there is none.
    pub fn insert_meta(&mut self, key: &str, value: Value) {
        let meta = match self {
            Message::Named(named) => {
                named.meta_edited = true;
                named.meta.get_or_insert_with(|| Value::Object(Map::new()))
            }
            message => {
                let Some(params) = message.parsed_mut().and_then(jsonrpc::params_mut) else {
                    return;
                };
                params
                    .entry("_meta")
                    .or_insert_with(|| Value::Object(Map::new()))
            }
        };
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(key.to_string(), value);
        }
    }

    /// The message as a tree, with every change made so far.
    pub fn into_value(self) -> Value {
        match self {
            Message::Named(named) => named.into_value(),
            Message::Initialize(init) => init.to_value(),
            Message::Shared(shared) => shared.to_value(),
            Message::Parsed(message) => message,
        }
    }

    /// `params.protocolVersion` of an `initialize`, if it names one as a string.
    pub fn protocol_version(&self) -> Option<&str> {
        match self {
            Message::Initialize(init) => init.protocol_version.as_deref(),
            message => message.parsed_ref()?["params"]["protocolVersion"].as_str(),
        }
    }

    /// The client's `initialize` as the session starts from it; `Err` is the `-32602` message when
    /// its `params` are not the shape [`params::check`] asks for.
    pub fn initialize(&self) -> Result<std::borrow::Cow<'_, Initialize>, Invalid> {
        match self {
            Message::Initialize(init) => Ok(std::borrow::Cow::Borrowed(init)),
            message => Initialize::from_value(message.parsed_ref().unwrap_or(&Value::Null))
                .map(std::borrow::Cow::Owned),
        }
    }

    /// The message as it goes to a target.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Named(named) => named.write().into_bytes(),
            Message::Initialize(init) => init.text.clone().into_bytes(),
            Message::Shared(shared) => shared.write().into_bytes(),
            // Serializing a `Value` cannot fail: its keys are strings.
            Message::Parsed(message) => serde_json::to_vec(message).unwrap_or_default(),
        }
    }
}

/// A request written once for every target it goes to, as each gets it but for the id.
#[derive(Debug)]
pub struct Written {
    tree: Value,
    text: String,
    id_span: Range<usize>,
}

impl Written {
    /// `request` written once; `None` when its id is missing or `null` (sent as a tree instead).
    pub fn new(request: Value) -> Option<Arc<Self>> {
        // Serializing a `Value` cannot fail: its keys are strings.
        let text = serde_json::to_string(&request).ok()?;
        let envelope: Envelope<'_> = serde_json::from_str(&text).ok()?;
        let id_span = span(&text, envelope.id?);
        Some(Arc::new(Written {
            tree: request,
            text,
            id_span,
        }))
    }
}

/// One target's copy of a [`Written`] request: the id it goes with.
#[derive(Debug)]
pub struct Shared {
    request: Arc<Written>,
    /// Whether [`Message::take_id`] took the client's id (which then reads `null`).
    id_taken: bool,
    sent_id: Option<u64>,
}

impl Shared {
    fn id(&self) -> Value {
        match self.sent_id {
            Some(id) => json!(id),
            None if self.id_taken => Value::Null,
            None => self.request.tree["id"].clone(),
        }
    }

    fn to_value(&self) -> Value {
        let mut tree = self.request.tree.clone();
        jsonrpc::set_id(&mut tree, self.id());
        tree
    }

    fn write(&self) -> String {
        let Written { text, id_span, .. } = &*self.request;
        let mut out = String::with_capacity(text.len() + 8);
        out.push_str(&text[..id_span.start]);
        match self.sent_id {
            Some(id) => {
                let _ = write!(out, "{id}");
            }
            None if self.id_taken => out.push_str("null"),
            None => out.push_str(&text[id_span.clone()]),
        }
        out.push_str(&text[id_span.end..]);
        out
    }
}

/// The methods whose request names one item, and the `params` field that names it.
const NAMED: [(&str, &str); 5] = [
    ("tools/call", "name"),
    ("prompts/get", "name"),
    ("resources/read", "uri"),
    ("resources/subscribe", "uri"),
    ("resources/unsubscribe", "uri"),
];

/// A request for one named item, kept as the client's text with the gateway's changes beside it.
#[derive(Debug)]
pub struct Named {
    /// The client's message: valid JSON.
    text: String,
    id: Value,
    id_span: Range<usize>,
    sent_id: Option<u64>,
    method: &'static str,
    /// `name` or `uri`.
    field: &'static str,
    name: String,
    name_span: Range<usize>,
    renamed: Option<String>,
    /// `params.arguments` (tools and prompts): its place, and its value once parsed for a decision.
    arguments: Option<(Range<usize>, Option<Value>)>,
    /// `params._meta`: its place (if the client sent one) and its value.
    meta_span: Option<Range<usize>>,
    meta: Option<Value>,
    meta_edited: bool,
    /// Just inside the `{` of `params`, where a `_meta` the client did not send is written (before
    /// the item's name, so never the last field).
    params_open: usize,
}

/// A request read without a tree (its text is moved in by [`Message::read`]), boxed as the
/// message keeps it.
enum Read {
    Named(Box<Named>),
    Initialize(Box<Initialize>),
}

impl Read {
    /// What the request `json` (whose top level is `envelope`) holds and where; `None` when it is
    /// another message, or unclear.
    fn of(json: &str, envelope: &Envelope<'_>) -> Option<Self> {
        let answer = envelope.result.is_some() || envelope.error.is_some();
        if answer || envelope.jsonrpc?.get() != "\"2.0\"" {
            return None;
        }
        let id_raw = envelope.id?;
        let id: Value = match id_raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => serde_json::from_str(id_raw.get()).ok()?,
            _ => return None,
        };
        let method = envelope.method?.get();
        let method = method.strip_prefix('"')?.strip_suffix('"')?;
        let params = span(json, envelope.params?);
        if method == "initialize" {
            return Initialize::locate(json, id, params)
                .map(|init| Read::Initialize(Box::new(init)));
        }
        let &(method, field) = NAMED.iter().find(|(named, _)| method == *named)?;
        let id_span = span(json, id_raw);
        Named::locate(json, (id, id_span), (method, field), params)
            .map(|named| Read::Named(Box::new(named)))
    }
}

/// The place of `raw`, a slice of `json`, in it.
fn span(json: &str, raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - json.as_ptr() as usize;
    start..start + raw.get().len()
}

/// A client's `initialize` read without a tree: what the session starts from.
#[derive(Debug, Clone)]
pub struct Initialize {
    /// The client's message (empty when made from a tree, [`Initialize::from_value`]).
    text: String,
    pub id: Value,
    /// As sent: the session keeps them, and each target is initialized with them.
    pub params: Box<RawValue>,
    /// `params.protocolVersion`, if the client named one.
    pub protocol_version: Option<String>,
}

impl Initialize {
    /// The `initialize` in `json` whose `params` are at `params`: read when they are an object whose
    /// `protocolVersion` is a string (or absent, or null) and which has no `_meta` (a request with
    /// one may belong to the 2026-07-28 revision, which the tree decides), each given once.
    fn locate(json: &str, id: Value, params: Range<usize>) -> Option<Self> {
        let text = json.as_bytes();
        let mut object = scan::Object::at(text, params.start)?;
        let mut version = None;
        while let Some(key) = object.key() {
            let value = object.skip_value();
            let slot = match key? {
                b"_meta" => return None,
                b"protocolVersion" => &mut version,
                _ => continue,
            };
            // Given twice: which one would a target read?
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let protocol_version = match version {
            Some(span) => match text.get(span.start) {
                Some(b'"') => Some(serde_json::from_str(&json[span]).ok()?),
                Some(b'n') => None,
                _ => return None,
            },
            None => None,
        };
        Some(Self {
            text: String::new(),
            id,
            params: RawValue::from_string(json[params].to_string()).ok()?,
            protocol_version,
        })
    }

    /// From a request parsed into a tree; `Err` is the `-32602` message.
    pub fn from_value(message: &Value) -> Result<Self, Invalid> {
        let params = message.get("params");
        params::check("initialize", params)?;
        let params = params.unwrap_or(&Value::Null);
        Ok(Self {
            text: String::new(),
            id: message["id"].clone(),
            params: serde_json::value::to_raw_value(params).map_err(|e| e.to_string())?,
            protocol_version: params["protocolVersion"].as_str().map(str::to_string),
        })
    }

    /// The request as a tree.
    fn to_value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_default()
    }
}

impl Named {
    /// What a named request's text holds and where (the text itself is moved in by
    /// [`Message::read`]).
    fn locate(
        json: &str,
        (id, id_span): (Value, Range<usize>),
        (method, field): (&'static str, &'static str),
        params: Range<usize>,
    ) -> Option<Self> {
        let text = json.as_bytes();
        let mut object = scan::Object::at(text, params.start)?;
        let takes_arguments = field == "name";
        let (mut name, mut arguments, mut meta) = (None, None, None);
        while let Some(key) = object.key() {
            let key = key?;
            let value = object.skip_value();
            let slot = match key {
                _ if key == field.as_bytes() => &mut name,
                b"arguments" if takes_arguments => &mut arguments,
                b"_meta" => &mut meta,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let name_span = name?;
        let name: String = match text.get(name_span.start) {
            Some(b'"') => serde_json::from_str(&json[name_span.clone()]).ok()?,
            _ => return None,
        };
        let arguments = match arguments {
            Some(span) if !matches!(text.get(span.start), Some(b'{' | b'n')) => return None,
            arguments => arguments.map(|span| (span, None)),
        };
        let meta_value = match &meta {
            Some(span) if text.get(span.start) == Some(&b'{') => {
                Some(serde_json::from_str(&json[span.clone()]).ok()?)
            }
            Some(_) => return None,
            None => None,
        };
        Some(Self {
            text: String::new(),
            id,
            id_span,
            sent_id: None,
            method,
            field,
            name,
            name_span,
            renamed: None,
            arguments,
            meta_span: meta,
            meta: meta_value,
            meta_edited: false,
            params_open: params.start + 1,
        })
    }

    fn arguments_mut(&mut self) -> Option<&mut Value> {
        let (span, parsed) = self.arguments.as_mut()?;
        if parsed.is_none() {
            // Validated in `read`.
            *parsed = Some(serde_json::from_str(&self.text[span.clone()]).unwrap_or_default());
        }
        parsed.as_mut()
    }

    /// The client's text with the gateway's changes, each written over the place of what it replaces.
    fn write(&self) -> String {
        let json = &self.text;
        let mut edits: Vec<(Range<usize>, Edit<'_>)> = Vec::with_capacity(4);
        let id = match self.sent_id {
            Some(id) => Edit::Id(id),
            None => Edit::Value(&self.id),
        };
        edits.push((self.id_span.clone(), id));
        if let Some(name) = &self.renamed {
            edits.push((self.name_span.clone(), Edit::Name(name)));
        }
        if let Some((span, Some(arguments))) = &self.arguments {
            edits.push((span.clone(), Edit::Value(arguments)));
        }
        if let (true, Some(meta)) = (self.meta_edited, &self.meta) {
            match &self.meta_span {
                Some(span) => edits.push((span.clone(), Edit::Value(meta))),
                None => {
                    let at = self.params_open;
                    edits.push((at..at, Edit::NewMeta(meta)));
                }
            }
        }
        edits.sort_unstable_by_key(|(span, _)| span.start);
        let mut out = String::with_capacity(json.len() + 64);
        let mut at = 0;
        for (span, edit) in edits {
            out.push_str(&json[at..span.start]);
            edit.write(&mut out);
            at = span.end;
        }
        out.push_str(&json[at..]);
        out
    }

    fn into_value(self) -> Value {
        let mut message: Value = serde_json::from_str(&self.text).unwrap_or_default();
        let id = self.sent_id.map_or(self.id, |id| json!(id));
        jsonrpc::set_id(&mut message, id);
        let Some(params) = jsonrpc::params_mut(&mut message) else {
            return message;
        };
        if let Some(name) = self.renamed {
            params.insert(self.field.to_string(), Value::String(name));
        }
        if let Some((_, Some(arguments))) = self.arguments {
            params.insert("arguments".to_string(), arguments);
        }
        if let (true, Some(meta)) = (self.meta_edited, self.meta) {
            params.insert("_meta".to_string(), meta);
        }
        message
    }
}

/// One change to a named request's text.
enum Edit<'a> {
    Id(u64),
    Name(&'a str),
    Value(&'a Value),
    /// `_meta` where the client sent none, before the other fields.
    NewMeta(&'a Value),
}

impl Edit<'_> {
    fn write(&self, out: &mut String) {
        // Writing to a `String` and serializing a `Value` cannot fail.
        let value = |value: &Value| serde_json::to_string(value).unwrap_or_default();
        match self {
            Edit::Id(id) => {
                let _ = write!(out, "{id}");
            }
            Edit::Name(name) => push_json_string(out, name),
            Edit::Value(v) => out.push_str(&value(v)),
            Edit::NewMeta(meta) => {
                out.push_str("\"_meta\":");
                out.push_str(&value(meta));
                out.push(',');
            }
        }
    }
}

/// The top level of a message: the fields a request is told apart by, left as text. A field given
/// twice fails the read, and the message takes the `Value` path.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    /// Only a response has these.
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Message {
        Message::read(Bytes::copy_from_slice(text.as_bytes())).expect("valid JSON")
    }

    /// What the gateway does to a call on its way: a new id, the target's name, maybe a trace context.
    fn forward(message: &mut Message, traced: bool) {
        message.take_id();
        message.set_id(42);
        message.rename("name", "own \"name\" é");
        if traced {
            message.insert_meta("traceparent", json!("00-abc-def-01"));
        }
    }

    const CALLS: [&str; 6] = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t_echo","arguments":{"message":"hello"}}}"#,
        r#" { "method" : "tools/call" , "params" : { "arguments" : { "a" : [1, 2.50, {"b": null}] } , "name" : "t_\u00e9\"x" } , "id" : "c-7" , "jsonrpc" : "2.0" , "x-vendor": {"kept": true} } "#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":{"progressToken":"p"},"name":"t_echo"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t_echo","arguments":null,"extra":1e3}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"t_p","arguments":{"k":"v"}}}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"t_echo","_meta":{"traceparent":"old","other":[1]}}}"#,
    ];

    #[test]
    fn named_requests_are_kept_as_text() {
        for call in CALLS {
            assert!(matches!(read(call), Message::Named(_)), "{call}");
        }
    }

    #[test]
    fn a_forwarded_named_request_is_what_the_parsed_one_would_be() {
        for call in CALLS {
            for traced in [false, true] {
                let mut named = read(call);
                let mut parsed = Message::Parsed(serde_json::from_str(call).unwrap());
                forward(&mut named, traced);
                forward(&mut parsed, traced);
                let written: Value = serde_json::from_slice(&named.to_bytes()).unwrap();
                assert_eq!(written, parsed.into_value(), "{call} traced: {traced}");
                assert_eq!(named.sent_id(), Some(42));
                assert_eq!(written, named.into_value(), "{call}");
            }
        }
    }

    #[test]
    fn only_the_changed_values_are_rewritten() {
        let mut message = read(CALLS[1]);
        message.set_id(9);
        message.rename("name", "echo");
        let written = String::from_utf8(message.to_bytes()).unwrap();
        assert_eq!(
            written,
            CALLS[1]
                .replace(r#""t_\u00e9\"x""#, r#""echo""#)
                .replace(r#""c-7""#, "9")
        );
    }

    #[test]
    fn a_decision_on_the_arguments_is_what_the_target_gets() {
        let mut message = read(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"secret":"x","n":1}}}"#,
        );
        assert_eq!(
            message.arguments(),
            None,
            "not parsed until a policy reads them"
        );
        message.arguments_mut().unwrap()["secret"] = json!("***");
        let written: Value = serde_json::from_slice(&message.to_bytes()).unwrap();
        assert_eq!(
            written["params"]["arguments"],
            json!({"secret": "***", "n": 1})
        );
    }

    #[test]
    fn anything_unclear_is_parsed() {
        for text in [
            // A field the gateway decides on, twice: which one would the target read?
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list","params":{"name":"a"}}"#,
            // A key with escapes may spell a field.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na\u006de":"a"}}"#,
            // Shapes `params::check` refuses, with its message.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":null}}"#,
            // Not a request of the kind, or not a request.
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"a"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"result":{}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}]"#,
        ] {
            assert!(matches!(read(text), Message::Parsed(_)), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_json_is_refused_as_before() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":tru}}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\\q\"}}",
        ] {
            let error = Message::read(Bytes::copy_from_slice(text.as_bytes())).unwrap_err();
            let by_serde = serde_json::from_str::<Value>(text).unwrap_err();
            assert_eq!(error.to_string(), by_serde.to_string());
        }
        let not_utf8 = Bytes::from_static(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}");
        assert!(Message::read(not_utf8).is_err());
    }

    /// What a session starts from: the `initialize` read as text, or from the tree of the same text.
    fn started_from(message: &Message) -> (Value, Value, Option<String>) {
        let init = message.initialize().expect("valid params");
        let params = serde_json::from_str(init.params.get()).expect("params are JSON");
        (init.id.clone(), params, init.protocol_version.clone())
    }

    #[test]
    fn an_initialize_is_read_as_text_and_starts_the_session_the_tree_would() {
        let text = r#"{"jsonrpc":"2.0","id":"a-1","method":"initialize","params":{"protocolVersion":"2025-06-18", "capabilities":{"roots":{}},"clientInfo":{"name":"c","version":"1"},"vendor":[1,2.50]},"extra":true}"#;
        let message = read(text);
        let Message::Initialize(init) = &message else {
            panic!("read as a tree: {message:?}");
        };
        assert!(
            init.params
                .get()
                .contains(r#""capabilities":{"roots":{}},"clientInfo""#)
                && init.params.get().contains("2.50"),
            "the params as sent: {}",
            init.params.get()
        );
        assert_eq!(
            (message.kind(), message.method()),
            (Kind::Request, "initialize")
        );
        let tree: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            started_from(&message),
            started_from(&Message::Parsed(tree.clone()))
        );
        assert_eq!(message.id(), &json!("a-1"));
        assert_eq!(
            message.into_value(),
            tree,
            "the whole message, unknown fields too"
        );
    }

    #[test]
    fn an_unclear_initialize_is_parsed_and_refused_as_before() {
        for (text, refused) in [
            // `_meta` may carry the 2026-07-28 revision's context: the tree decides.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":{}}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"a","protocolVersion":"b"}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocol\u0056ersion":"a"}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":7}}"#,
                Some("initialize: `protocolVersion` must be a string, not a number"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":[]}"#,
                Some("initialize: params must be an object, not an array"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#,
                Some("initialize: params are required"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":3}}"#,
                Some("initialize: `_meta` must be an object, not a number"),
            ),
        ] {
            let message = read(text);
            assert!(matches!(message, Message::Parsed(_)), "{text}");
            assert_eq!(message.initialize().err().as_deref(), refused, "{text}");
        }
        let null_version = read(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":null}}"#,
        );
        assert!(matches!(null_version, Message::Initialize(_)));
        assert_eq!(started_from(&null_version).2, None);
    }

    #[test]
    fn each_copy_of_a_shared_request_is_what_its_own_tree_would_be() {
        let lists = [
            r#"{"jsonrpc":"2.0","id":"l-1","method":"tools/list","params":{}}"#,
            r#"{"method":"tools/list","x-vendor":[1,{"a":null}],"id":7,"params":{"_meta":{"progressToken":"p"}},"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":0,"method":"prompts/list"}"#,
        ];
        // As `forward` does to each target's copy: the client's id out, the target's in, a trace context.
        let forward = |message: &mut Message, sent: u64, traced: bool| {
            let id = message.take_id();
            message.set_id(sent);
            if traced {
                message.insert_meta("traceparent", json!("00-abc-def-01"));
            }
            id
        };
        for list in lists {
            let tree: Value = serde_json::from_str(list).unwrap();
            let written = Written::new(tree.clone()).expect("a request");
            for traced in [false, true] {
                let (mut first, mut second) = (Message::from(&written), Message::from(&written));
                assert_eq!(second.id(), &tree["id"]);
                for (sent, copy) in [(41, &mut first), (42, &mut second)] {
                    let mut own = Message::Parsed(tree.clone());
                    assert_eq!(forward(copy, sent, traced), tree["id"], "{list}");
                    forward(&mut own, sent, traced);
                    assert_eq!(copy.method(), own.method());
                    assert_eq!(copy.meta(), own.meta());
                    assert_eq!(copy.sent_id(), Some(sent));
                    let sent: Value = serde_json::from_slice(&copy.to_bytes()).unwrap();
                    let own = own.into_value();
                    assert_eq!(sent, own, "{list} traced: {traced}");
                }
                assert_eq!(second.into_value()["id"], json!(42));
            }
        }
        // Sent each its own tree instead.
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(Written::new(notification).is_none());
        let null_id = json!({"jsonrpc": "2.0", "id": null, "method": "tools/list"});
        assert!(Written::new(null_id).is_none());
    }

    #[test]
    fn a_shared_request_keeps_the_order_it_was_written_in() {
        let list = r#"{"method":"tools/list","id":3,"params":{"z":1,"a":2},"jsonrpc":"2.0"}"#;
        let written = Written::new(serde_json::from_str(list).unwrap()).unwrap();
        let mut copy = Message::from(&written);
        copy.take_id();
        copy.set_id(9);
        assert_eq!(
            String::from_utf8(copy.to_bytes()).unwrap(),
            r#"{"method":"tools/list","id":9,"params":{"z":1,"a":2},"jsonrpc":"2.0"}"#
        );
    }
}
