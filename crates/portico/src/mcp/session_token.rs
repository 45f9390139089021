//! Session ids that any replica can serve: the session's state, sealed with AES-256-GCM under the
//! fleet's session key. A replica that meets an id it does not hold opens it and resumes the session
//! (HTTP targets carry on with their upstream sessions); a tampered, foreign-key or expired id opens
//! to nothing and is answered as an unknown session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Bytes in a session key.
pub const KEY_BYTES: usize = 32;
/// The token format's version, its first byte: a later format can be told apart.
const FORMAT: u8 = 1;
/// Bound into every seal, so a token cannot be passed off as another kind of sealed data.
const PURPOSE: &[u8] = b"portico session v1";
/// The longest token accepted: a bigger one is not opened at all.
const MAX_TOKEN: usize = 8 * 1024;

/// What a session id carries: enough for another replica to serve the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ticket {
    /// The route that made the session; the id is valid there only.
    #[serde(rename = "r")]
    pub route: String,
    /// Which of the route's backends the session was given.
    #[serde(rename = "b")]
    pub backend: usize,
    /// The MCP version negotiated with the client.
    #[serde(rename = "v")]
    pub version: String,
    /// The caller bound to the session ([`super::session::owner`]).
    #[serde(rename = "o")]
    pub owner: Option<String>,
    /// The client's `initialize` params (its capabilities and info), for targets connected later.
    #[serde(rename = "p")]
    pub init_params: Box<RawValue>,
    /// The targets that joined at `initialize`.
    #[serde(rename = "t")]
    pub targets: Vec<TargetTicket>,
    /// When the session was made, in seconds since the Unix epoch.
    #[serde(rename = "i")]
    pub issued: u64,
}

/// One target of a [`Ticket`]: what its connection needs to continue without a new handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTicket {
    #[serde(rename = "n")]
    pub name: String,
    /// The target's own `Mcp-Session-Id` (HTTP targets that gave one).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The MCP version the target negotiated.
    #[serde(rename = "v")]
    pub version: String,
    /// The capabilities it declared ([`crate::mcp::upstream::Upstream::declared`]).
    #[serde(rename = "d")]
    pub declared: u8,
}

/// Why a session key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a session key is 64 hex characters (32 bytes); this one has {0} characters")]
    Length(usize),
    #[error("a session key is hex (0-9, a-f); found `{0}`")]
    NotHex(char),
}

/// The fleet's session keys: the current one seals, it and the previous ones open.
pub struct SessionKeys {
    keys: Vec<LessSafeKey>,
    /// Whether the key was configured (shared by the fleet) or made at start (this process only).
    pub portable: bool,
    /// How long after `initialize` a replica that does not hold a session still resumes it.
    pub lifetime: Duration,
}

fn parse_key(hex: &str) -> Result<[u8; KEY_BYTES], KeyError> {
    let hex = hex.trim();
    if hex.len() != KEY_BYTES * 2 {
        return Err(KeyError::Length(hex.chars().count()));
    }
    let mut key = [0u8; KEY_BYTES];
    let digits: Vec<u8> = hex
        .chars()
        .map(|c| c.to_digit(16).map(|d| d as u8).ok_or(KeyError::NotHex(c)))
        .collect::<Result<_, _>>()?;
    for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    Ok(key)
}

fn aead(bytes: &[u8; KEY_BYTES]) -> LessSafeKey {
    let key = UnboundKey::new(&AES_256_GCM, bytes)
        .unwrap_or_else(|e| unreachable!("a 32-byte key fits AES-256-GCM: {e}"));
    LessSafeKey::new(key)
}

/// Checks a key's form (for config validation).
pub fn check_key(hex: &str) -> Result<(), KeyError> {
    parse_key(hex).map(|_| ())
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SessionKeys {
    /// The configured key (hex) and the previous ones still accepted.
    pub fn configured(
        current: &str,
        previous: &[String],
        lifetime: Duration,
    ) -> Result<Self, KeyError> {
        let keys = std::iter::once(current)
            .chain(previous.iter().map(String::as_str))
            .map(|hex| parse_key(hex).map(|key| aead(&key)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            keys,
            portable: true,
            lifetime,
        })
    }

    /// A random key, for a gateway without a configured one: its sessions live in this process only.
    pub fn random(lifetime: Duration) -> Self {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self {
            keys: vec![aead(&key)],
            portable: false,
            lifetime,
        }
    }

    /// `ticket` sealed into a session id (base64url, unguessable: the nonce is random).
    pub fn seal(&self, ticket: &Ticket) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + 256);
        sealed.push(FORMAT);
        sealed.extend_from_slice(&nonce);
        let plain_at = sealed.len();
        // A ticket is plain data: serializing it cannot fail.
        serde_json::to_writer(&mut sealed, ticket)
            .unwrap_or_else(|e| unreachable!("a ticket serializes: {e}"));
        let mut body = sealed.split_off(plain_at);
        self.keys[0]
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(PURPOSE),
                &mut body,
            )
            .unwrap_or_else(|e| unreachable!("sealing in memory does not fail: {e}"));
        sealed.extend_from_slice(&body);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// The ticket inside `id`, if one of the keys sealed it and it is younger than the lifetime.
    pub fn open(&self, id: &str) -> Option<Ticket> {
        if id.len() > MAX_TOKEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let ticket: Ticket = self.keys.iter().find_map(|key| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut body = sealed.to_vec();
            let plain = key
                .open_in_place(nonce, Aad::from(PURPOSE), &mut body)
                .ok()?;
            serde_json::from_slice(plain).ok()
        })?;
        let age = now_seconds().saturating_sub(ticket.issued);
        (age < self.lifetime.as_secs()).then_some(ticket)
    }

    /// A ticket issued now.
    pub fn issued_now() -> u64 {
        now_seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";

    fn ticket() -> Ticket {
        Ticket {
            route: "route0".into(),
            backend: 0,
            version: "2025-06-18".into(),
            owner: Some("https://issuer\0alice".into()),
            init_params: RawValue::from_string(
                r#"{"capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}"#
                    .into(),
            )
            .unwrap(),
            targets: vec![TargetTicket {
                name: "fixture".into(),
                session: Some("upstream-1".into()),
                version: "2025-06-18".into(),
                declared: 0b101,
            }],
            issued: SessionKeys::issued_now(),
        }
    }

    fn keys(current: &str, previous: &[&str]) -> SessionKeys {
        let previous: Vec<String> = previous.iter().map(|k| k.to_string()).collect();
        SessionKeys::configured(current, &previous, Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn a_sealed_ticket_opens_with_the_same_key_only() {
        let ticket = ticket();
        let id = keys(KEY, &[]).seal(&ticket);
        assert!(id.len() < 512, "{} characters", id.len());
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let text = |ticket: Option<Ticket>| ticket.map(|t| serde_json::to_string(&t).unwrap());
        let expected = text(Some(ticket));
        assert_eq!(text(keys(KEY, &[]).open(&id)), expected);
        assert!(keys(OTHER, &[]).open(&id).is_none());
        // After a rotation the old key still opens it.
        assert_eq!(text(keys(OTHER, &[KEY]).open(&id)), expected);
    }

    #[test]
    fn ids_of_the_same_state_differ() {
        let keys = keys(KEY, &[]);
        assert_ne!(keys.seal(&ticket()), keys.seal(&ticket()));
    }

    #[test]
    fn a_tampered_id_opens_to_nothing() {
        let keys = keys(KEY, &[]);
        let id = keys.seal(&ticket());
        let mut bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        for i in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            bytes[i] ^= 1;
            assert!(
                keys.open(&URL_SAFE_NO_PAD.encode(&bytes)).is_none(),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert!(keys.open(&id[..id.len() - 2]).is_none());
        assert!(keys.open("not a token").is_none());
        assert!(keys.open("").is_none());
    }

    #[test]
    fn an_expired_ticket_opens_to_nothing() {
        let keys = keys(KEY, &[]);
        let mut old = ticket();
        old.issued -= 3601;
        assert!(keys.open(&keys.seal(&old)).is_none());
        old.issued += 2;
        assert!(keys.open(&keys.seal(&old)).is_some());
    }

    #[test]
    fn keys_are_64_hex_characters() {
        assert!(check_key(KEY).is_ok());
        assert!(check_key(&KEY.to_uppercase()).is_ok());
        assert!(matches!(check_key("abc"), Err(KeyError::Length(3))));
        let not_hex = format!("{}zz", &KEY[..62]);
        assert!(matches!(check_key(&not_hex), Err(KeyError::NotHex('z'))));
    }

    #[test]
    fn a_random_key_is_not_portable() {
        let keys = SessionKeys::random(Duration::from_secs(60));
        assert!(!keys.portable);
        let id = keys.seal(&ticket());
        assert!(keys.open(&id).is_some());
    }
}
