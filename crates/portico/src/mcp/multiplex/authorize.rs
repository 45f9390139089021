//! `mcpAuthorization` in the session: decisions on calls, and list items filtered (decisions remembered
//! per caller).

use super::*;

impl Mux {
    /// Whether any target of this session has an `mcpAuthorization` policy.
    pub fn authorizes(&self) -> bool {
        self.backend
            .load()
            .targets
            .iter()
            .any(|target| target.policies.authorization.is_some())
    }

    /// The decision of target `t`'s effective `mcpAuthorization` on one item; `None` without a policy.
    pub(super) fn authorize(
        &self,
        t: usize,
        caller: Option<&Caller>,
        method: &str,
        kind: ListKind,
        name: &str,
        arguments: Option<&Value>,
    ) -> Option<Verdict> {
        let config = self.target(t);
        let sourced = config.policies.authorization.as_ref()?;
        let target = &config.name;
        let anonymous = Caller::default();
        let base = caller.unwrap_or(&anonymous).context();
        let mut context = base.new_inner_scope();
        context.add_variable_from_value(
            "mcp",
            authz::mcp_variable(method, target, kind.noun(), name, arguments),
        );
        let decision = sourced.policy.decide(&context);
        metrics().record_authorization(target, decision.allowed, sourced.level, decision.rule);
        Some(Verdict {
            decision,
            level: sourced.level,
            rule: decision
                .rule
                .map(|i| sourced.policy.rules[i].source.clone()),
        })
    }

    /// The answer to a denied item: exactly the answer for a name that does not exist.
    pub(super) fn refusal(
        &self,
        id: &Value,
        kind: ListKind,
        name: &str,
        t: usize,
        own: &str,
        verdict: &Option<Verdict>,
    ) -> Option<Outcome> {
        let verdict = verdict.as_ref().filter(|v| !v.decision.allowed)?;
        let mut outcome = Outcome::of(unknown(id.clone(), kind, name));
        outcome.target = Some(self.target(t).name.clone());
        outcome.item = Some(own.to_string());
        outcome.authz = Some(verdict.describe());
        Some(outcome)
    }

    /// Drops the items of target `t` that its policy does not let `caller` see.
    pub(super) fn filter_items(
        &self,
        t: usize,
        caller: &Caller,
        kind: ListKind,
        list: &mut Vec<items::Item<'_>>,
    ) {
        let config = self.target(t);
        let Some(sourced) = &config.policies.authorization else {
            return;
        };
        let target = &config.name;
        let base = caller.context();
        let method = kind.method();
        if !sourced.policy.per_item {
            // No rule reads `mcp`: one decision for the whole list.
            let mut context = base.new_inner_scope();
            context.add_variable_from_value(
                "mcp",
                authz::mcp_variable(method, target, kind.noun(), "", None),
            );
            if !sourced.policy.decide(&context).allowed {
                list.clear();
            }
            return;
        }
        // Decisions depend only on the caller and the item: remembered for the session, so listing
        // again costs lookups, not CEL.
        let caller_key = caller.fingerprint(sourced.policy.reads_request, &self.fingerprint_keys);
        let scope = (t, kind as u8, caller_key);
        let mut decided = Vec::with_capacity(list.len());
        {
            let cache = lock(&self.decisions);
            let known = cache.get(&scope);
            for item in list.iter_mut() {
                let name = item.name(kind).unwrap_or_default().to_string();
                let allowed = known.and_then(|k| k.get(&name)).copied();
                decided.push((name, allowed));
            }
        }
        let mut learned = Vec::new();
        for (name, known) in &mut decided {
            if known.is_none() {
                let mut context = base.new_inner_scope();
                context.add_variable_from_value(
                    "mcp",
                    authz::mcp_variable(method, target, kind.noun(), name, None),
                );
                let allowed = !name.is_empty() && sourced.policy.decide(&context).allowed;
                *known = Some(allowed);
                learned.push((name.clone(), allowed));
            }
        }
        if !learned.is_empty() {
            let mut cache = lock(&self.decisions);
            let size: usize = cache.values().map(HashMap::len).sum();
            if size + learned.len() > DECISIONS_LIMIT {
                cache.clear();
            }
            cache.entry(scope).or_default().extend(learned);
        }
        let mut verdicts = decided
            .into_iter()
            .map(|(_, allowed)| allowed == Some(true));
        list.retain(|_| verdicts.next().unwrap_or(false));
    }
}

/// List-item authorization decisions: (target, list kind, caller fingerprint) → item name → allowed.
pub(super) type Decisions = HashMap<(usize, u8, u64), HashMap<String, bool>>;

/// At most this many remembered decisions per session; past it the memory starts over.
pub(super) const DECISIONS_LIMIT: usize = 16_384;

/// An authorization decision and where it came from, for the access log.
pub(super) struct Verdict {
    pub(super) decision: Decision,
    pub(super) level: Level,
    pub(super) rule: Option<String>,
}

impl Verdict {
    pub(super) fn describe(&self) -> String {
        let effect = if self.decision.allowed {
            "allow"
        } else {
            "deny"
        };
        match &self.rule {
            Some(rule) => format!("{effect} ({} rule `{rule}`)", self.level.name()),
            None => format!("{effect} ({} policy, no rule matched)", self.level.name()),
        }
    }
}
