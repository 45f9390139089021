//! Request paths in one canonical form, so that no spelling of a path reaches a route its plain form
//! would not (`/public/../admin`, `/public/%2e%2e/admin`, `//admin`).
//!
//! The rules are Envoy's `normalize_path` + `merge_slashes` + `path_with_escaped_slashes_action:
//! REJECT_REQUEST`: percent-encoded unreserved characters are decoded, other escapes kept (hex
//! upper-cased), dot segments removed (RFC 3986 §5.2.4), repeated slashes merged. An encoded `/` or
//! `\`, a raw `\`, a malformed escape or a NUL is refused: backends disagree on what they mean.

use std::borrow::Cow;
use std::fmt;

/// Why a path was refused (answered 400).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    EscapedSlash,
    Backslash,
    BadEscape,
    Nul,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::EscapedSlash => "the path contains an encoded `/` or `\\` (%2F, %5C)",
            Refused::Backslash => "the path contains `\\`",
            Refused::BadEscape => "the path contains a malformed percent escape",
            Refused::Nul => "the path contains a NUL character",
        })
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes escaped unreserved characters and upper-cases the hex of the escapes that stay.
fn decode_unreserved(path: &str) -> Result<String, Refused> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(high), Some(low)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(Refused::BadEscape);
                };
                let decoded = high << 4 | low;
                match decoded {
                    b'/' | b'\\' => return Err(Refused::EscapedSlash),
                    0 => return Err(Refused::Nul),
                    byte if is_unreserved(byte) => out.push(char::from(byte)),
                    byte => {
                        out.push('%');
                        out.push_str(&format!("{byte:02X}"));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(Refused::Backslash),
            0 => return Err(Refused::Nul),
            _ => {
                // Multi-byte UTF-8 is copied whole: `path` is a `str`, so the run is valid.
                let start = i;
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'%' | b'\\' | 0) {
                    i += 1;
                }
                out.push_str(&path[start..i]);
                continue;
            }
        }
    }
    Ok(out)
}

/// Whether `path` is canonical already: the common case, answered without allocating.
fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && !path.bytes().any(|b| matches!(b, b'%' | b'\\' | 0))
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
}

/// The canonical form of `path` (the URI's path, without the query), or why it is refused.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Refused> {
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded.split('/').peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            // Empty segments are repeated (or leading) slashes, merged away.
            "" | "." => trailing_slash = last && !segments.is_empty(),
            ".." => {
                segments.pop();
                trailing_slash = last && !segments.is_empty();
            }
            segment => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_their_encodings_are_removed() {
        for path in [
            "/public/../admin/secret",
            "/public/%2e%2e/admin/secret",
            "/public/%2E%2E/admin/secret",
            "/public/.%2e/admin/secret",
            "/./admin/./secret",
            "/../../admin/secret",
            "//admin///secret",
            "/%61dmin/secret",
        ] {
            assert_eq!(normalize(path).as_deref(), Ok("/admin/secret"), "{path}");
        }
    }

    #[test]
    fn trailing_slashes_and_root_are_kept() {
        assert_eq!(normalize("/mcp/").as_deref(), Ok("/mcp/"));
        assert_eq!(normalize("/mcp/.").as_deref(), Ok("/mcp/"));
        assert_eq!(normalize("/mcp/x/..").as_deref(), Ok("/mcp/"));
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert_eq!(normalize("").as_deref(), Ok("/"));
        assert_eq!(normalize("/..").as_deref(), Ok("/"));
        assert_eq!(normalize("*").as_deref(), Ok("/*"));
    }

    #[test]
    fn plain_paths_are_not_copied() {
        for path in ["/mcp", "/mcp/", "/a/.well-known/x", "/a/..b/c."] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn other_escapes_stay_encoded_with_upper_case_hex() {
        assert_eq!(normalize("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(normalize("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(normalize("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normalize("/café").as_deref(), Ok("/café"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalize("/a%2Fb"), Err(Refused::EscapedSlash));
        assert_eq!(normalize("/a%2fb"), Err(Refused::EscapedSlash));
        assert_eq!(normalize("/a%5cb"), Err(Refused::EscapedSlash));
        assert_eq!(normalize("/a\\b"), Err(Refused::Backslash));
        assert_eq!(normalize("/a%zz"), Err(Refused::BadEscape));
        assert_eq!(normalize("/a%2"), Err(Refused::BadEscape));
        assert_eq!(normalize("/a%00"), Err(Refused::Nul));
    }
}
