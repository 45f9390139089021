//! A REST service described by OpenAPI, offered as an MCP server: `tools/list` is the document's
//! operations ([`spec`], read once at load), and `tools/call` is one HTTP request to the service. A
//! 2xx reply is the tool's result (its JSON also as `structuredContent` when it is an object); any
//! other status, or no reply, is an `isError` result that says what happened.

use std::sync::Arc;

use serde_json::{Value, json};

use super::UpstreamError;
use crate::mcp::jsonrpc::{self, Payload, Reply, code};
use crate::mcp::multiplex::merge::negotiate_version;
use crate::policy::outbound::Outbound;

use crate::config::openapi as spec;
pub use crate::config::openapi::Api;

pub struct OpenApiUpstream {
    api: Arc<Api>,
    /// The service's base URL; operation paths are appended to it.
    base: reqwest::Url,
    client: reqwest::Client,
    outbound: Outbound,
    max_reply: usize,
}

fn result(value: &Value) -> Payload {
    Reply::result(Value::Null, value).payload
}

fn tool_error(text: String) -> Payload {
    result(&json!({"content": [{"type": "text", "text": text}], "isError": true}))
}

impl OpenApiUpstream {
    pub fn new(
        api: Arc<Api>,
        base: reqwest::Url,
        client: reqwest::Client,
        outbound: Outbound,
        max_reply: usize,
    ) -> Self {
        Self {
            api,
            base,
            client,
            outbound,
            max_reply,
        }
    }

    pub async fn request(&self, request: Value) -> Result<Payload, UpstreamError> {
        let params = &request["params"];
        Ok(match jsonrpc::method(&request) {
            "initialize" => result(&json!({
                "protocolVersion": negotiate_version(params["protocolVersion"].as_str()),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": self.api.title, "version": self.api.version},
            })),
            "tools/list" => Payload::Result(self.api.tools.as_ref().into()),
            "tools/call" => self.call(params).await?,
            "ping" => result(&json!({})),
            method => {
                Reply::error(
                    Value::Null,
                    code::METHOD_NOT_FOUND,
                    format!("Method not found: {method} (an OpenAPI target offers tools only)"),
                )
                .payload
            }
        })
    }

    /// A tool call: one HTTP request. Service failures are tool errors (`isError`), so the model sees
    /// them; only an oversized reply fails the call itself.
    async fn call(&self, params: &Value) -> Result<Payload, UpstreamError> {
        let name = params["name"].as_str().unwrap_or_default();
        let Some(operation) = self.api.operations.get(name) else {
            return Ok(Reply::error(
                Value::Null,
                code::INVALID_PARAMS,
                format!("Unknown tool: {name}"),
            )
            .payload);
        };
        let arguments = &params["arguments"];
        let request = match self.build(operation, arguments) {
            Ok(request) => request,
            Err(message) => return Ok(tool_error(message)),
        };
        let request = match async {
            self.outbound
                .finish(crate::policy::outbound::build(request)?)
                .await
        }
        .await
        {
            Ok(request) => request,
            Err(e) => return Ok(tool_error(format!("cannot call the service: {e}"))),
        };
        let response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                return Ok(tool_error(format!(
                    "cannot reach the service: {}",
                    e.without_url()
                )));
            }
        };
        let status = response.status();
        let body = match super::read_body(reqwest::Body::from(response), self.max_reply).await {
            Ok(body) => String::from_utf8_lossy(&body).into_owned(),
            Err(e @ UpstreamError::TooLarge(_)) => return Err(e),
            Err(e) => return Ok(tool_error(format!("the reply broke off: {e}"))),
        };
        if !status.is_success() {
            return Ok(tool_error(format!("HTTP {status}: {body}")));
        }
        let mut content = json!({"content": [{"type": "text", "text": body}]});
        if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(&body) {
            content["structuredContent"] = parsed;
        }
        Ok(result(&content))
    }

    /// The HTTP request for one call; `Err` says which argument is missing or wrong.
    fn build(
        &self,
        operation: &spec::Operation,
        arguments: &Value,
    ) -> Result<reqwest::RequestBuilder, String> {
        let mut path = operation.path.clone();
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for parameter in &operation.parameters {
            let part = parameter.location.key();
            let value = &arguments[part][&parameter.name];
            if value.is_null() {
                if parameter.required {
                    return Err(format!(
                        "missing argument `{part}.{}` (required)",
                        parameter.name
                    ));
                }
                continue;
            }
            match parameter.location {
                spec::In::Path => {
                    let text = scalar(value).ok_or_else(|| {
                        format!("`path.{}` must be a string or a number", parameter.name)
                    })?;
                    let encoded: String = url_segment(&text);
                    path = path.replace(&format!("{{{}}}", parameter.name), &encoded);
                }
                spec::In::Query => match value {
                    Value::Array(items) => {
                        for item in items {
                            query.push((parameter.name.clone(), scalar(item).unwrap_or_default()));
                        }
                    }
                    other => query.push((
                        parameter.name.clone(),
                        scalar(other).unwrap_or_else(|| other.to_string()),
                    )),
                },
                spec::In::Header => headers.push((
                    parameter.name.clone(),
                    scalar(value).unwrap_or_else(|| value.to_string()),
                )),
            }
        }
        let mut url = self.base.clone();
        let joined = format!("{}{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(&query);
        }
        let mut request = self
            .client
            .request(operation.method.clone(), url)
            .header(http::header::ACCEPT, "application/json");
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("header `{name}` cannot hold that value"))?;
            request = request.header(name, value);
        }
        let Some(expected) = operation.body else {
            return Ok(request);
        };
        match arguments.get("body").filter(|b| !b.is_null()) {
            Some(body) if expected.encoding == spec::BodyEncoding::Form => {
                let Some(fields) = body.as_object() else {
                    return Err("`body` must be an object (its fields are sent as a form)".into());
                };
                let fields: Vec<(&str, String)> = fields
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str(),
                            scalar(value).unwrap_or_else(|| value.to_string()),
                        )
                    })
                    .collect();
                Ok(request.form(&fields))
            }
            Some(body) => Ok(request.json(body)),
            None if expected.required => Err("missing argument `body` (required)".into()),
            None => Ok(request),
        }
    }
}

/// Strings as they are, numbers and booleans as written; `None` for objects and arrays.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Percent-encodes a path parameter so it stays one segment (`a/b` → `a%2Fb`).
fn url_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(byte as char)
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_stay_one_segment() {
        assert_eq!(url_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(url_segment("pet-42_x.y~"), "pet-42_x.y~");
    }
}
