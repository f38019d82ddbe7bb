//! The auth layer: who may call a route, enforced.
//!
//! On the request path, in the route stack after the body limit and before the transforms
//! (`stack.rs`). For each request:
//! 1. a client certificate, where the route requires one (the TLS facts are in the
//!    [`RequestContext`]);
//! 2. a credential: each of the route's providers looks where it reads credentials; none
//!    found is 401 with a challenge per provider; found, the providers that found one are
//!    asked in order and the first to vouch wins — an API key, or a token already verified,
//!    is decided at once, and only a provider that must wait (a key set being fetched)
//!    makes the request wait, in a boxed future;
//! 3. the route's requirements: consumers, scopes (403 `insufficient_scope`), claims;
//! 4. then the credential is removed (unless `keep_credential`), the identity headers set,
//!    and the identity put in the request's extensions for the layers after this one and in
//!    the response's for the access log.
//!
//! Deny by default: nothing reaches the layers below without passing all four, and upgrade
//! requests (WebSocket, HTTP/2 extended CONNECT) are requests like any other here.

use super::credentials::{CredentialSource, Found};
use super::failure::{AuthCounters, AuthOutcome, AuthRefusal, Scheme};
use super::identity::{Identity, IdentityNote};
use super::policy::{AuthPolicy, AuthRules};
use super::providers::{AuthServices, Check, Provider};
use crate::body::Body;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::middleware::BoxedAnswer;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// A route's auth, resolved against its runtime's providers.
pub(crate) struct RouteAuth {
    client_certificate: bool,
    /// `None` for a route that takes no credentials.
    credentials: Option<CredentialCheck>,
    counters: AuthCounters,
    /// A layer below reads the identity (a rate limit by consumer, hashing on the
    /// consumer): it goes into the request's extensions. Otherwise it is only used here
    /// (forwarded headers) and noted for the access log.
    shares_identity: bool,
}

struct CredentialCheck {
    rules: Arc<AuthRules>,
    providers: Vec<Arc<Provider>>,
    /// The challenges for a request with no credential.
    schemes: Vec<Scheme>,
}

#[derive(Clone)]
pub(crate) struct AuthLayer {
    /// `None` for a route with no auth policy: the layer is a pass-through.
    auth: Option<Arc<RouteAuth>>,
}

impl AuthLayer {
    /// `shares_identity`: a layer below the auth layer reads the caller's identity.
    pub(crate) fn new(
        policy: &AuthPolicy,
        services: &AuthServices,
        route: &str,
        shares_identity: bool,
    ) -> AuthLayer {
        if !policy.client_certificate && policy.rules.is_none() {
            return AuthLayer { auth: None };
        }
        let credentials = policy.rules.as_ref().map(|rules| {
            // Every name was checked against the same config's providers.
            let providers: Vec<Arc<Provider>> = rules
                .providers
                .iter()
                .filter_map(|name| services.provider(name).cloned())
                .collect();
            let mut schemes: Vec<Scheme> = Vec::new();
            for provider in &providers {
                let scheme = provider.scheme();
                if !schemes.contains(&scheme) {
                    schemes.push(scheme);
                }
            }
            CredentialCheck {
                rules: rules.clone(),
                providers,
                schemes,
            }
        });
        AuthLayer {
            auth: Some(Arc::new(RouteAuth {
                client_certificate: policy.client_certificate,
                credentials,
                counters: AuthCounters::new(&services.metrics, route),
                shares_identity,
            })),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    auth: Option<Arc<RouteAuth>>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(auth) = &self.auth else {
            return AuthFuture::Admitted {
                future: self.inner.call(req),
            };
        };
        if auth.client_certificate {
            let verified = RequestContext::of(&req)
                .and_then(RequestContext::tls)
                .is_some_and(|tls| tls.client_verified);
            if !verified {
                auth.counters.count(AuthOutcome::NoClientCertificate);
                return AuthFuture::refused(GatewayError::ClientCertificateRequired);
            }
        }
        let Some(check) = &auth.credentials else {
            auth.counters.count(AuthOutcome::Ok);
            return AuthFuture::Admitted {
                future: self.inner.call(req),
            };
        };
        match check.authenticate_now(&req) {
            Some(Ok((identity, source))) => match auth.admit(check, &identity, &mut req, source) {
                Ok(()) => AuthFuture::Admitted {
                    future: self.inner.call(req),
                },
                Err(error) => AuthFuture::refused(error),
            },
            Some(Err(error)) => {
                auth.counters.count(outcome_of(&error));
                AuthFuture::refused(error)
            }
            None => {
                // A provider must wait: the rest of this request runs in its own future. The
                // service's clone is the one that is ready (tower's convention).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let auth = auth.clone();
                let owned = match check.candidates(&req) {
                    Ok(found) => found
                        .into_iter()
                        .map(|(provider, credential, source)| {
                            (provider.clone(), credential.into_owned(), source)
                        })
                        .collect(),
                    Err(error) => {
                        auth.counters.count(outcome_of(&error));
                        return AuthFuture::refused(error);
                    }
                };
                AuthFuture::Waiting {
                    future: Box::pin(async move {
                        let Some(check) = &auth.credentials else {
                            return inner.call(req).await;
                        };
                        match check.authenticate(owned).await {
                            Ok((identity, source)) => {
                                auth.admit(check, &identity, &mut req, source)?;
                                inner.call(req).await
                            }
                            Err(error) => {
                                auth.counters.count(outcome_of(&error));
                                Err(error)
                            }
                        }
                    }),
                }
            }
        }
    }
}

fn outcome_of(error: &GatewayError) -> AuthOutcome {
    error
        .auth_outcome()
        .unwrap_or(AuthOutcome::ProviderUnavailable)
}

impl RouteAuth {
    /// The route's requirements for an authenticated caller; on success the request is made
    /// ready to forward.
    fn admit(
        &self,
        check: &CredentialCheck,
        identity: &Arc<Identity>,
        req: &mut Request<Body>,
        source: usize,
    ) -> Result<(), GatewayError> {
        let rules = &check.rules;
        let refused = |outcome: AuthOutcome, error: GatewayError| {
            self.counters.count(outcome);
            Err(error)
        };
        if !rules.consumers.is_empty() {
            let allowed = identity
                .consumer
                .as_ref()
                .is_some_and(|consumer| rules.consumers.contains(&consumer.id));
            if !allowed {
                return refused(AuthOutcome::Denied, GatewayError::AccessDenied);
            }
        }
        let missing: Vec<&str> = rules
            .scopes
            .iter()
            .filter(|scope| !identity.has_scope(scope))
            .map(|scope| &**scope)
            .collect();
        let any_missing = !rules.any_scope.is_empty()
            && !rules
                .any_scope
                .iter()
                .any(|scope| identity.has_scope(scope));
        if !missing.is_empty() || any_missing {
            // RFC 6750 §3: `scope` names what the resource needs.
            let mut needed: Vec<&str> = rules.scopes.iter().map(|s| &**s).collect();
            needed.extend(rules.any_scope.iter().map(|s| &**s));
            return refused(
                AuthOutcome::InsufficientScope,
                GatewayError::InsufficientScope {
                    scopes: needed.join(" ").into(),
                },
            );
        }
        for (claim, allowed) in &rules.claims {
            if !claim_allowed(identity.claim(claim).as_ref(), allowed) {
                return refused(AuthOutcome::Denied, GatewayError::AccessDenied);
            }
        }
        if !rules.keep_credential {
            if let Some(source) = check.source(source) {
                source.remove(req);
            }
        }
        rules.forward.apply(identity, req);
        if let Some(note) = req.extensions().get::<IdentityNote>() {
            note.note(identity);
        }
        if self.shares_identity {
            req.extensions_mut().insert(identity.clone());
        }
        self.counters.count(AuthOutcome::Ok);
        Ok(())
    }
}

/// Whether a claim's value is one of `allowed`, or (an array claim such as `groups`)
/// contains one of them.
fn claim_allowed(value: Option<&Value>, allowed: &[Value]) -> bool {
    match value {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| allowed.contains(item)),
        Some(value) => allowed.contains(value),
    }
}

/// A credential found in a request: its provider, the credential, and its source's number.
type Candidate<'p, 'r> = (&'p Arc<Provider>, std::borrow::Cow<'r, str>, usize);

/// The sources of all of a route's providers, numbered in order, so that the one a
/// credential came from can be named after the request has moved.
impl CredentialCheck {
    fn source(&self, index: usize) -> Option<&CredentialSource> {
        self.providers
            .iter()
            .flat_map(|provider| provider.sources())
            .nth(index)
    }

    /// The credentials in `req`, each with its provider and its source's number.
    fn candidates<'r>(
        &self,
        req: &'r Request<Body>,
    ) -> Result<Vec<Candidate<'_, 'r>>, GatewayError> {
        let mut found = Vec::new();
        let mut numbered = 0;
        let mut bad: Option<AuthOutcome> = None;
        for provider in &self.providers {
            let first = numbered;
            numbered += provider.sources().len();
            let Some((result, source)) = provider.find(req) else {
                continue;
            };
            match result {
                Found::Credential(credential) => found.push((
                    provider,
                    credential,
                    first + source_position(provider, source),
                )),
                Found::Oversized => {
                    bad.get_or_insert(AuthOutcome::Oversized);
                }
                Found::Malformed => {
                    bad.get_or_insert(AuthOutcome::Malformed);
                }
                Found::Nothing => {}
            }
        }
        if found.is_empty() {
            return Err(self.refusal(bad.unwrap_or(AuthOutcome::Missing), None));
        }
        Ok(found)
    }

    fn refusal(&self, outcome: AuthOutcome, provider: Option<&Provider>) -> GatewayError {
        if outcome == AuthOutcome::ProviderUnavailable {
            return GatewayError::AuthUnavailable {
                provider: provider.map_or_else(|| Arc::from(""), |p| p.name().clone()),
            };
        }
        let schemes = match provider {
            Some(provider) => vec![provider.scheme()],
            None => self.schemes.clone(),
        };
        GatewayError::Unauthenticated(Box::new(AuthRefusal { outcome, schemes }))
    }

    /// Decide without waiting if every provider asked can: `None` when one must wait. The
    /// same decision as [`CredentialCheck::candidates`] then checking each, made as the
    /// credentials are found (no list is built on the common path).
    fn authenticate_now(
        &self,
        req: &Request<Body>,
    ) -> Option<Result<(Arc<Identity>, usize), GatewayError>> {
        let mut failure: Option<(AuthOutcome, &Provider)> = None;
        let mut bad: Option<AuthOutcome> = None;
        let mut numbered = 0;
        for provider in &self.providers {
            let first = numbered;
            numbered += provider.sources().len();
            let Some((found, source)) = provider.find(req) else {
                continue;
            };
            match found {
                Found::Credential(credential) => match provider.check_now(&credential) {
                    Check::Done(Ok(identity)) => {
                        return Some(Ok((identity, first + source_position(provider, source))))
                    }
                    Check::Done(Err(outcome)) => keep_most_telling(&mut failure, outcome, provider),
                    Check::Wait => return None,
                },
                Found::Oversized => {
                    bad.get_or_insert(AuthOutcome::Oversized);
                }
                Found::Malformed => {
                    bad.get_or_insert(AuthOutcome::Malformed);
                }
                Found::Nothing => {}
            }
        }
        Some(Err(match failure {
            Some((outcome, provider)) => self.refusal(outcome, Some(provider)),
            None => self.refusal(bad.unwrap_or(AuthOutcome::Missing), None),
        }))
    }

    /// Decide, waiting for providers as they need. The credentials are taken from the
    /// request first (`owned`): the request itself is not held across a wait.
    async fn authenticate(
        &self,
        owned: Vec<(Arc<Provider>, String, usize)>,
    ) -> Result<(Arc<Identity>, usize), GatewayError> {
        let mut failure: Option<(AuthOutcome, &Provider)> = None;
        for (provider, credential, source) in &owned {
            let (provider, source) = (&**provider, *source);
            match provider.check(credential).await {
                Ok(identity) => return Ok((identity, source)),
                Err(outcome) => keep_most_telling(&mut failure, outcome, provider),
            }
        }
        match failure {
            Some((outcome, provider)) => Err(self.refusal(outcome, Some(provider))),
            None => Err(self.refusal(AuthOutcome::Missing, None)),
        }
    }
}

/// The number of `source` among its provider's sources.
fn source_position(provider: &Provider, source: &CredentialSource) -> usize {
    provider
        .sources()
        .iter()
        .position(|s| std::ptr::eq(s, source))
        .unwrap_or(0)
}

/// Of several providers' refusals, the one to report: a provider that recognised the token
/// as its own (right issuer) knows best why it failed, and a provider that could not be
/// asked at all makes the answer 503, not 401 (the caller is not at fault).
fn keep_most_telling<'p>(
    kept: &mut Option<(AuthOutcome, &'p Provider)>,
    outcome: AuthOutcome,
    provider: &'p Provider,
) {
    let rank = |outcome: AuthOutcome| match outcome {
        AuthOutcome::ProviderUnavailable => 3,
        AuthOutcome::Issuer | AuthOutcome::Malformed => 1,
        _ => 2,
    };
    if kept.is_none_or(|(current, _)| rank(outcome) > rank(current)) {
        *kept = Some((outcome, provider));
    }
}

pin_project! {
    #[project = AuthFutureProj]
    pub(crate) enum AuthFuture<F> {
        Refused { error: Option<GatewayError> },
        Admitted {
            #[pin]
            future: F,
        },
        Waiting { future: BoxedAnswer },
    }
}

impl<F> AuthFuture<F> {
    fn refused(error: GatewayError) -> AuthFuture<F> {
        AuthFuture::Refused { error: Some(error) }
    }
}

impl<F> Future for AuthFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Refused { error } => {
                Poll::Ready(Err(error.take().unwrap_or(GatewayError::AccessDenied)))
            }
            AuthFutureProj::Admitted { future } => future.poll(cx),
            AuthFutureProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::test_context;
    use crate::middleware::test_support::Below;
    use crate::server::tls::TlsInfo;

    fn tls(client_verified: bool) -> TlsInfo {
        TlsInfo {
            sni: Some("api.example.com".into()),
            alpn: Some(Box::from(&b"h2"[..])),
            tls13: true,
            client_verified,
            client_identity: None,
        }
    }

    fn certificate_required() -> AuthPolicy {
        AuthPolicy {
            client_certificate: true,
            rules: None,
        }
    }

    async fn call(
        policy: &AuthPolicy,
        tls: Option<TlsInfo>,
    ) -> Result<Response<Body>, GatewayError> {
        let mut req = Request::new(Body::empty());
        req.extensions_mut()
            .insert(test_context(([192, 0, 2, 1], 40000).into(), tls));
        AuthLayer::new(policy, &AuthServices::empty(), "r", true)
            .layer(Below::ok())
            .call(req)
            .await
    }

    #[tokio::test]
    async fn a_client_certificate_requirement_reads_the_connections_tls_facts() {
        assert!(call(&certificate_required(), Some(tls(true))).await.is_ok());
        for tls in [Some(tls(false)), None] {
            let error = call(&certificate_required(), tls)
                .await
                .expect_err("refused");
            assert!(matches!(error, GatewayError::ClientCertificateRequired));
        }
        assert!(call(&AuthPolicy::default(), None).await.is_ok());
    }

    #[tokio::test]
    async fn without_a_context_a_requirement_refuses() {
        let mut service =
            AuthLayer::new(&certificate_required(), &AuthServices::empty(), "r", true)
                .layer(Below::ok());
        let error = service
            .call(Request::new(Body::empty()))
            .await
            .expect_err("deny by default");
        assert!(matches!(error, GatewayError::ClientCertificateRequired));
    }

    #[tokio::test]
    async fn a_route_whose_providers_are_all_gone_refuses_everything() {
        let policy = AuthPolicy {
            client_certificate: false,
            rules: Some(Arc::new(AuthRules {
                providers: vec![Arc::from("missing")],
                ..AuthRules::default()
            })),
        };
        let error = call(&policy, None).await.expect_err("deny by default");
        assert!(matches!(error, GatewayError::Unauthenticated(_)));
    }

    #[test]
    fn claims_match_a_value_or_an_array_member() {
        let allowed = [Value::from("acme"), Value::from(7)];
        assert!(claim_allowed(Some(&Value::from("acme")), &allowed));
        assert!(claim_allowed(
            Some(&serde_json::json!(["x", "acme"])),
            &allowed
        ));
        assert!(claim_allowed(Some(&Value::from(7)), &allowed));
        assert!(!claim_allowed(Some(&Value::from("7")), &allowed));
        assert!(!claim_allowed(None, &allowed));
    }
}
