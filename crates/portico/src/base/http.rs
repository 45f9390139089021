//! HTTP helpers every layer uses: reading a reply body with a size cap, keeping a header value.

/// Why a capped body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("sent a reply larger than {0} bytes; refused, connection dropped")]
    TooLarge(usize),
    #[error("{0}")]
    Read(String),
}

/// Reads a whole HTTP reply body as it arrives, refusing (and dropping the connection of) one larger
/// than `limit` bytes, so an oversized reply is never held whole. A `reqwest::Response` is read as
/// `reqwest::Body::from(response)`.
pub async fn read_capped<B>(body: B, limit: usize) -> Result<bytes::Bytes, BodyError>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + 'static,
{
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(super::http_client::describe(&e)))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if whole.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.freeze())
}

/// A copy of a received header value that owns its bytes. A value as received shares the buffer its
/// whole header block was read into, and the session keeps it for its life: 8 KiB or more per session.
pub fn detached(value: &http::HeaderValue) -> http::HeaderValue {
    let mut copy =
        http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_value_owns_its_bytes() {
        let block = bytes::Bytes::from_static(b"mcp-session-id: abc\r\nother: x\r\n");
        let received = http::HeaderValue::from_maybe_shared(block.slice(16..19)).unwrap();
        let mut sensitive = received.clone();
        sensitive.set_sensitive(true);
        let copy = detached(&sensitive);
        assert_eq!(copy, "abc");
        assert!(copy.is_sensitive());
        assert_ne!(copy.as_bytes().as_ptr(), received.as_bytes().as_ptr());
    }
}
