//! DNS discovery: a cluster's endpoints written as names (`users.default.svc:8080`) are
//! resolved again and again, A and AAAA, and every address becomes an endpoint — what a
//! Kubernetes headless service needs.
//!
//! Off the request path: one resolver task per cluster (a reload-surviving resource, so a
//! reload neither re-resolves nor forgets), publishing the current address list on a watch
//! channel; each runtime's cluster follows it and swaps in a new endpoint set when it
//! changes. Requests in flight keep the set they started with, so an endpoint that leaves
//! finishes what it was sent. An endpoint that stays keeps its state (health, ejection,
//! latency), its pooled connections and its health checker ([`Members`]).
//!
//! When to resolve again: when the answer's TTL runs out, held within `min_ttl..=max_ttl`;
//! after a failure, `refresh` later. Failure modes of DNS: a server that does not answer or
//! answers with an error (SERVFAIL, timeout) changes nothing — the last addresses stay in
//! use; an authoritative "no such name" or an empty answer removes that name's addresses.
//! Without `nameservers`, the system's resolver configuration (`/etc/resolv.conf`) is read
//! when the task starts; if it cannot be read, nothing is discovered (logged) and the
//! cluster has no endpoints.
//!
//! A reload that changes how a cluster resolves or connects (its `dns`, `health_check`,
//! protocol or TLS) starts a new discovery, but from the previous one's addresses and
//! members ([`Seed`]): the cluster keeps serving them until the new resolver's first answer,
//! and every endpoint that stays keeps its state (its connections and checker too, when what
//! they depend on is unchanged). Only a gateway that starts has no endpoints until its names
//! first resolve.

use crate::body::Body;
use crate::config::model::Endpoint;
use crate::upstream::endpoint::EndpointState;
use crate::upstream::health::Checker;
use crate::upstream::policy::Dns;
use crate::upstream::pool::Connections;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// One discovered endpoint: the configured endpoint it came from (by index) and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Resolved {
    pub(crate) configured: usize,
    pub(crate) address: SocketAddr,
}

/// What an endpoint keeps for as long as its address stays discovered.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) state: Arc<EndpointState>,
    pub(crate) connections: Arc<Connections<Body>>,
    pub(crate) checker: Option<Arc<Checker>>,
}

/// The members by address, shared by every runtime that follows the same discovery.
pub(crate) type Members = Mutex<HashMap<Resolved, Member>>;

/// A cluster's discovery: the resolver task, the current addresses and the members.
pub(crate) struct Discovery {
    pub(crate) addresses: watch::Receiver<Arc<Vec<Resolved>>>,
    pub(crate) members: Members,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What a discovery replacing another (after a reload) starts from: the addresses the old
/// one had found and their members.
#[derive(Default)]
pub(crate) struct Seed {
    addresses: Vec<Resolved>,
    members: HashMap<Resolved, Member>,
}

/// What of an old discovery's members a new one keeps, besides their state.
pub(crate) struct Keep {
    /// The protocol and TLS settings are unchanged: the open connections stay usable.
    pub(crate) connections: bool,
    /// So are the health check's settings: the checkers go on (with their connections).
    pub(crate) checkers: bool,
    /// The new cluster has health checks; without, a carried endpoint is not held to an
    /// old verdict.
    pub(crate) checked: bool,
}

impl Discovery {
    /// Start resolving `endpoints` (IP literals are passed through as they are), serving
    /// `seed`'s addresses until the first answer.
    pub(crate) fn start(
        cluster: &str,
        endpoints: &[Endpoint],
        settings: &Dns,
        seed: Seed,
    ) -> Discovery {
        let (publish, addresses) = watch::channel(Arc::new(seed.addresses.clone()));
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(
                runtime
                    .spawn(resolve(
                        cluster.to_string(),
                        endpoints.to_vec(),
                        settings.clone(),
                        seed.addresses,
                        publish,
                    ))
                    .abort_handle(),
            ),
            Err(_) => {
                tracing::warn!(cluster, "no runtime to resolve endpoints on");
                None
            }
        };
        Discovery {
            addresses,
            members: Mutex::new(seed.members),
            task,
        }
    }

    /// What a discovery of `endpoints` replacing this one (made for `previous_endpoints`)
    /// starts from: the current addresses of the names both resolve, with their members.
    pub(crate) fn seed(
        &self,
        previous_endpoints: &[Endpoint],
        endpoints: &[Endpoint],
        keep: &Keep,
    ) -> Seed {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seed = Seed::default();
        for old in self.addresses.borrow().iter() {
            let Some(configured) = previous_endpoints
                .get(old.configured)
                .and_then(|name| endpoints.iter().position(|e| e == name))
            else {
                continue;
            };
            let resolved = Resolved {
                configured,
                address: old.address,
            };
            seed.addresses.push(resolved);
            let Some(member) = members.get(old) else {
                continue;
            };
            if !keep.checked {
                member.state.set_healthy(true);
            }
            seed.members.insert(
                resolved,
                Member {
                    state: member.state.clone(),
                    connections: if keep.connections {
                        member.connections.clone()
                    } else {
                        Arc::default()
                    },
                    checker: member.checker.clone().filter(|_| keep.checkers),
                },
            );
        }
        // The order the resolver publishes in, so its first answer compares equal.
        seed.addresses.sort_unstable();
        seed
    }

    /// The member for `resolved`, made by `make` if it is new; members whose address is
    /// not in `current` any more are dropped (their health checkers stop).
    pub(crate) fn members(
        &self,
        current: &[Resolved],
        mut make: impl FnMut(&Resolved) -> Member,
    ) -> Vec<Member> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        members.retain(|resolved, _| current.contains(resolved));
        current
            .iter()
            .map(|resolved| {
                members
                    .entry(*resolved)
                    .or_insert_with(|| make(resolved))
                    .clone()
            })
            .collect()
    }
}

fn resolver(settings: &Dns) -> Result<TokioResolver, hickory_resolver::ResolveError> {
    let mut builder = match &settings.nameservers {
        Some(servers) => {
            let mut group = NameServerConfigGroup::new();
            for server in servers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[server.ip()],
                    server.port(),
                    true,
                ));
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()?,
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // The TTL decides when we ask again; a cache would only answer with what we had.
    options.cache_size = 0;
    Ok(builder.build())
}

/// The server said the name has no addresses: "no such name" or an empty answer. A
/// server failure (SERVFAIL, REFUSED) comes back from the resolver as "no records" too, but
/// says nothing about the name, so it keeps the last addresses like a timeout does.
fn name_has_no_addresses(error: &ResolveError) -> bool {
    matches!(
        error.proto().map(|proto| proto.kind()),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NoError | ResponseCode::NXDomain,
            ..
        })
    )
}

async fn resolve(
    cluster: String,
    endpoints: Vec<Endpoint>,
    settings: Dns,
    seed: Vec<Resolved>,
    publish: watch::Sender<Arc<Vec<Resolved>>>,
) {
    let resolver = match resolver(&settings) {
        Ok(resolver) => resolver,
        Err(error) => {
            tracing::error!(cluster, error = %error, "cannot read the system's DNS configuration; no endpoints are discovered");
            return;
        }
    };
    // The last good answer per configured endpoint, at first the seed's.
    let mut known: Vec<Vec<SocketAddr>> = vec![Vec::new(); endpoints.len()];
    for resolved in seed {
        if let Some(addresses) = known.get_mut(resolved.configured) {
            addresses.push(resolved.address);
        }
    }
    loop {
        let mut next = settings.max_ttl;
        for (index, endpoint) in endpoints.iter().enumerate() {
            if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
                known[index] = vec![SocketAddr::new(ip, endpoint.port)];
                continue;
            }
            match resolver.lookup_ip(endpoint.host.as_str()).await {
                Ok(answer) => {
                    let mut addresses: Vec<SocketAddr> = answer
                        .iter()
                        .map(|ip| SocketAddr::new(ip, endpoint.port))
                        .collect();
                    addresses.sort_unstable();
                    addresses.dedup();
                    let ttl = answer
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now());
                    next = next.min(ttl.clamp(settings.min_ttl, settings.max_ttl));
                    known[index] = addresses;
                }
                Err(error) if name_has_no_addresses(&error) => {
                    tracing::warn!(cluster, name = %endpoint.host, "the name has no addresses");
                    known[index].clear();
                    next = next.min(settings.refresh);
                }
                Err(error) => {
                    tracing::warn!(cluster, name = %endpoint.host, error = %error, "DNS lookup failed; keeping the last addresses");
                    next = next.min(settings.refresh);
                }
            }
        }
        let resolved: Vec<Resolved> = known
            .iter()
            .enumerate()
            .flat_map(|(configured, addresses)| {
                addresses.iter().map(move |address| Resolved {
                    configured,
                    address: *address,
                })
            })
            .collect();
        publish.send_if_modified(|current| {
            if **current == resolved {
                return false;
            }
            tracing::info!(
                cluster,
                endpoints = resolved.len(),
                "discovered endpoints changed"
            );
            *current = Arc::new(resolved);
            true
        });
        tokio::time::sleep(next.max(Duration::from_millis(10))).await;
    }
}
