//! The `ai` policy's prompt guards on arguments, results and a target's sampling requests.

use super::*;

impl Mux {
    /// Runs target `t`'s request guards over `value` (arguments); masks in place.
    pub(super) fn guard_request(&self, t: usize, value: &mut Value) -> Option<ai::Denied> {
        let target = self.target(t);
        let guards = target.policies.ai.as_ref()?.policy.request.as_ref()?;
        if value.is_null() {
            return None;
        }
        guards.apply(value, ai::Scope::All).err()
    }

    /// Runs target `t`'s response guards over a result: masks it, or replaces it with the denial.
    pub(super) fn guard_response(&self, t: usize, outcome: &mut Outcome) {
        let target = self.target(t);
        let Some(guards) = target
            .policies
            .ai
            .as_ref()
            .and_then(|ai| ai.policy.response.as_ref())
        else {
            return;
        };
        let Some(raw) = outcome.response.result_raw() else {
            return;
        };
        let Ok(mut result) = serde_json::from_str::<Value>(raw.get()) else {
            // Too deep to read is too deep to check: refused rather than let through unguarded.
            tracing::warn!(target: "portico::guard", target = %target.name, "a result the prompt guard cannot read was refused");
            outcome.response = Reply::error(
                outcome.response.id.clone(),
                code::INTERNAL_ERROR,
                format!(
                    "target {}: the reply could not be checked by the prompt guard",
                    target.name
                ),
            );
            return;
        };
        match guards.apply(&mut result, ai::Scope::Text) {
            Ok(false) => {}
            Ok(true) => {
                outcome.response = Reply::result(outcome.response.id.clone(), &result);
            }
            Err(denied) => {
                Metrics::count(&metrics().guard, &target.name, "response");
                tracing::warn!(target: "portico::guard", target = %target.name, rule = %denied.rule, "response refused by prompt guard");
                outcome.response =
                    Reply::error(outcome.response.id.clone(), ai::DENIED, denied.message);
                outcome.guard = Some(denied.rule);
            }
        }
    }

    pub(super) fn refused_by_guard(
        &self,
        t: usize,
        id: Value,
        denied: ai::Denied,
        item: String,
    ) -> Outcome {
        let target = &self.target(t);
        Metrics::count(&metrics().guard, &target.name, "request");
        tracing::warn!(target: "portico::guard", target = %target.name, rule = %denied.rule, "request refused by prompt guard");
        Outcome {
            response: Reply::error(id, ai::DENIED, denied.message),
            target: Some(target.name.clone()),
            item: Some(item),
            authz: None,
            response_headers: None,
            guard: Some(denied.rule),
            protocol: protocol(target),
        }
    }

    /// Applies target `t`'s `ai` policy to a `sampling/createMessage` it sends: the request guards
    /// over its messages (a denial is answered to the target, and the client never sees the request),
    /// then defaults, overrides and model aliases. `false` when the request was refused.
    pub(super) fn shape_sampling(&self, t: usize, message: &mut Value) -> bool {
        let target = &self.target(t);
        let Some(ai) = target.policies.ai.as_ref().map(|s| &s.policy) else {
            return true;
        };
        let Some(params) = message.get_mut("params") else {
            return true;
        };
        if let Some(guards) = &ai.request
            && let Err(denied) = guards.apply(params, ai::Scope::Text)
        {
            Metrics::count(&metrics().guard, &target.name, "sampling");
            tracing::warn!(target: "portico::guard", target = %target.name, method = "sampling/createMessage", rule = %denied.rule, "sampling request refused by prompt guard");
            let refusal = jsonrpc::error(message["id"].clone(), ai::DENIED, denied.message);
            self.answer_target(t, refusal);
            return false;
        }
        if let Some(sampling) = &ai.sampling {
            sampling.apply(params);
        }
        true
    }
}
