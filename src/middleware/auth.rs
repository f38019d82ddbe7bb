//! Authentication per route: who may call it.
//!
//! Sits after the body limit (a refused body is refused before any credential is looked at)
//! and before the rate limit and the transforms, so that nothing the route does for a caller
//! happens before the caller is known — and, since WebSocket and other upgrade requests go
//! through the same stack, an upgrade is no way around it. Deny by default: a route that
//! declares a requirement forwards only requests that meet it.
//!
//! Today's policy is the client certificate requirement (`require_client_cert`): the
//! connection must have presented a certificate that verified against its listener's client
//! CA. It reads the TLS facts from the request's [`RequestContext`]; the listener did the
//! verifying during the handshake.

use crate::body::Body;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::model::ClientAuthMode;
use crate::context::RequestContext;
use crate::error::GatewayError;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The route's authentication requirements, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AuthPolicy {
    /// Only connections with a verified client certificate may use the route.
    pub(crate) client_certificate: bool,
}

/// The auth keys as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// Answer 403 unless the connection presented a verified client certificate.
    /// Default `false`.
    require_client_cert: Option<bool>,
}

impl RoutePolicy for AuthPolicy {
    const KEYS: &'static [&'static str] = &["require_client_cert"];
    type File = AuthFile;

    fn check(file: &AuthFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let client_certificate = file.require_client_cert.unwrap_or(false);
        if client_certificate {
            // A route that requires a client certificate needs a listener that asks for one.
            let asked = route.listeners().any(|listener| {
                listener
                    .tls
                    .as_ref()
                    .and_then(|tls| tls.client_auth.as_ref())
                    .and_then(|auth| auth.mode)
                    .is_some_and(|mode| mode != ClientAuthMode::None)
            });
            if !asked {
                let path = route.key("require_client_cert");
                route.report(
                    &path,
                    "no listener asks for client certificates (listeners[].tls.client_auth.mode \
                     optional or required), so this route could never be used",
                );
                return None;
            }
        }
        Some(AuthPolicy { client_certificate })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if self.client_certificate {
            out.line("auth", "a verified client certificate (403 without one)");
        }
    }

    /// The TLS facts of the connection are in the request context.
    fn reads_context(&self) -> bool {
        self.client_certificate
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthLayer {
    policy: AuthPolicy,
}

impl AuthLayer {
    pub(crate) fn new(policy: &AuthPolicy) -> AuthLayer {
        AuthLayer { policy: *policy }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: self.policy,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    policy: AuthPolicy,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if self.policy.client_certificate {
            let verified = RequestContext::of(&req)
                .and_then(RequestContext::tls)
                .is_some_and(|tls| tls.client_verified);
            if !verified {
                return AuthFuture::Refused {
                    error: Some(GatewayError::ClientCertificateRequired),
                };
            }
        }
        AuthFuture::Admitted {
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    #[project = AuthFutureProj]
    pub(crate) enum AuthFuture<F> {
        Refused { error: Option<GatewayError> },
        Admitted { #[pin] future: F },
    }
}

impl<F> Future for AuthFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or(GatewayError::ClientCertificateRequired))),
            AuthFutureProj::Admitted { future } => future.poll(cx),
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

    async fn call(
        policy: AuthPolicy,
        tls: Option<TlsInfo>,
    ) -> Result<Response<Body>, GatewayError> {
        let mut req = Request::new(Body::empty());
        req.extensions_mut()
            .insert(test_context(([192, 0, 2, 1], 40000).into(), tls));
        AuthLayer::new(&policy).layer(Below::ok()).call(req).await
    }

    #[tokio::test]
    async fn a_client_certificate_requirement_reads_the_connections_tls_facts() {
        let required = AuthPolicy {
            client_certificate: true,
        };
        assert!(call(required, Some(tls(true))).await.is_ok());
        for tls in [Some(tls(false)), None] {
            let error = call(required, tls).await.expect_err("refused");
            assert!(matches!(error, GatewayError::ClientCertificateRequired));
        }
        let open = AuthPolicy::default();
        assert!(call(open, None).await.is_ok());
    }

    #[tokio::test]
    async fn without_a_context_a_requirement_refuses() {
        let mut service = AuthLayer::new(&AuthPolicy {
            client_certificate: true,
        })
        .layer(Below::ok());
        let error = service
            .call(Request::new(Body::empty()))
            .await
            .expect_err("deny by default");
        assert!(matches!(error, GatewayError::ClientCertificateRequired));
    }
}
