//! IP allow and deny lists per route: the `ip_rules` key.
//!
//! Sits first below the rescue layer: a caller whose address the route refuses is answered
//! 403 `ip_not_allowed` before anything else is done for it (body, credentials, backend). The
//! address is the real client's, by the trusted-proxy rule of `client_ip.rs` (the top-level
//! `trusted_proxies` section) — the same rule rate limiting uses — so a client cannot spoof
//! its way in with a forwarding header. A `deny` entry wins over an `allow` entry; with an
//! `allow` list, only the addresses in it pass.

use crate::body::Body;
use crate::client_ip::{client_ip, Cidr, TrustedProxies};
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::context::RequestContext;
use crate::error::GatewayError;
use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The route's address rules, checked; `None` when it has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct IpRulesPolicy {
    pub(crate) rules: Option<Arc<IpRules>>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct IpRules {
    /// Empty: every address not denied.
    pub(crate) allow: Vec<Cidr>,
    pub(crate) deny: Vec<Cidr>,
}

impl IpRules {
    pub(crate) fn admits(&self, client: IpAddr) -> bool {
        !self.deny.iter().any(|range| range.contains(client))
            && (self.allow.is_empty() || self.allow.iter().any(|range| range.contains(client)))
    }
}

/// `ip_rules` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpRulesRouteFile {
    ip_rules: Option<IpRulesFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpRulesFile {
    /// Only these client addresses (CIDR ranges) may use the route. Default: any.
    #[serde(default)]
    allow: Vec<String>,
    /// These may not, even when allowed. Default: none.
    #[serde(default)]
    deny: Vec<String>,
}

impl RoutePolicy for IpRulesPolicy {
    const KEYS: &'static [&'static str] = &["ip_rules"];
    type File = IpRulesRouteFile;

    fn adds_layer(&self) -> bool {
        self.rules.is_some()
    }

    fn check(file: &IpRulesRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(file) = &file.ip_rules else {
            return Some(IpRulesPolicy::default());
        };
        let path = route.key("ip_rules");
        let allow = crate::client_ip::parse_ranges(&file.allow, &path.key("allow"), route);
        let deny = crate::client_ip::parse_ranges(&file.deny, &path.key("deny"), route);
        if file.allow.is_empty() && file.deny.is_empty() {
            route.report(&path, "lists no address: give allow, deny or both");
            return None;
        }
        Some(IpRulesPolicy {
            rules: Some(Arc::new(IpRules {
                allow: allow?,
                deny: deny?,
            })),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if let Some(rules) = &self.rules {
            let list = |ranges: &[Cidr]| {
                ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut text = String::new();
            if !rules.allow.is_empty() {
                text.push_str(&format!("allow {}", list(&rules.allow)));
            }
            if !rules.deny.is_empty() {
                if !text.is_empty() {
                    text.push_str("; ");
                }
                text.push_str(&format!("deny {}", list(&rules.deny)));
            }
            out.line(
                "ip rules",
                format!("{text} (client address behind trusted_proxies; 403 otherwise)"),
            );
        }
    }

    /// The client's address comes from the connection's peer.
    fn reads_context(&self) -> bool {
        self.rules.is_some()
    }
}

#[derive(Clone)]
pub(crate) struct IpRulesLayer {
    on: Option<Arc<(Arc<IpRules>, TrustedProxies)>>,
}

impl IpRulesLayer {
    pub(crate) fn new(policy: &IpRulesPolicy, trusted: &TrustedProxies) -> IpRulesLayer {
        IpRulesLayer {
            on: policy
                .rules
                .clone()
                .map(|rules| Arc::new((rules, trusted.clone()))),
        }
    }
}

impl<S> Layer<S> for IpRulesLayer {
    type Service = IpFilter<S>;

    fn layer(&self, inner: S) -> IpFilter<S> {
        IpFilter {
            inner,
            on: self.on.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct IpFilter<S> {
    inner: S,
    on: Option<Arc<(Arc<IpRules>, TrustedProxies)>>,
}

impl<S> Service<Request<Body>> for IpFilter<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = IpFilterFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(on) = &self.on {
            let (rules, trusted) = &**on;
            // Deny by default: a request without a context has no known client.
            let client = RequestContext::of(&req)
                .map(|context| client_ip(context.connection.peer.ip(), req.headers(), trusted));
            match client {
                Some(client) if rules.admits(client) => {}
                _ => {
                    return IpFilterFuture::Refused {
                        error: Some(GatewayError::IpNotAllowed(client)),
                    }
                }
            }
        }
        IpFilterFuture::Admitted {
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    #[project = IpFilterFutureProj]
    pub(crate) enum IpFilterFuture<F> {
        Refused { error: Option<GatewayError> },
        Admitted { #[pin] future: F },
    }
}

impl<F> Future for IpFilterFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            IpFilterFutureProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or(GatewayError::IpNotAllowed(None)))),
            IpFilterFutureProj::Admitted { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_support::route_problems;

    #[test]
    fn deny_wins_and_an_allow_list_is_exclusive() {
        let range = |t: &str| Cidr::parse(t).expect("range");
        let rules = IpRules {
            allow: vec![range("10.0.0.0/8"), range("2001:db8::/32")],
            deny: vec![range("10.0.13.0/24")],
        };
        let ip = |t: &str| t.parse::<IpAddr>().expect("ip");
        assert!(rules.admits(ip("10.1.2.3")));
        assert!(rules.admits(ip("2001:db8::1")));
        assert!(!rules.admits(ip("10.0.13.9")));
        assert!(!rules.admits(ip("192.0.2.1")));
        let deny_only = IpRules {
            allow: vec![],
            deny: vec![range("192.0.2.0/24")],
        };
        assert!(deny_only.admits(ip("198.51.100.1")));
        assert!(!deny_only.admits(ip("192.0.2.200")));
    }

    #[test]
    fn ranges_are_checked_at_their_entries() {
        assert!(route_problems("ip_rules: { allow: [10.0.0.0/8, \"::1\"] }").is_empty());
        let problems = route_problems("ip_rules: { allow: [10.0.0.1/8], deny: [nowhere] }");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("ip_rules.allow[0]"), "{problems:?}");
        assert!(problems[1].contains("ip_rules.deny[0]"), "{problems:?}");
        assert!(route_problems("ip_rules: {}")[0].contains("lists no address"));
    }
}
