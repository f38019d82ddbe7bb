//! Everything built from one config — router, route stacks, clusters, access log — and the
//! state that lives as long as the process.
//!
//! A [`Runtime`] is built once per config load (at start, and by every reload on the
//! background thread) and swapped in atomically; a request holds an `Arc` to the runtime it
//! started with, so a reload never disturbs requests in flight. What must outlive one
//! runtime — endpoints' open connections, the access log writer, later limiter counters and
//! key caches — is carried from the previous runtime through its [`Resources`].

use crate::access_log::AccessLog;
use crate::completion::RouteRecord;
use crate::config::Config;
use crate::lifecycle::Background;
use crate::metrics::{Metrics, RouteMetrics};
use crate::request_id::RequestIds;
use crate::resources::{ResourceCarry, Resources};
use crate::routing::Router;
use crate::stack::{build_route_stack, RouteStack};
use crate::upstream::Cluster;
use arc_swap::ArcSwap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// State that lives as long as the process, across reloads.
pub(crate) struct Shared {
    pub(crate) runtime: ArcSwap<Runtime>,
    pub(crate) metrics: Metrics,
    pub(crate) request_ids: RequestIds,
    /// Set when shutdown begins: readiness turns false.
    pub(crate) draining: AtomicBool,
    /// Where reloads do their work, off the async workers.
    pub(crate) background: Background,
}

impl Shared {
    pub(crate) fn new(runtime: Runtime, metrics: Metrics, background: Background) -> Shared {
        Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            request_ids: RequestIds::new(),
            draining: AtomicBool::new(false),
            background,
        }
    }
}

/// Everything built from one config: swapped as a whole on reload.
pub(crate) struct Runtime {
    pub(crate) config: Arc<Config>,
    pub(crate) router: Router,
    pub(crate) routes: Vec<RouteEntry>,
    pub(crate) access_log: Option<Arc<AccessLog>>,
    /// The metrics of requests no route took.
    pub(crate) unmatched: Arc<RouteMetrics>,
    resources: Resources,
}

/// One route, ready to serve.
pub(crate) struct RouteEntry {
    pub(crate) record: RouteRecord,
    pub(crate) stack: RouteStack,
    /// A policy of this route reads the request context.
    pub(crate) context: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("cannot open the access log")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot set up TLS for cluster {cluster}")]
    UpstreamTls {
        cluster: String,
        #[source]
        source: crate::upstream::tls::UpstreamTlsError,
    },
}

impl Runtime {
    /// Build the runtime for `config`, carrying over what `previous` holds that the new config
    /// still describes the same way. Reads files (CA bundles, client certificates): run it
    /// off the async workers.
    pub(crate) fn build(
        config: Config,
        previous: Option<&Runtime>,
        metrics: &Metrics,
    ) -> Result<Runtime, BuildError> {
        let mut carry = ResourceCarry::new(previous.map(|rt| &rt.resources));
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for cluster in &config.clusters {
            let built = Cluster::new(cluster, metrics, &mut carry).map_err(|source| {
                BuildError::UpstreamTls {
                    cluster: cluster.name.clone(),
                    source,
                }
            })?;
            clusters.push(Arc::new(built));
        }
        let routes = config
            .routes
            .iter()
            .map(|route| RouteEntry {
                record: RouteRecord {
                    name: route.name.as_str().into(),
                    cluster: route.cluster.as_str().into(),
                    metrics: metrics.route(&route.name),
                },
                stack: build_route_stack(
                    &route.name,
                    &route.policies,
                    clusters[route.cluster_index].clone(),
                    config.clusters[route.cluster_index].grpc.as_ref(),
                ),
                context: route.policies.reads_context(),
            })
            .collect();
        let matchers: Vec<_> = config.routes.iter().map(|r| r.matcher.clone()).collect();
        let settings = &config.sections.access_log;
        let access_log = if settings.enabled {
            let writer = carry
                .obtain("access_log", "writer", &settings.target, || {
                    AccessLog::start(&settings.target, metrics)
                })
                .map_err(BuildError::AccessLog)?;
            Some(writer)
        } else {
            None
        };
        if previous.is_some() {
            tracing::debug!(
                carried = carry.reused(),
                "resources carried over from the previous configuration"
            );
        }
        Ok(Runtime {
            router: Router::new(&matchers),
            routes,
            access_log,
            unmatched: metrics.route("(none)"),
            resources: carry.finish(),
            config: Arc::new(config),
        })
    }
}
