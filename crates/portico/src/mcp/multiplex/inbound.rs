//! Messages outside a client request's own reply: notifications both ways, a target's requests to
//! the client (and the client's answers), delivered on the stream they belong to.

use super::*;

impl Mux {
    /// A notification from the client.
    pub async fn client_notification(&self, mut message: Value) {
        match jsonrpc::method(&message) {
            // Portico completed the handshake with each target itself.
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                let owners: Vec<(usize, u64)> = {
                    let request = &message["params"]["requestId"];
                    let inflight = lock(&self.inflight);
                    inflight
                        .by_upstream
                        .iter()
                        .filter(|(_, pending)| pending.client_id == *request)
                        .map(|(owner, pending)| {
                            pending.cancel.cancel();
                            *owner
                        })
                        .collect()
                };
                for (t, upstream_id) in owners {
                    let Some(params) = jsonrpc::params_mut(&mut message) else {
                        return;
                    };
                    params.insert("requestId".to_string(), json!(upstream_id));
                    if let Some(upstream) = self.slot(t).upstream.load_full() {
                        let _ = upstream.notify(message.clone()).await;
                    }
                }
            }
            _ => {
                let upstreams: Vec<_> = self
                    .live()
                    .into_iter()
                    .filter_map(|t| self.slot(t).upstream.load_full())
                    .collect();
                join_all(upstreams.iter().map(|u| u.notify(message.clone()))).await;
            }
        }
    }

    /// The client's answer to a request a target sent; `false` when no target is waiting for it.
    /// An answer to a request this process did not relay (the session moved between replicas) goes
    /// to the HTTP target its id names: that target's upstream session is the same on every replica.
    pub async fn client_response(&self, mut message: Value) -> bool {
        let Some((n, name, original)) = message["id"].as_str().and_then(ClientSideId::parse) else {
            return false;
        };
        let held = lock(&self.server_requests).remove(&n);
        let (t, original_id) = match held {
            Some(held) => held,
            None => match self.target_index(name) {
                Some(t) if self.target(t).kind.is_streamable_http() => (t, original),
                _ => return false,
            },
        };
        jsonrpc::set_id(&mut message, original_id);
        if let Some(upstream) = self.slot(t).upstream.load_full()
            && let Err(e) = upstream.notify(message).await
        {
            tracing::warn!(target: "portico::mux", target = %self.target(t).name, error = %e,
                "could not deliver the client's answer");
        }
        true
    }

    pub(super) fn on_target_message(&self, t: usize, mut message: Value, related: Option<u64>) {
        match jsonrpc::kind(&message) {
            Kind::Request => {
                if jsonrpc::method(&message) == "ping" {
                    self.answer_target(t, jsonrpc::result(message["id"].clone(), json!({})));
                    return;
                }
                if self.backend.load().stateless {
                    let refusal = "the client cannot be asked: this route is stateless (statefulMode: stateless), so its answer could not come back";
                    let id = message["id"].clone();
                    self.answer_target(t, jsonrpc::error(id, code::INVALID_REQUEST, refusal));
                    return;
                }
                if jsonrpc::method(&message) == "sampling/createMessage"
                    && !self.shape_sampling(t, &mut message)
                {
                    return;
                }
                let original = message["id"].clone();
                if let Err(refusal) = self.hold_server_request(t, &original) {
                    self.answer_target(t, jsonrpc::error(original, code::INTERNAL_ERROR, refusal));
                    return;
                }
                let gateway_id = self.next_server_request.fetch_add(1, Ordering::Relaxed);
                let client_side = ClientSideId::format(gateway_id, &self.target(t).name, &original);
                jsonrpc::set_id(&mut message, json!(client_side));
                lock(&self.server_requests).insert(gateway_id, (t, original));
                self.expire_later(gateway_id);
                self.deliver(t, related, message);
            }
            Kind::Notification => {
                match jsonrpc::method(&message) {
                    "notifications/resources/updated" if self.backend.load().prefixed => {
                        if let Some(params) = message.get_mut("params") {
                            naming::prefix_item(params, ListKind::Resources, &self.target(t).name);
                        }
                    }
                    "notifications/cancelled" => {
                        let original = message["params"]["requestId"].clone();
                        let gateway_id = lock(&self.server_requests)
                            .iter()
                            .find(|(_, (target, id))| *target == t && *id == original)
                            .map(|(gid, _)| *gid);
                        let (Some(gateway_id), Some(params)) =
                            (gateway_id, jsonrpc::params_mut(&mut message))
                        else {
                            return;
                        };
                        let name = self.target(t).name.clone();
                        let client_side = ClientSideId::format(gateway_id, &name, &original);
                        params.insert("requestId".to_string(), json!(client_side));
                    }
                    _ => {}
                }
                self.deliver(t, related, message);
            }
            Kind::Response | Kind::Invalid => {}
        }
    }

    /// Makes room for one more request to the client: expired ones are answered to their targets and
    /// forgotten; `Err` says why the new one cannot be sent.
    pub(super) fn hold_server_request(&self, t: usize, id: &Value) -> Result<(), String> {
        let cap = self.limits.pending_client_requests_per_session;
        if lock(&self.server_requests).len() < cap {
            return Ok(());
        }
        tracing::warn!(target: "portico::mux", target = %self.target(t).name, %id, cap,
            "request to the client refused: too many unanswered (config.limits.pendingClientRequestsPerSession)");
        Err(format!(
            "the client has {cap} unanswered requests (config.limits.pendingClientRequestsPerSession); try again later"
        ))
    }

    /// Forgets request `gateway_id` to the client if it is still unanswered after
    /// `pendingClientRequestTimeout`, and answers its target with an error.
    pub(super) fn expire_later(&self, gateway_id: u64) {
        let (mux, after) = (self.me.clone(), self.limits.pending_client_request_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(mux) = mux.upgrade() else { return };
            let Some((t, original)) = lock(&mux.server_requests).remove(&gateway_id) else {
                return;
            };
            tracing::warn!(target: "portico::mux", target = %mux.target(t).name, id = %original,
                "the client did not answer a request of the target in time (config.limits.pendingClientRequestTimeout)");
            let message = format!(
                "the client did not answer within {after:?} (config.limits.pendingClientRequestTimeout)"
            );
            mux.answer_target(t, jsonrpc::error(original, code::INTERNAL_ERROR, message));
        });
    }

    /// Sends target `t` a response to one of its own requests.
    pub(super) fn answer_target(&self, t: usize, response: Value) {
        if let Some(upstream) = self.slot(t).upstream.load_full() {
            tokio::spawn(async move { upstream.notify(response).await });
        }
    }

    /// Sends a target's message on the stream of the request it belongs to, else on the GET stream.
    pub(super) fn deliver(&self, t: usize, related: Option<u64>, message: Value) {
        let stream = {
            let inflight = lock(&self.inflight);
            let token = message["params"].get("progressToken");
            let by_related = related.and_then(|id| inflight.by_upstream.get(&(t, id)));
            let by_token = || {
                token.and_then(|token| {
                    inflight
                        .by_upstream
                        .iter()
                        .find(|((target, _), p)| {
                            *target == t && p.progress_token.as_ref() == Some(token)
                        })
                        .map(|(_, p)| p)
                })
            };
            let latest = || {
                inflight
                    .by_upstream
                    .iter()
                    .filter(|((target, _), _)| *target == t)
                    .max_by_key(|(_, p)| p.seq)
                    .map(|(_, p)| p)
            };
            by_related
                .or_else(by_token)
                .or_else(latest)
                .map(|p| p.stream.clone())
        };
        let message = message.to_string();
        let message = match stream {
            Some(stream) => match stream.try_send(message) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => message,
        };
        self.downlink.send(message);
    }
}

/// A request a target sent to the client: its target and its original id.
pub(super) type ServerRequests = HashMap<u64, (usize, Value)>;

/// The id a target's request carries to the client: `<n>:<target>:<original id as JSON>`. `n` finds
/// it among the requests this process relayed; the target's name and its own id let any replica
/// route the client's answer (target names hold no `:`).
pub(super) struct ClientSideId;

impl ClientSideId {
    pub(super) fn format(n: u64, target: &str, original: &Value) -> String {
        format!("{n}:{target}:{original}")
    }

    pub(super) fn parse(id: &str) -> Option<(u64, &str, Value)> {
        let mut parts = id.splitn(3, ':');
        let n = parts.next()?.parse().ok()?;
        let target = parts.next()?;
        let original = serde_json::from_str(parts.next()?).ok()?;
        Some((n, target, original))
    }
}

impl InboundHandler for Mux {
    fn message(&self, target: usize, message: Value, related: Option<u64>) {
        self.on_target_message(target, message, related);
    }

    fn closed(self: Arc<Self>, target: usize, generation: u64, reason: String) {
        tokio::spawn(async move { self.target_closed(target, generation, &reason).await });
    }
}
