//! `--sigv4`: the fixture checks AWS SigV4 signatures the way an AWS service does, so that tests see a
//! wrongly signed request refused (HTTP 403) rather than trusting the gateway's own signer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The region, service and access keys (`ID:SECRET`) a request must be signed for.
pub struct Verifier {
    pub region: String,
    pub service: String,
    pub keys: HashMap<String, String>,
}

/// How far the signing time may be from the fixture's clock, as AWS allows.
const MAX_SKEW: Duration = Duration::from_secs(300);

pub async fn require_signature(
    State(verifier): State<Arc<Verifier>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return refuse("unreadable body");
    };
    if let Err(reason) = verifier.check(&parts, &body) {
        return refuse(&reason);
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn refuse(reason: &str) -> Response {
    (http::StatusCode::FORBIDDEN, format!("SigV4: {reason}\n")).into_response()
}

/// `Credential=ID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=HEX`.
struct Authorization<'a> {
    key_id: &'a str,
    scope: Vec<&'a str>,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse(header: &str) -> Option<Authorization<'_>> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=')?;
        fields.insert(name, value);
    }
    let mut credential = fields.get("Credential")?.split('/');
    Some(Authorization {
        key_id: credential.next()?,
        scope: credential.collect(),
        signed_headers: fields.get("SignedHeaders")?.split(';').collect(),
        signature: fields.get("Signature")?,
    })
}

impl Verifier {
    fn check(&self, parts: &http::request::Parts, body: &Bytes) -> Result<(), String> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let authorization = header("authorization").ok_or("no Authorization header")?;
        let auth = parse(authorization).ok_or("malformed Authorization header")?;
        let secret = self.keys.get(auth.key_id).ok_or("unknown access key")?;
        if auth.scope.get(1..) != Some(&[&self.region, &self.service, "aws4_request"][..]) {
            return Err(format!("wrong credential scope {:?}", auth.scope));
        }
        let date = header("x-amz-date").ok_or("no X-Amz-Date")?;
        let time = aws_smithy_types::DateTime::from_str(
            &format!(
                "{}-{}-{}T{}:{}:{}Z",
                date.get(0..4).unwrap_or_default(),
                date.get(4..6).unwrap_or_default(),
                date.get(6..8).unwrap_or_default(),
                date.get(9..11).unwrap_or_default(),
                date.get(11..13).unwrap_or_default(),
                date.get(13..15).unwrap_or_default()
            ),
            aws_smithy_types::date_time::Format::DateTime,
        )
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or("bad X-Amz-Date")?;
        let skew = SystemTime::now()
            .duration_since(time)
            .or_else(|e| Ok::<_, String>(e.duration()))?;
        if skew > MAX_SKEW {
            return Err("the signature has expired".into());
        }
        let session_token = header("x-amz-security-token").map(str::to_string);
        // The signer adds the date and the session token itself.
        let mut signed = Vec::new();
        for name in &auth.signed_headers {
            if matches!(*name, "x-amz-date" | "x-amz-security-token") {
                continue;
            }
            signed.push((
                *name,
                header(name).ok_or(format!("signed header {name} missing"))?,
            ));
        }
        let host = header("host").ok_or("no Host")?;
        let uri = format!(
            "http://{host}{}",
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let credentials = aws_credential_types::Credentials::new(
            auth.key_id,
            secret,
            session_token,
            None,
            "fixture",
        );
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            parts.method.as_str(),
            uri,
            signed.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| e.to_string())?;
        let (_, expected) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        if expected != auth.signature {
            return Err("the signature does not match".into());
        }
        Ok(())
    }
}
