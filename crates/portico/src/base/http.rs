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
/// than `limit` bytes, so an oversized reply is never held whole.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
