//! `a2a` (route, backend, target): marks traffic as agent-to-agent. The access log carries
//! `protocol=a2a` for it; on a `host` backend Portico also proxies the A2A agent, rewriting its agent
//! card's `url` to the gateway's address (see `server/host.rs`).

use crate::policy::FieldError;
use serde::Deserialize;

/// `a2a: {}`: no settings yet.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// A compiled `a2a` policy: its presence is the whole of it.
#[derive(Debug, Default)]
pub struct A2a;

impl A2a {
    pub fn compile(_: &Config) -> Result<Self, FieldError> {
        Ok(A2a)
    }
}

/// Whether `path` asks for an agent card: `/.well-known/agent-card.json`, or `agent.json` (A2A before
/// 0.3), at the root or under the path an agent is served at.
pub fn is_agent_card(path: &str) -> bool {
    ["/.well-known/agent-card.json", "/.well-known/agent.json"]
        .iter()
        .any(|card| path.ends_with(card))
}

/// The A2A JSON-RPC method of a request body (`message/send`, `tasks/get`, ...), for the log.
pub fn method(body: &[u8]) -> Option<String> {
    #[derive(Deserialize, schemars::JsonSchema)]
    struct Envelope {
        method: String,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.method)
}

/// Rewrites the agent card's URLs that point at the agent itself (`url`, and each
/// `additionalInterfaces[].url` / `supportedInterfaces[].url`) to the gateway's `public_origin`
/// (`https://gateway.example.com`), keeping their paths, so that clients that read the card call the
/// agent through Portico. URLs on other hosts are left alone. `None` if the body is not a JSON object.
pub fn rewrite_card(card: &[u8], agent: &reqwest::Url, public_origin: &str) -> Option<Vec<u8>> {
    let mut card: serde_json::Value = serde_json::from_slice(card).ok()?;
    let object = card.as_object_mut()?;
    let agent_origin = agent.origin();
    let rewrite = |value: &mut serde_json::Value| {
        let Some(url) = value.as_str().and_then(|u| reqwest::Url::parse(u).ok()) else {
            return;
        };
        if url.origin() != agent_origin {
            return;
        }
        let rest = &url.as_str()[url.origin().ascii_serialization().len()..];
        *value = serde_json::Value::String(format!("{public_origin}{rest}"));
    };
    if let Some(url) = object.get_mut("url") {
        rewrite(url);
    }
    for list in ["additionalInterfaces", "supportedInterfaces"] {
        let interfaces = object.get_mut(list).and_then(|l| l.as_array_mut());
        for interface in interfaces.into_iter().flatten() {
            if let Some(url) = interface.get_mut("url") {
                rewrite(url);
            }
        }
    }
    serde_json::to_vec(&card).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_card_points_at_the_gateway() {
        let agent: reqwest::Url = "http://127.0.0.1:9999".parse().unwrap();
        let card = json!({
            "name": "Echo agent",
            "url": "http://127.0.0.1:9999/a2a/v1",
            "additionalInterfaces": [
                {"url": "http://127.0.0.1:9999/a2a/v1", "transport": "JSONRPC"},
                {"url": "https://elsewhere.example.com/grpc", "transport": "GRPC"}
            ],
            "skills": [{"id": "echo"}]
        });
        let rewritten = rewrite_card(
            card.to_string().as_bytes(),
            &agent,
            "https://gateway.example.com",
        )
        .unwrap();
        let rewritten: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!(rewritten["url"], "https://gateway.example.com/a2a/v1");
        assert_eq!(
            rewritten["additionalInterfaces"][0]["url"],
            "https://gateway.example.com/a2a/v1"
        );
        assert_eq!(
            rewritten["additionalInterfaces"][1]["url"],
            "https://elsewhere.example.com/grpc"
        );
        assert_eq!(rewritten["skills"], card["skills"]);
    }

    #[test]
    fn the_method_is_read_from_the_body() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#;
        assert_eq!(method(body).as_deref(), Some("message/send"));
        assert_eq!(method(b"not json"), None);
    }
}
