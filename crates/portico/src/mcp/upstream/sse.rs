//! A target reached over the legacy HTTP+SSE transport (MCP 2024-11-05): a GET opens the event stream,
//! whose first `endpoint` event names the URL to POST messages to; responses come back on the stream.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::waiters::Waiters;
use super::{InboundSink, UpstreamError};
use crate::mcp::jsonrpc::Payload;
use crate::mcp::list_result;
use crate::mcp::message::Message;
use crate::mcp::sse;
use crate::policy::outbound::{Outbound, build};

/// How long the server gets to name its message endpoint.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SseUpstream {
    client: reqwest::Client,
    outbound: Outbound,
    /// Where messages are POSTed, from the stream's `endpoint` event.
    endpoint: reqwest::Url,
    waiters: Waiters,
    stream: CancellationToken,
}

fn failed(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Connect(e.without_url().to_string())
}

impl SseUpstream {
    /// Opens the event stream and waits for the `endpoint` event.
    pub async fn connect(
        url: reqwest::Url,
        client: reqwest::Client,
        outbound: Outbound,
        sink: InboundSink,
        max_event: usize,
    ) -> Result<Self, UpstreamError> {
        let request = outbound
            .finish(build(
                client.get(url.clone()).header(ACCEPT, "text/event-stream"),
            )?)
            .await?;
        let mut response = client.execute(request).await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        let mut reader = sse::Reader::new(max_event);
        let endpoint = tokio::time::timeout(ENDPOINT_TIMEOUT, async {
            while let Some(chunk) = response.chunk().await.map_err(failed)? {
                let events = reader
                    .feed(&chunk)
                    .map_err(|_| UpstreamError::TooLarge(max_event))?;
                if let Some(event) = events
                    .into_iter()
                    .find(|e| e.event.as_deref() == Some("endpoint"))
                {
                    return url.join(event.data.trim()).map_err(|e| {
                        UpstreamError::Protocol(format!("bad endpoint `{}`: {e}", event.data))
                    });
                }
            }
            Err(UpstreamError::Closed)
        })
        .await
        .map_err(|_| UpstreamError::Protocol("no `endpoint` event".into()))??;
        let waiters = Waiters::default();
        let stream = CancellationToken::new();
        tokio::spawn(read_stream(
            response,
            reader,
            waiters.clone(),
            sink,
            stream.clone(),
        ));
        Ok(Self {
            client,
            outbound,
            endpoint,
            waiters,
            stream,
        })
    }

    pub async fn request(&self, request: Message) -> Result<Payload, UpstreamError> {
        let body = request.to_bytes();
        let page = list_result::shape(request.method());
        self.waiters
            .call(request.sent_id(), page, self.post(body))
            .await
    }

    pub async fn send(&self, message: &Value) -> Result<(), UpstreamError> {
        self.post(message.to_string().into_bytes()).await
    }

    /// POSTs one message to the endpoint the event stream named.
    async fn post(&self, body: Vec<u8>) -> Result<(), UpstreamError> {
        let request = self.client.post(self.endpoint.clone());
        let request = self
            .outbound
            .finish(build(
                request.header(CONTENT_TYPE, "application/json").body(body),
            )?)
            .await?;
        let response = self.client.execute(request).await.map_err(failed)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status(response.status().as_u16()))
        }
    }

    pub fn close(&self) {
        self.stream.cancel();
    }
}

async fn read_stream(
    mut response: reqwest::Response,
    mut reader: sse::Reader,
    waiters: Waiters,
    sink: InboundSink,
    stop: CancellationToken,
) {
    let reason = loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => break "closed by Portico".to_string(),
            chunk = response.chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break "the event stream ended".to_string(),
            Err(e) => break format!("the event stream broke: {}", e.without_url()),
        };
        let Ok(events) = reader.feed(&chunk) else {
            let limit = reader.max_event();
            waiters.fail_all(|| UpstreamError::TooLarge(limit));
            sink.closed(format!(
                "the target sent an event larger than {limit} bytes (config.limits.upstreamResponse)"
            ));
            return;
        };
        for event in events {
            if event.data.trim().is_empty() {
                continue;
            }
            waiters.route(&event.data, &sink, "sse");
        }
    };
    waiters.fail_all(|| UpstreamError::Closed);
    sink.closed(reason);
}
