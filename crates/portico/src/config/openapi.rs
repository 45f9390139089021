//! An OpenAPI 3 document read into tools: every operation with an `operationId` becomes a tool whose
//! input schema has a `path`, `query`, `header` and `body` part, each present only when the operation
//! has such inputs. Local `$ref`s (`#/components/...`) are inlined, so clients see self-contained
//! schemas; a reference cycle is cut to `{}` (any value).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
}

impl In {
    pub fn key(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
        }
    }
}

#[derive(Debug)]
pub struct Parameter {
    pub name: String,
    pub location: In,
    pub required: bool,
}

/// What a tool call turns into.
#[derive(Debug)]
pub struct Operation {
    pub method: http::Method,
    /// The path template, e.g. `/pets/{petId}`.
    pub path: String,
    pub parameters: Vec<Parameter>,
    /// The request body the operation takes, if any.
    pub body: Option<RequestBody>,
}

/// An operation's request body: whether it is required and how it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBody {
    pub required: bool,
    pub encoding: BodyEncoding,
}

/// How the `body` argument is sent: JSON when the operation takes it, else as an HTML form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Json,
    Form,
}

/// The tools of one document.
#[derive(Debug)]
pub struct Api {
    pub title: String,
    pub version: String,
    /// The `tools/list` result, built and serialized once.
    pub tools: Box<serde_json::value::RawValue>,
    pub operations: HashMap<String, Operation>,
}

/// The service's base URL: the document's first `servers` entry, its `{variables}` replaced by their
/// defaults, placed as OpenAPI 3.0 and 3.1 say. A `host` with a path is the base URL itself; a `host`
/// without one says where the service runs, and the server URL's path (absolute or relative) is
/// appended. Without `host`, an absolute server URL is used as it is and a relative one is resolved
/// against the document's own URL (`document_url`, when the document was fetched from one).
pub fn base_url(
    document: &Value,
    host: Option<&reqwest::Url>,
    document_url: Option<&str>,
) -> Result<reqwest::Url, String> {
    let server = document["servers"]
        .as_array()
        .and_then(|servers| servers.first())
        .map(server_url)
        .transpose()?;
    if let Some(host) = host {
        let host_has_path = !matches!(host.path(), "" | "/");
        let Some(server) = server.filter(|_| !host_has_path) else {
            return Ok(host.clone());
        };
        let path = match reqwest::Url::parse(&server) {
            Ok(absolute) => absolute.path().to_string(),
            Err(_) => server,
        };
        return host.join(&path).map_err(|e| {
            format!("the document's server URL `{path}` does not join `{host}`: {e}")
        });
    }
    let Some(server) = server else {
        return Err("the document has no `servers`: set `host`".into());
    };
    if let Ok(absolute) = reqwest::Url::parse(&server) {
        return match absolute.scheme() {
            "http" | "https" => Ok(absolute),
            other => Err(format!(
                "the document's server URL `{server}` is not HTTP (`{other}:`)"
            )),
        };
    }
    let Some(document_url) = document_url.and_then(|u| reqwest::Url::parse(u).ok()) else {
        return Err(format!(
            "the document's server URL `{server}` is relative, and the document has no URL to resolve it against: set `host`"
        ));
    };
    document_url
        .join(&server)
        .map_err(|e| format!("the document's server URL `{server}` does not resolve: {e}"))
}

/// A server object's `url` with each `{variable}` replaced by its `default`.
fn server_url(server: &Value) -> Result<String, String> {
    let mut url = server["url"]
        .as_str()
        .ok_or("`servers[0]` has no `url`")?
        .to_string();
    while let Some(open) = url.find('{') {
        let close = url[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("`servers[0].url` `{url}` has an unclosed `{{`"))?;
        let name = &url[open + 1..close];
        let value = server["variables"][name]["default"]
            .as_str()
            .ok_or_else(|| {
                format!("`servers[0].url` names the variable `{name}`, which has no `default`")
            })?
            .to_string();
        url.replace_range(open..=close, &value);
    }
    Ok(url)
}

/// Reads `document`; the error names what is wrong and where (`paths./pets.get`).
pub fn read(document: &Value) -> Result<Api, String> {
    let version = document
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !version.starts_with("3.") {
        return Err(match document.get("swagger") {
            Some(_) => "this is a Swagger 2.0 document; Portico reads OpenAPI 3.x".into(),
            None => "not an OpenAPI 3.x document (no `openapi: 3.x` field)".into(),
        });
    }
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the document has no `paths`")?;
    let refs = Refs { document };
    let mut tools = Vec::new();
    let mut operations = HashMap::new();
    for (path, item) in paths {
        let item = refs.resolve(item, 0);
        let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let Some(id) = operation.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            let at = format!("paths.{path}.{method}");
            if operations.contains_key(id) {
                return Err(format!("{at}: operationId `{id}` is used twice"));
            }
            let (tool, op) = tool(&refs, path, method, id, operation, &shared)
                .map_err(|e| format!("{at}: {e}"))?;
            tools.push(tool);
            operations.insert(id.to_string(), op);
        }
    }
    if operations.is_empty() {
        return Err(
            "no operation has an `operationId`: there is nothing to offer as a tool".into(),
        );
    }
    let info = document.get("info");
    let text = |field: &str| {
        info.and_then(|i| i.get(field))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(Api {
        title: text("title"),
        version: text("version"),
        tools: serde_json::value::to_raw_value(&json!({ "tools": tools }))
            .map_err(|e| e.to_string())?,
        operations,
    })
}

fn tool(
    refs: &Refs,
    path: &str,
    method: &str,
    id: &str,
    operation: &Value,
    shared: &Value,
) -> Result<(Value, Operation), String> {
    let mut parameters: Vec<(Parameter, Value)> = Vec::new();
    // Operation parameters override path-level ones of the same name and place.
    for list in [shared, operation.get("parameters").unwrap_or(&Value::Null)] {
        for parameter in list.as_array().into_iter().flatten() {
            let parameter = refs.resolve(parameter, 0);
            let name = parameter
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a parameter has no `name`")?;
            let location = match parameter.get("in").and_then(Value::as_str) {
                Some("path") => In::Path,
                Some("query") => In::Query,
                Some("header") => In::Header,
                // Cookies are the caller's browser state; a tool has none.
                Some("cookie") => continue,
                other => return Err(format!("parameter `{name}` has `in: {other:?}`")),
            };
            let required = location == In::Path
                || parameter.get("required").and_then(Value::as_bool) == Some(true);
            let mut schema = refs.inline(parameter.get("schema").unwrap_or(&json!({})), 0);
            if let (Some(description), Value::Object(schema)) =
                (parameter.get("description"), &mut schema)
            {
                schema.insert("description".into(), description.clone());
            }
            parameters.retain(|(p, _)| !(p.name == name && p.location == location));
            parameters.push((
                Parameter {
                    name: name.to_string(),
                    location,
                    required,
                },
                schema,
            ));
        }
    }
    let body = match operation.get("requestBody").map(|b| refs.resolve(b, 0)) {
        None => None,
        Some(body) => {
            let required = body.get("required").and_then(Value::as_bool) == Some(true);
            let content = body.get("content").and_then(Value::as_object);
            let find = |accepts: &dyn Fn(&str) -> bool| {
                content.and_then(|c| c.iter().find(|(media, _)| accepts(media)).map(|(_, m)| m))
            };
            let json =
                find(&|media| media.starts_with("application/json") || media.ends_with("+json"))
                    .map(|media| (media, BodyEncoding::Json));
            let form = || {
                find(&|media| media.starts_with("application/x-www-form-urlencoded"))
                    .map(|media| (media, BodyEncoding::Form))
            };
            match json.or_else(form) {
                Some((media, encoding)) => Some((
                    RequestBody { required, encoding },
                    refs.inline(media.get("schema").unwrap_or(&json!({})), 0),
                )),
                None if required => {
                    return Err(
                        "the request body is neither JSON nor a form (application/x-www-form-urlencoded); Portico sends only those".into(),
                    );
                }
                None => None,
            }
        }
    };

    let mut properties = Map::new();
    let mut required_parts = Vec::new();
    for location in [In::Path, In::Query, In::Header] {
        let mut part = Map::new();
        let mut required = Vec::new();
        for (parameter, schema) in parameters.iter().filter(|(p, _)| p.location == location) {
            part.insert(parameter.name.clone(), schema.clone());
            if parameter.required {
                required.push(Value::String(parameter.name.clone()));
            }
        }
        if part.is_empty() {
            continue;
        }
        if !required.is_empty() {
            required_parts.push(Value::String(location.key().into()));
        }
        properties.insert(
            location.key().into(),
            json!({"type": "object", "properties": part, "required": required}),
        );
    }
    if let Some((request_body, schema)) = &body {
        properties.insert("body".into(), schema.clone());
        if request_body.required {
            required_parts.push(Value::String("body".into()));
        }
    }
    let description = operation
        .get("description")
        .or_else(|| operation.get("summary"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut tool = json!({
        "name": id,
        "inputSchema": {"type": "object", "properties": properties, "required": required_parts},
    });
    if !description.is_empty() {
        tool["description"] = Value::String(description.to_string());
    }
    if let Some(summary) = operation.get("summary").and_then(Value::as_str) {
        tool["title"] = Value::String(summary.to_string());
    }
    let method = method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("`{method}` is not an HTTP method"))?;
    Ok((
        tool,
        Operation {
            method,
            path: path.to_string(),
            parameters: parameters.into_iter().map(|(p, _)| p).collect(),
            body: body.map(|(body, _)| body),
        },
    ))
}

/// Deep enough for real schemas, shallow enough that a cycle stops quickly.
const MAX_DEPTH: usize = 32;

struct Refs<'a> {
    document: &'a Value,
}

impl Refs<'_> {
    /// Follows `value`'s `$ref`, if it has one, to what it names.
    fn resolve(&self, value: &Value, depth: usize) -> Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) if depth < MAX_DEPTH => match self.lookup(reference) {
                Some(target) => self.resolve(target, depth + 1),
                None => json!({}),
            },
            Some(_) => json!({}),
            None => value.clone(),
        }
    }

    /// `value` with every local `$ref` inside it replaced by what it names. A reference met again
    /// inside itself (a recursive schema) becomes `{}`.
    fn inline(&self, value: &Value, depth: usize) -> Value {
        self.inline_within(value, depth, &mut Vec::new())
    }

    fn inline_within<'v>(
        &'v self,
        value: &'v Value,
        depth: usize,
        open: &mut Vec<&'v str>,
    ) -> Value {
        if depth >= MAX_DEPTH {
            return json!({});
        }
        match value {
            Value::Object(object) => {
                if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
                    if open.contains(&reference) {
                        return json!({});
                    }
                    let Some(target) = self.lookup(reference) else {
                        return json!({});
                    };
                    open.push(reference);
                    let inlined = self.inline_within(target, depth + 1, open);
                    open.pop();
                    return inlined;
                }
                Value::Object(
                    object
                        .iter()
                        .map(|(k, v)| (k.clone(), self.inline_within(v, depth + 1, open)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.inline_within(v, depth + 1, open))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `#/components/schemas/Pet` → the value at that JSON pointer.
    fn lookup(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.document.pointer(pointer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_comes_from_servers_and_host() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        let relative = json!({"servers": [{"url": "/api/v3"}]});
        let host = url("http://127.0.0.1:8080");
        assert_eq!(
            base_url(&relative, Some(&host), None).unwrap().as_str(),
            "http://127.0.0.1:8080/api/v3"
        );
        let fetched = Some("http://docs.local:9000/specs/openapi.json");
        assert_eq!(
            base_url(&relative, None, fetched).unwrap().as_str(),
            "http://docs.local:9000/api/v3"
        );
        let sibling = json!({"servers": [{"url": "v1"}]});
        assert_eq!(
            base_url(&sibling, None, fetched).unwrap().as_str(),
            "http://docs.local:9000/specs/v1"
        );
        assert!(
            base_url(&relative, None, None)
                .unwrap_err()
                .contains("set `host`")
        );
        let variables = json!({"servers": [{"url": "https://{region}.example.com:{port}/{base}",
            "variables": {"region": {"default": "eu", "enum": ["eu", "us"]}, "port": {"default": "8443"}, "base": {"default": "v2"}}}]});
        assert_eq!(
            base_url(&variables, None, None).unwrap().as_str(),
            "https://eu.example.com:8443/v2"
        );
        assert_eq!(
            base_url(&variables, Some(&host), None).unwrap().as_str(),
            "http://127.0.0.1:8080/v2"
        );
        let whole = url("http://127.0.0.1:8080/gateway/pets");
        assert_eq!(base_url(&relative, Some(&whole), None).unwrap(), whole);
        assert_eq!(base_url(&json!({}), Some(&host), None).unwrap(), host);
        assert!(
            base_url(&json!({}), None, None)
                .unwrap_err()
                .contains("no `servers`")
        );
    }

    fn petstore() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Pets", "version": "1.2"},
            "paths": {
                "/pets/{petId}": {
                    "parameters": [{"name": "petId", "in": "path", "schema": {"type": "integer"}}],
                    "get": {"operationId": "getPet", "summary": "One pet",
                            "parameters": [{"name": "x-trace", "in": "header", "schema": {"type": "string"}}]},
                    "delete": {"summary": "no operationId: not a tool"}
                },
                "/pets": {
                    "post": {"operationId": "createPet",
                             "parameters": [{"$ref": "#/components/parameters/dryRun"}],
                             "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}}
                }
            },
            "components": {
                "parameters": {"dryRun": {"name": "dryRun", "in": "query", "schema": {"type": "boolean"}}},
                "schemas": {
                    "Pet": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string"},
                        "parent": {"$ref": "#/components/schemas/Pet"}
                    }}
                }
            }
        })
    }

    #[test]
    fn operations_with_an_id_become_tools_with_their_inputs() {
        let api = read(&petstore()).unwrap();
        assert_eq!(api.title, "Pets");
        let listed: Value = serde_json::from_str(api.tools.get()).unwrap();
        let tools = listed["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2);
        let get = tools.iter().find(|t| t["name"] == "getPet").unwrap();
        assert_eq!(get["inputSchema"]["required"], json!(["path"]));
        assert_eq!(
            get["inputSchema"]["properties"]["path"]["properties"]["petId"]["type"],
            "integer"
        );
        assert!(get["inputSchema"]["properties"]["header"]["properties"]["x-trace"].is_object());
        let create = tools.iter().find(|t| t["name"] == "createPet").unwrap();
        assert_eq!(create["inputSchema"]["required"], json!(["body"]));
        let body = &create["inputSchema"]["properties"]["body"];
        assert_eq!(body["required"], json!(["name"]));
        assert_eq!(
            body["properties"]["parent"],
            json!({}),
            "the self-reference is cut, not expanded"
        );
        let op = &api.operations["createPet"];
        assert_eq!(op.method, http::Method::POST);
        assert_eq!(
            op.body,
            Some(RequestBody {
                required: true,
                encoding: BodyEncoding::Json
            })
        );
        assert_eq!(op.parameters[0].location, In::Query);
    }

    #[test]
    fn documents_that_cannot_work_are_refused() {
        assert!(
            read(&json!({"swagger": "2.0"}))
                .unwrap_err()
                .contains("Swagger 2.0")
        );
        let mut twice = petstore();
        twice["paths"]["/pets"]["get"] = json!({"operationId": "getPet"});
        assert!(read(&twice).unwrap_err().contains("used twice"));
        let none = json!({"openapi": "3.1.0", "paths": {"/a": {"get": {}}}});
        assert!(
            read(&none)
                .unwrap_err()
                .contains("no operation has an `operationId`")
        );
    }
}
