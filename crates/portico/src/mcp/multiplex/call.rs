//! One request to one target: a fresh id, the in-flight bookkeeping, timeouts, rate limits, trace
//! context and metrics, and the answer mapped back to the client's id.

use super::*;

impl Mux {
    /// Sends one request to target `t` under a fresh id and maps the response back to the client's id.
    pub(super) async fn forward(
        self: &Arc<Self>,
        t: usize,
        mut request: Message,
        stream: &mpsc::Sender<String>,
    ) -> Outcome {
        let slot = self.slot(t);
        let config = slot.target.load_full();
        // Taken, not copied: the request goes out under the gateway's own id.
        let client_id = request.take_id();
        let target = Some(config.name.clone());
        let refused = |response: Reply| Outcome {
            response,
            target: target.clone(),
            item: None,
            authz: None,
            response_headers: None,
            guard: None,
            protocol: protocol(&config),
        };
        let Some(upstream) = slot.upstream.load_full() else {
            let message = format!("target {} unavailable", config.name);
            return refused(Reply::error(client_id, code::INTERNAL_ERROR, message));
        };
        if let Some(limit) = &config.policies.rate_limit
            && let Err(wait) = limit.policy.take()
        {
            Metrics::count(&metrics().limits, &config.name, "rate_limit");
            return refused(rate_limited(client_id, &config.name, wait));
        }
        let started = std::time::Instant::now();
        let method = request.method().to_string();
        let tool = (method == "tools/call")
            .then(|| request.item("name"))
            .flatten()
            .unwrap_or_default()
            .to_string();
        let upstream_id = upstream.next_id();
        request.set_id(upstream_id);
        let progress_token = request
            .meta()
            .and_then(|meta| meta.get("progressToken"))
            .cloned();
        let mut call = self.track(t, upstream_id, &client_id, stream, progress_token);
        let limit = config.policies.timeout.as_ref().map(|s| *s.policy);
        let span = traces::OpenSpan::client(&method);
        if let Some(span) = &span {
            carry_trace_context(&mut request, span.context());
        }
        // Boxed: the transport's future is large, and would otherwise be copied at every await above.
        let sending = Box::pin(upstream.request(request));
        let sending = async {
            match &span {
                Some(span) => traces::within(span.context(), sending).await,
                None => sending.await,
            }
        };
        let reply = tokio::select! {
            reply = within(limit, sending) => reply,
            _ = call.cancel.cancelled() => Err(CallError::Cancelled),
        };
        let response = settle(&mut call, &config.name, client_id, reply);
        drop(call);
        let error = response.error_code();
        if let Some(mut span) = span {
            span.rename(&method, &tool);
            span.attribute("mcp.method.name", &method);
            span.attribute("gen_ai.tool.name", &tool);
            span.attribute("portico.target", &config.name);
            span.attribute("network.transport", transport(&config));
            span.end(error);
        }
        self.record_call(t, &method, &tool, error, started.elapsed());
        let response_headers = config
            .policies
            .response_headers
            .as_ref()
            .filter(|s| s.level != Level::Route)
            .map(|s| s.policy.clone());
        Outcome {
            response_headers,
            ..refused(response)
        }
    }

    /// Records `mcp.client.operation.duration` for one call to target `t`.
    pub(super) fn record_call(
        &self,
        t: usize,
        method: &str,
        tool: &str,
        error: Option<i64>,
        elapsed: Duration,
    ) {
        let target = &self.target(t);
        let transport = transport(target);
        let operation = Operation {
            route: "",
            method,
            target: &target.name,
            item: tool,
            error,
            version: self.protocol_version,
        };
        metrics().record_client_operation(&operation, transport, elapsed);
    }

    /// Records a request sent to target `t`; the returned [`Call`] forgets it when dropped.
    pub(super) fn track(
        &self,
        t: usize,
        upstream_id: u64,
        client_id: &Value,
        stream: &mpsc::Sender<String>,
        progress_token: Option<Value>,
    ) -> Call<'_> {
        let cancel = CancellationToken::new();
        let mut inflight = lock(&self.inflight);
        inflight.seq += 1;
        let seq = inflight.seq;
        inflight.by_upstream.insert(
            (t, upstream_id),
            Pending {
                stream: stream.clone(),
                cancel: cancel.clone(),
                client_id: client_id.clone(),
                progress_token,
                seq,
            },
        );
        Call {
            mux: self,
            t,
            upstream_id,
            cancel,
            stop_reason: "the client went away",
            unanswered: true,
        }
    }

    /// Tells target `t` to stop working on its request `upstream_id` (`notifications/cancelled`).
    pub(super) fn cancel_at_target(&self, t: usize, upstream_id: u64, reason: &str) {
        let Some(upstream) = self.slot(t).upstream.load_full() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let message = jsonrpc::notification(
            "notifications/cancelled",
            json!({"requestId": upstream_id, "reason": reason}),
        );
        runtime.spawn(async move { upstream.notify(message).await });
    }

    pub(super) fn untrack(&self, t: usize, upstream_id: u64) {
        lock(&self.inflight).by_upstream.remove(&(t, upstream_id));
    }
}

/// A request in flight at a target, by `(target index, upstream id)`.
pub(super) struct Pending {
    pub(super) stream: mpsc::Sender<String>,
    /// Fired when the client cancels the request, so the gateway stops waiting for the target.
    pub(super) cancel: CancellationToken,
    /// The id the client sent the request with: what its `notifications/cancelled` names.
    pub(super) client_id: Value,
    pub(super) progress_token: Option<Value>,
    /// Order of arrival: messages a target sends without saying which request they belong to go
    /// to its most recent one.
    pub(super) seq: u64,
}

/// A session's requests in flight at its targets. A client's cancellation (rare) looks its request
/// up by walking them; a call adds and removes one entry.
#[derive(Default)]
pub(super) struct Inflight {
    /// Keyed by the gateway's own numbers: no client picks them, so no SipHash.
    pub(super) by_upstream: HashMap<(usize, u64), Pending, crate::base::fast_hash::Fast>,
    pub(super) seq: u64,
}

/// A request in flight at a target. However its wait ends (an answer, a timeout, or the client's
/// request being dropped because the client disconnected), dropping it frees the bookkeeping; if the
/// target never answered, the target is sent `notifications/cancelled`.
pub(super) struct Call<'a> {
    pub(super) mux: &'a Mux,
    pub(super) t: usize,
    pub(super) upstream_id: u64,
    /// Fired when the client cancels the request.
    pub(super) cancel: CancellationToken,
    /// What the target is told when it is cancelled.
    pub(super) stop_reason: &'static str,
    pub(super) unanswered: bool,
}

impl Call<'_> {
    /// The target answered (or was already told to stop): nothing to cancel.
    pub(super) fn answered(&mut self) {
        self.unanswered = false;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.mux.untrack(self.t, self.upstream_id);
        if self.unanswered && !self.mux.closed.is_cancelled() {
            self.mux
                .cancel_at_target(self.t, self.upstream_id, self.stop_reason);
        }
    }
}

/// `network.transport` of a target: `pipe` for a stdio process, `tcp` for the rest.
pub(super) fn transport(target: &Target) -> &'static str {
    match target.kind {
        crate::config::runtime::TargetKind::Stdio(_) => "pipe",
        _ => "tcp",
    }
}

/// Puts the call's trace context in `params._meta.traceparent`, as the MCP conventions carry it to
/// every kind of target. Only when tracing: otherwise the request goes out as the client sent it.
pub(super) fn carry_trace_context(request: &mut Message, context: traces::Context) {
    request.insert_meta("traceparent", Value::String(context.traceparent()));
}

/// Why a call to a target gave no answer.
pub(super) enum CallError {
    Upstream(UpstreamError),
    Cancelled,
    Expired(Timeout),
}

/// The client's response to a call that ended with `reply`. Only a call the target did not finish
/// (a timeout) leaves `call` armed to cancel it at the target.
pub(super) fn settle(
    call: &mut Call<'_>,
    target: &str,
    client_id: Value,
    reply: Result<Payload, CallError>,
) -> Reply {
    let failed = |e: UpstreamError| match e {
        UpstreamError::TooLarge(_) => {
            format!("target {target}: {e} (config.limits.upstreamResponse)")
        }
        e => format!("target {target}: {e}"),
    };
    match reply {
        Ok(payload) => {
            call.answered();
            Reply {
                id: client_id,
                payload,
            }
        }
        Err(CallError::Cancelled) => {
            // The client's own `notifications/cancelled` already reached the target.
            call.answered();
            let message = failed(UpstreamError::Cancelled);
            Reply::error(client_id, code::INTERNAL_ERROR, message)
        }
        Err(CallError::Expired(timeout)) => {
            call.stop_reason = "timeout";
            Metrics::count(&metrics().limits, target, "timeout");
            let message = timeout.expired(target);
            tracing::warn!(target: "portico::mux", target, error = %message, "upstream call timed out; target told to cancel");
            Reply::error(client_id, code::INTERNAL_ERROR, message)
        }
        Err(CallError::Upstream(e)) => {
            call.answered();
            tracing::warn!(target: "portico::mux", target, error = %e, "upstream call failed");
            Reply::error(client_id, code::INTERNAL_ERROR, failed(e))
        }
    }
}

/// `call`, bounded by the target's `timeout` policy if it has one.
pub(super) async fn within(
    limit: Option<Timeout>,
    call: impl Future<Output = Result<Payload, UpstreamError>>,
) -> Result<Payload, CallError> {
    let Some(timeout) = limit else {
        return call.await.map_err(CallError::Upstream);
    };
    match tokio::time::timeout(timeout.limit, call).await {
        Ok(reply) => reply.map_err(CallError::Upstream),
        Err(_) => Err(CallError::Expired(timeout)),
    }
}

/// The error for a call refused by the target's `localRateLimit`: which target, and when to retry.
pub(super) fn rate_limited(id: Value, target: &str, wait: Duration) -> Reply {
    let seconds = crate::policy::rate_limit::retry_after_secs(wait);
    let error = json!({
        "code": code::INTERNAL_ERROR,
        "message": format!("rate limit of target {target} reached (localRateLimit); retry in {seconds} s"),
        "data": {"target": target, "retryAfter": seconds},
    });
    Reply {
        id,
        payload: Payload::Error(jsonrpc::Json::of(&error)),
    }
}

/// `a2a` when the target's traffic is marked agent-to-agent (`a2a: {}` at any level), else `mcp`.
pub(super) fn protocol(target: &Target) -> &'static str {
    match target.policies.a2a {
        Some(_) => "a2a",
        None => "mcp",
    }
}
