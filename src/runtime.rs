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
use crate::middleware::auth::consumers::ConsumerStore;
use crate::middleware::auth::jwks::JwksCache;
use crate::middleware::auth::oauth2::TokenEndpoint;
use crate::middleware::auth::providers::{AuthBuildError, AuthServices};
use crate::middleware::auth::signing::SigningKeys;
use crate::middleware::rate_limit::services::RateLimitBuildError;
use crate::middleware::rate_limit::RateLimitServices;
use crate::request_id::RequestIds;
use crate::resources::{ResourceCarry, Resources};
use crate::routing::Router;
use crate::stack::{build_route_stack, RouteStack, Services};
use crate::upstream::Cluster;
use arc_swap::ArcSwap;
use http::HeaderName;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod trim;
pub(crate) use trim::trim_allocator;
use trim::TrimOnDrop;

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
    /// Headers that carry the gateway's word about the caller (a client certificate's
    /// identity, an authenticated consumer's): removed from every incoming request.
    pub(crate) identity_headers: Arc<[HeaderName]>,
    /// The consumers routes authenticate against (reloaded from their file on its own).
    pub(crate) consumers: Arc<ConsumerStore>,
    /// Identity providers' remote key sets, refreshed in the background.
    key_sets: Vec<Arc<JwksCache>>,
    /// The gateway's OAuth2 token endpoint, if a provider is its OAuth2 server.
    pub(crate) token_endpoint: Option<Arc<TokenEndpoint>>,
    /// Its key ring, refreshed in the background.
    signing: Vec<Arc<SigningKeys>>,
    /// How the token endpoint's requests are counted and logged.
    pub(crate) local_record: RouteRecord,
    /// The rate limiters' shared Redis, connected when the runtime starts.
    rate_limit_redis: Option<Arc<crate::middleware::rate_limit::redis::RedisBackend>>,
    /// The clusters, in config order (for the admin listener's `/clusters` and `/metrics`).
    pub(crate) clusters: Vec<Arc<Cluster>>,
    resources: Resources,
    /// Last, so that it drops after everything above: gives the freed pages back.
    _trim: TrimOnDrop,
}

/// One route, ready to serve.
pub(crate) struct RouteEntry {
    pub(crate) record: RouteRecord,
    pub(crate) stack: RouteStack,
    /// A policy of this route reads the request context.
    pub(crate) context: bool,
    /// A cluster of this route hashes on the client (the context carries its address).
    pub(crate) client_address: bool,
    /// The route answers CORS preflights itself (the router sends them here).
    pub(crate) answers_preflight: bool,
    /// The route retries (its access log lines count the tries).
    pub(crate) retries: bool,
    /// The route authenticates callers (its access log lines name them).
    pub(crate) authenticates: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error(transparent)]
    Auth(#[from] AuthBuildError),
    #[error(transparent)]
    RateLimit(#[from] RateLimitBuildError),
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
    /// Start the runtime's background work (key set refreshers, signing-key tickers, the rate limiters' Redis); a no-op for what a previous
    /// runtime already started. Needs the Tokio runtime: call it once the runtime is built.
    pub(crate) fn start(&self) {
        for key_set in &self.key_sets {
            key_set.start();
        }
        for keys in &self.signing {
            keys.start();
        }
        if let Some(redis) = &self.rate_limit_redis {
            redis.start();
        }
    }

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
        let services = Services {
            auth: AuthServices::build(&config.sections, &mut carry, metrics)
                .map_err(BuildError::Auth)?,
            rate_limit: RateLimitServices::build(&config, &mut carry, metrics)?,
            metrics: metrics.clone(),
        };
        if let Some(guard) = services.rate_limit.consumer_guard() {
            services.auth.consumers.guard_with(guard);
        }
        // Below the stack of a route that answers by itself: never called, and counted in a
        // registry of its own so that it shows in no metric.
        let no_cluster = Arc::new(
            Cluster::new(
                &crate::config::model::Cluster::none(),
                &Metrics::default(),
                &mut carry,
            )
            .map_err(|source| BuildError::UpstreamTls {
                cluster: String::new(),
                source,
            })?,
        );
        // One name per cluster, not one copy per route.
        let cluster_names: Vec<Arc<str>> = config
            .clusters
            .iter()
            .map(|cluster| cluster.name.as_str().into())
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let own = route.cluster_index.and_then(|index| clusters.get(index));
                let client_address = route
                    .policies
                    .split
                    .clusters(own, &clusters)
                    .any(|c| c.hashes_on_client());
                RouteEntry {
                    record: RouteRecord {
                        name: route.name.as_str().into(),
                        cluster: route
                            .cluster_index
                            .and_then(|index| cluster_names.get(index).cloned())
                            .unwrap_or_else(|| route.cluster.as_str().into()),
                        metrics: metrics.route(&route.name),
                    },
                    stack: build_route_stack(
                        &route.name,
                        &route.policies,
                        &config.sections,
                        match route.cluster_index {
                            Some(index) => clusters[index].clone(),
                            None => no_cluster.clone(),
                        },
                        &clusters,
                        &services,
                        route
                            .cluster_index
                            .and_then(|index| config.clusters[index].grpc.as_ref()),
                    ),
                    context: route.policies.reads_context() || client_address,
                    client_address,
                    answers_preflight: route.policies.cors.settings.is_some(),
                    retries: route.policies.retry.retry.is_some(),
                    authenticates: route.policies.auth.rules.is_some(),
                }
            })
            .collect();
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
        // The config's parse (source tree, JSON tree, file structs) is freed by now: give its
        // peak back before the runtime starts serving.
        let _ = trim_allocator();
        Ok(Runtime {
            consumers: services.auth.consumers.clone(),
            key_sets: services.auth.key_sets.clone(),
            token_endpoint: services.auth.token_endpoint.clone(),
            signing: services.auth.signing.clone(),
            local_record: RouteRecord {
                name: "(oauth2_server)".into(),
                cluster: "(gateway)".into(),
                metrics: metrics.route("(oauth2_server)"),
            },
            rate_limit_redis: services.rate_limit.redis.clone(),
            identity_headers: identity_headers(&config),
            // Straight from the config: a copy of every matcher would only leave holes.
            router: Router::new(config.routes.iter().map(|route| &route.matcher)),
            routes,
            access_log,
            unmatched: metrics.route("(none)"),
            clusters,
            resources: carry.finish(),
            config: Arc::new(config),
            _trim: TrimOnDrop,
        })
    }
}

/// Every header a listener or a route sets to tell the upstream who is calling.
fn identity_headers(config: &Config) -> Arc<[HeaderName]> {
    let mut names: Vec<HeaderName> = config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref()?.client_auth.forward_header.clone())
        .collect();
    for route in &config.routes {
        if let Some(rules) = &route.policies.auth.rules {
            names.extend(rules.forward.names().cloned());
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names.into()
}
