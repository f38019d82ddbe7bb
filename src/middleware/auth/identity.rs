//! Who a request comes from, once the auth layer has authenticated it.
//!
//! On the request path: the auth layer puts an `Arc<Identity>` in the request's extensions
//! for the layers after it (rate limits key on its consumer and plan) and in the response's
//! extensions for the completion step (the access log's `consumer`). An API key, a token the
//! gateway issued and an external token whose `client_id` / `azp` names a consumer all
//! resolve to the same [`Consumer`], so its plan and granted scopes apply however it
//! authenticated. The route's `forward` settings turn the identity into request headers for
//! the upstream.

use super::consumers::{ClientLookup, Consumer, ConsumerDirectory};
use super::failure::AuthOutcome;
use http::{HeaderName, HeaderValue, Request};
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// An authenticated caller.
#[derive(Debug)]
pub(crate) struct Identity {
    /// The consumer (third-party app) it is, when the credential names one.
    pub(crate) consumer: Option<Arc<Consumer>>,
    /// The token's `sub`, or the consumer id.
    pub(crate) subject: Option<Arc<str>>,
    /// Granted scopes: a consumer's grant for an API key; a token's scopes (`scope` and
    /// `scp`), narrowed to its consumer's grant when it names one.
    pub(crate) scopes: Vec<Arc<str>>,
    /// A token's claims (empty for an API key).
    pub(crate) claims: Map<String, Value>,
}

impl Identity {
    /// An API key's identity: its consumer, and the consumer's grant.
    pub(crate) fn of_consumer(consumer: Arc<Consumer>) -> Identity {
        Identity {
            subject: Some(consumer.id.clone()),
            scopes: consumer.scopes.clone(),
            consumer: Some(consumer),
            claims: Map::new(),
        }
    }

    /// No one: what a cache remembers for a credential that does not authenticate.
    pub(crate) fn nobody() -> Identity {
        Identity {
            consumer: None,
            subject: None,
            scopes: Vec::new(),
            claims: Map::new(),
        }
    }

    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|granted| &**granted == scope)
    }

    /// A claim by name; `client_id`, `sub` and `scope` also answer for an API key's
    /// consumer, so that claim rules read the same for both.
    pub(crate) fn claim(&self, name: &str) -> Option<Value> {
        if let Some(value) = self.claims.get(name) {
            return Some(value.clone());
        }
        match name {
            "sub" => self.subject.as_deref().map(Value::from),
            "client_id" => self.consumer.as_ref().map(|c| Value::from(&*c.id)),
            _ => None,
        }
    }
}

/// The identity a verified token's claims describe: `sub`, the scopes, and the consumer the
/// first of `consumer_claims` present names, whose grant caps the scopes. A token naming a
/// disabled consumer is refused; one naming none is refused if `require_consumer`.
pub(crate) fn identity_from_claims(
    claims: Map<String, Value>,
    consumer_claims: &[String],
    require_consumer: bool,
    directory: &ConsumerDirectory,
) -> Result<Identity, AuthOutcome> {
    let mut scopes = token_scopes(&claims);
    let mut consumer = None;
    for claim in consumer_claims {
        let Some(Value::String(client_id)) = claims.get(claim) else {
            continue;
        };
        match directory.lookup_client(client_id) {
            ClientLookup::Enabled(found) => {
                scopes.retain(|scope| found.scopes.contains(scope));
                consumer = Some(found.clone());
            }
            ClientLookup::Disabled => return Err(AuthOutcome::UnknownConsumer),
            ClientLookup::Unknown => continue,
        }
        break;
    }
    if consumer.is_none() && require_consumer {
        return Err(AuthOutcome::UnknownConsumer);
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .map(Arc::from)
        .or_else(|| consumer.as_ref().map(|c: &Arc<Consumer>| c.id.clone()));
    Ok(Identity {
        consumer,
        subject,
        scopes,
        claims,
    })
}

/// The scopes in a token's claims: `scope` (RFC 8693 §4.2: a space-separated string) and
/// `scp` (an array of strings, or a string, as some IdPs send it).
pub(crate) fn token_scopes(claims: &Map<String, Value>) -> Vec<Arc<str>> {
    let mut scopes: Vec<Arc<str>> = Vec::new();
    let mut add = |scope: &str| {
        if !scope.is_empty() && !scopes.iter().any(|s| &**s == scope) {
            scopes.push(Arc::from(scope));
        }
    };
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(text)) => text.split(' ').for_each(&mut add),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut add),
            _ => {}
        }
    }
    scopes
}

/// Where the auth layer notes who the caller is, for the access log: put in a request's
/// extensions by the gateway only when there is an access log to write it to, so a route
/// pays for carrying the identity back only when someone reads it.
#[derive(Clone, Default)]
pub(crate) struct IdentityNote(Arc<OnceLock<Arc<Identity>>>);

impl IdentityNote {
    pub(crate) fn note(&self, identity: &Arc<Identity>) {
        // Set once per request: a request is authenticated once.
        let _ = self.0.set(identity.clone());
    }

    pub(crate) fn identity(&self) -> Option<&Arc<Identity>> {
        self.0.get()
    }
}

/// What a route sends upstream about the caller, as headers. Every name configured here on
/// any route is removed from every incoming request first (`Runtime::identity_headers`), so
/// a client can never spoof one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ForwardHeaders {
    pub(crate) consumer: Option<HeaderName>,
    pub(crate) subject: Option<HeaderName>,
    pub(crate) scopes: Option<HeaderName>,
    pub(crate) plan: Option<HeaderName>,
    /// (claim, header).
    pub(crate) claims: Vec<(String, HeaderName)>,
}

impl ForwardHeaders {
    pub(crate) fn names(&self) -> impl Iterator<Item = &HeaderName> {
        [&self.consumer, &self.subject, &self.scopes, &self.plan]
            .into_iter()
            .flatten()
            .chain(self.claims.iter().map(|(_, header)| header))
    }

    /// Set the headers for `identity` on a request bound upstream. A value that cannot be a
    /// header value (a claim with a control character) is left out.
    pub(crate) fn apply<B>(&self, identity: &Identity, req: &mut Request<B>) {
        let headers = req.headers_mut();
        let mut set = |name: &Option<HeaderName>, value: Option<&str>| {
            if let (Some(name), Some(value)) = (name, value) {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name.clone(), value);
                }
            }
        };
        let consumer = identity.consumer.as_deref();
        set(&self.consumer, consumer.map(|c| &*c.id));
        set(&self.subject, identity.subject.as_deref());
        set(&self.plan, consumer.and_then(|c| c.plan.as_deref()));
        if self.scopes.is_some() {
            let joined = identity
                .scopes
                .iter()
                .map(|s| &**s)
                .collect::<Vec<_>>()
                .join(" ");
            set(&self.scopes, Some(&joined));
        }
        for (claim, header) in &self.claims {
            let text = match identity.claim(claim) {
                Some(Value::String(text)) => text,
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(header.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let claims = json!({"scope": "a b", "scp": ["b", "c"]});
        let Value::Object(claims) = claims else {
            panic!("object")
        };
        let scopes: Vec<String> = token_scopes(&claims)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(scopes, ["a", "b", "c"]);
        let Value::Object(string_scp) = json!({"scp": "x y"}) else {
            panic!("object")
        };
        assert_eq!(token_scopes(&string_scp).len(), 2);
    }
}
