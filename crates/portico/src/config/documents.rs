//! Documents a config points to, read once at load: an OpenAPI target's schema from a file, a URL
//! (fetched with a size cap and a timeout) or inline. The only I/O config resolution does besides
//! reading PEM files.

use super::model::OpenApiSchema;
use crate::policy::FieldError;

/// The OpenAPI document of an `openapi` target, read once at load. `Err` has the field (`.file`,
/// `.url`, `.inline` or nothing) and what is wrong.
pub(super) fn openapi_document(
    schema: &OpenApiSchema,
) -> Result<(String, serde_json::Value), FieldError> {
    let parse = |text: &str, field: &str| {
        serde_json::from_str(text)
            .or_else(|_| super::source::parse_document(text))
            .map(|document| (field.to_string(), document))
            .map_err(|e| {
                FieldError::new(
                    field.to_string(),
                    format!("not a JSON or YAML document: {e}"),
                )
            })
    };
    match (&schema.file, &schema.url, &schema.inline) {
        (Some(file), None, None) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| FieldError::new(".file", format!("cannot read `{file}`: {e}")))?;
            parse(&text, ".file")
        }
        (None, Some(url), None) => {
            let text = fetch_document(url).map_err(|e| FieldError::new(".url", e))?;
            parse(&text, ".url")
        }
        (None, None, Some(serde_json::Value::String(text))) => parse(text, ".inline"),
        (None, None, Some(document)) => Ok((".inline".into(), document.clone())),
        _ => Err(FieldError::new(
            "",
            "set exactly one of `file`, `url`, `inline`",
        )),
    }
}

/// Fetches a document at load, on a thread of its own: loading happens before (or outside) the
/// serving runtimes, and a config must not start half-read.
fn fetch_document(url: &str) -> Result<String, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .map_err(|e| e.to_string())?;
            let response = client
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("cannot fetch `{url}`: {e}"))?;
            let body = crate::base::http::read_capped(
                reqwest::Body::from(response),
                MAX_OPENAPI_DOCUMENT_BYTES,
            )
            .await
            .map_err(|e| format!("cannot fetch `{url}`: {e}"))?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
    })
    .join()
    .map_err(|_| "the fetch failed".to_string())?
}

/// The largest OpenAPI document fetched from a URL.
const MAX_OPENAPI_DOCUMENT_BYTES: usize = 16 << 20;
