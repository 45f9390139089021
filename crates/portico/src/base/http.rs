//! HTTP helpers every layer uses: reading a reply body with a size cap.

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
