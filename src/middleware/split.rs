//! Weighted traffic split between clusters (canaries, blue/green): the `traffic_split` key.
//!
//! The innermost service of every route stack is a [`Destination`]: the route's one cluster
//! (an [`Upstream`], as before), or — with `traffic_split` — one of several clusters, picked
//! per request by weight. A route with a split names its clusters there instead of in
//! `cluster`. The pick is independent per request (no stickiness): a client may see either
//! version from one request to the next.

use crate::body::Body;
use crate::chance;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::error::GatewayError;
use crate::middleware::retry::{RetryPolicy, Retrying};
use crate::middleware::BoxedAnswer;
use crate::upstream::{Cluster, Upstream};
use http::{Request, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// The route's split, checked: `(cluster index, weight)` in declaration order; empty when
/// the route has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SplitPolicy {
    pub(crate) targets: Vec<(usize, String, u32)>,
}

impl SplitPolicy {
    pub(crate) fn chooses_cluster(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The clusters a route may call: `own` (its `cluster`, if any) and its split's, from
    /// the runtime's `clusters` by config index.
    pub(crate) fn clusters<'c>(
        &'c self,
        own: Option<&'c Arc<Cluster>>,
        clusters: &'c [Arc<Cluster>],
    ) -> impl Iterator<Item = &'c Arc<Cluster>> {
        own.into_iter().chain(
            self.targets
                .iter()
                .filter_map(|(index, ..)| clusters.get(*index)),
        )
    }
}

/// `traffic_split` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitRouteFile {
    traffic_split: Option<Vec<SplitTargetFile>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitTargetFile {
    /// A cluster defined in `clusters`.
    cluster: String,
    /// A share relative to the others' (whole number; 0 = none).
    weight: u32,
}

impl RoutePolicy for SplitPolicy {
    const KEYS: &'static [&'static str] = &["traffic_split"];
    type File = SplitRouteFile;

    /// No: the split chooses the cluster in `Destination`, in every stack.
    fn adds_layer(&self) -> bool {
        false
    }

    fn check(file: &SplitRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(targets) = &file.traffic_split else {
            return Some(SplitPolicy::default());
        };
        let path = route.key("traffic_split");
        if targets.len() < 2 {
            route.report(
                &path,
                "a split needs at least two clusters (or use `cluster`)",
            );
            return None;
        }
        let mut out = Vec::with_capacity(targets.len());
        let mut ok = true;
        for (index, target) in targets.iter().enumerate() {
            let item = path.index(index);
            if out.iter().any(|(_, name, _)| *name == target.cluster) {
                route.report(
                    &item.key("cluster"),
                    format!("cluster `{}` is listed twice", target.cluster),
                );
                ok = false;
                continue;
            }
            match route.cluster(&item.key("cluster"), &target.cluster) {
                Some(cluster) => out.push((cluster, target.cluster.clone(), target.weight)),
                None => ok = false,
            }
        }
        let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        if ok && total == 0 {
            route.report(
                &path,
                "every weight is 0: no request could be sent anywhere",
            );
            return None;
        }
        ok.then_some(SplitPolicy { targets: out })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if self.targets.is_empty() {
            return;
        }
        let total: u64 = self.targets.iter().map(|(_, _, w)| u64::from(*w)).sum();
        let parts: Vec<String> = self
            .targets
            .iter()
            .map(|(_, name, weight)| {
                format!(
                    "{name} {:.1}%",
                    u64::from(*weight) as f64 * 100.0 / total as f64
                )
            })
            .collect();
        out.line("traffic split", parts.join(", "));
    }
}

/// Where a route's requests go.
#[derive(Clone)]
pub(crate) enum Destination {
    One(Upstream),
    Split(Arc<WeightedClusters>),
}

/// Clusters (each with the route's retries) with the cumulative upper bound of their share
/// of `0..total`.
pub(crate) struct WeightedClusters {
    total: u64,
    choices: Vec<(u64, Upstream)>,
}

impl Destination {
    /// The route's destination: its split if it has one, else `cluster`. `clusters` are the
    /// runtime's, by config index. The route's retries apply to whichever cluster is picked.
    pub(crate) fn new(
        policy: &SplitPolicy,
        retry: &RetryPolicy,
        cluster: Arc<Cluster>,
        clusters: &[Arc<Cluster>],
    ) -> Destination {
        let upstream = |cluster: Arc<Cluster>| {
            let retrying = Retrying::new(retry, &cluster);
            Upstream::new(cluster, retrying)
        };
        if policy.targets.is_empty() {
            return Destination::One(upstream(cluster));
        }
        let mut bound = 0;
        let choices = policy
            .targets
            .iter()
            .filter(|(_, _, weight)| *weight > 0)
            .filter_map(|(index, _, weight)| {
                bound += u64::from(*weight);
                Some((bound, upstream(clusters.get(*index)?.clone())))
            })
            .collect();
        Destination::Split(Arc::new(WeightedClusters {
            total: bound,
            choices,
        }))
    }
}

impl WeightedClusters {
    fn pick(&self) -> Option<&Upstream> {
        let draw = chance::below(self.total);
        self.choices
            .iter()
            .find(|(bound, _)| draw < *bound)
            .map(|(_, upstream)| upstream)
    }
}

impl Destination {
    /// The one upstream of a route without a split.
    pub(crate) fn single(&self) -> Option<&Upstream> {
        match self {
            Destination::One(upstream) => Some(upstream),
            Destination::Split(_) => None,
        }
    }
}

impl Service<Request<Body>> for Destination {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxedAnswer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> BoxedAnswer {
        match self {
            Destination::One(upstream) => upstream.call(req),
            Destination::Split(weighted) => match weighted.pick() {
                Some(upstream) => upstream.clone().call(req),
                // Not reachable for a checked split (some weight is positive).
                None => Box::pin(std::future::ready(Err(GatewayError::NoRoute))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::middleware::test_support::route_problems;

    #[test]
    fn splits_are_checked_at_their_keys() {
        let ok = "traffic_split: [{ cluster: b, weight: 90 }, { cluster: c, weight: 10 }]";
        // The test route also names `cluster: b`.
        let p = route_problems(ok);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("leave `cluster` out"), "{p:?}");
        let p =
            route_problems("traffic_split: [{ cluster: b, weight: 1 }, { cluster: x, weight: 1 }]");
        assert!(
            p.iter()
                .any(|p| p.contains("traffic_split[1].cluster: unknown cluster `x`")),
            "{p:?}"
        );
        let p =
            route_problems("traffic_split: [{ cluster: b, weight: 0 }, { cluster: c, weight: 0 }]");
        assert!(p.iter().any(|p| p.contains("every weight is 0")), "{p:?}");
        let p = route_problems("traffic_split: [{ cluster: b, weight: 1 }]");
        assert!(p.iter().any(|p| p.contains("at least two")), "{p:?}");
    }
}
