//! The composite list cursor: for each target that has more pages, its own cursor. Opaque to clients
//! (base64url of a small JSON object), so every page of every target stays reachable.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Target name → that target's next cursor, in config order.
pub type Pages = Vec<(String, String)>;

pub fn encode(pages: &Pages) -> String {
    let object: Map<String, Value> = pages
        .iter()
        .map(|(target, cursor)| (target.clone(), Value::String(cursor.clone())))
        .collect();
    URL_SAFE_NO_PAD.encode(Value::Object(object).to_string())
}

/// `None` when the cursor was not made by [`encode`].
pub fn decode(cursor: &str) -> Option<Pages> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let Value::Object(object) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    object
        .into_iter()
        .map(|(target, cursor)| cursor.as_str().map(|c| (target, c.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pages = vec![
            ("a".to_string(), "2".to_string()),
            ("b".to_string(), "x==".to_string()),
        ];
        assert_eq!(decode(&encode(&pages)).unwrap().len(), 2);
    }

    #[test]
    fn foreign_cursors_are_refused() {
        assert!(decode("not-a-cursor!").is_none());
        assert!(decode(&URL_SAFE_NO_PAD.encode("[1]")).is_none());
    }
}
