//! A cluster's balancing and resilience settings: `load_balancing`, `health_check`,
//! `outlier_detection`, `panic_threshold`, `circuit_breaker` and `retry_budget`.
//!
//! Off the request path: checked when a config loads (the serde mirror of the keys, their
//! checks with key paths, the typed settings) and read when a cluster is built. The request
//! path sees only what `upstream/mod.rs` builds from them: the balancer, the endpoint states
//! it filters on, the health checkers and the cluster's limits.

use crate::config::check::Checker;
use crate::config::source::KeyPath;
use http::{HeaderName, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const DEFAULT_CHOICES: usize = 2;
const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);
const DEFAULT_RING_POINTS: usize = 160;
const DEFAULT_MAGLEV_TABLE: usize = 65_537;
const MAX_WEIGHT: u32 = 1000;

const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_CONSECUTIVE_GATEWAY: u32 = 5;
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
const DEFAULT_PANIC_THRESHOLD: u32 = 50;

const DEFAULT_BUDGET_PERCENT: u32 = 20;
const DEFAULT_BUDGET_MIN_RETRIES: u32 = 10;
const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// How a cluster picks an endpoint for a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BalancingPolicy {
    RoundRobin,
    /// Smooth weighted round robin over `weights`.
    WeightedRoundRobin,
    /// Weighted random.
    Random,
    /// The less loaded of `choices` endpoints drawn at random ("power of two choices"); with
    /// `peak_ewma`, load is in-flight requests times the endpoint's peak-EWMA latency.
    LeastRequest {
        choices: usize,
        peak_ewma: Option<Duration>,
    },
    /// The same key goes to the same endpoint while the endpoints stay.
    ConsistentHash {
        key: HashKey,
        table: HashTable,
    },
}

impl BalancingPolicy {
    pub(crate) fn describe(&self) -> String {
        match self {
            BalancingPolicy::RoundRobin => "round robin".into(),
            BalancingPolicy::WeightedRoundRobin => "weighted round robin (smooth)".into(),
            BalancingPolicy::Random => "weighted random".into(),
            BalancingPolicy::LeastRequest { choices, peak_ewma } => match peak_ewma {
                Some(decay) => format!(
                    "least request, best of {choices} random choices, by in-flight requests x \
                     peak-EWMA latency (decay {decay:?})"
                ),
                None => format!(
                    "least request, best of {choices} random choices, by in-flight requests"
                ),
            },
            BalancingPolicy::ConsistentHash { key, table } => {
                format!(
                    "consistent hash on {} ({})",
                    key.describe(),
                    table.describe()
                )
            }
        }
    }
}

/// What part of a request a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HashKey {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
    Path,
    /// The authenticated consumer's id; the client address for anonymous requests.
    Consumer,
}

impl HashKey {
    fn describe(&self) -> String {
        match self {
            HashKey::Header(name) => format!("header {name}"),
            HashKey::Cookie(name) => format!("cookie {name}"),
            HashKey::ClientIp => "the client IP".into(),
            HashKey::Path => "the path".into(),
            HashKey::Consumer => "the consumer (anonymous requests: the client IP)".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HashTable {
    /// Points per unit of weight on the ring.
    Ring { points: usize },
    /// Maglev lookup table of `size` entries (a prime).
    Maglev { size: usize },
}

impl HashTable {
    fn describe(&self) -> String {
        match self {
            HashTable::Ring { points } => format!("ring, {points} points per weight"),
            HashTable::Maglev { size } => format!("maglev, table of {size}"),
        }
    }
}

/// Active health checking of every endpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthCheck {
    pub(crate) kind: HealthCheckKind,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) jitter: Duration,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HealthCheckKind {
    /// `GET path`; healthy when the status is in `statuses` (empty = any 2xx).
    Http {
        path: String,
        host: Option<String>,
        statuses: Vec<StatusCode>,
    },
    /// `grpc.health.v1.Health/Check` for `service`; healthy when SERVING.
    Grpc { service: String },
    /// A TCP connection can be opened.
    Tcp,
}

/// Passive outlier detection: endpoints that keep failing are ejected for a while.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutlierDetection {
    /// Consecutive 5xx responses that eject (0 = never for this reason).
    pub(crate) consecutive_5xx: u32,
    /// Consecutive connect failures, resets and timeouts that eject (0 = never).
    pub(crate) consecutive_gateway_failures: u32,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
}

/// Per-cluster limits; `None` = unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CircuitBreaker {
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_pending_requests: Option<u64>,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_retries: Option<u64>,
}

/// Retries allowed per window: `min_retries` plus `percent` of the requests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RetryBudget {
    pub(crate) percent: u32,
    pub(crate) min_retries: u32,
    pub(crate) window: Duration,
}

/// DNS discovery: endpoints whose host is a name are resolved (A and AAAA) again and again,
/// each address an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dns {
    /// When to resolve again after a failure (and when an answer has no usable TTL).
    pub(crate) refresh: Duration,
    /// Answers' TTLs are held within these bounds.
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    /// `None` = the system's resolver configuration (`/etc/resolv.conf`).
    pub(crate) nameservers: Option<Vec<std::net::SocketAddr>>,
}

/// All of a cluster's balancing and resilience settings, typed and defaulted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterPolicy {
    pub(crate) balancing: BalancingPolicy,
    /// Weight of each endpoint, in the order of `endpoints` (all 1 unless set).
    pub(crate) weights: Vec<u32>,
    pub(crate) slow_start: Option<Duration>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) outlier_detection: Option<OutlierDetection>,
    /// Percent of endpoints that must be usable; below it, all endpoints are used.
    pub(crate) panic_threshold: u32,
    pub(crate) circuit_breaker: CircuitBreaker,
    pub(crate) retry_budget: RetryBudget,
    /// DNS discovery; `None` = endpoints as written (names resolved per connection).
    pub(crate) dns: Option<Dns>,
}

impl ClusterPolicy {
    /// Round robin over the endpoints as written, with every other setting at its default:
    /// the policy of a cluster whose config sets none of the keys.
    pub(crate) fn plain() -> ClusterPolicy {
        ClusterPolicy {
            balancing: BalancingPolicy::RoundRobin,
            weights: Vec::new(),
            slow_start: None,
            health_check: None,
            outlier_detection: None,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            circuit_breaker: CircuitBreaker::default(),
            retry_budget: RetryBudget {
                percent: DEFAULT_BUDGET_PERCENT,
                min_retries: DEFAULT_BUDGET_MIN_RETRIES,
                window: DEFAULT_BUDGET_WINDOW,
            },
            dns: None,
        }
    }

    /// Whether requests must skip endpoints that are unhealthy or ejected.
    pub(crate) fn filters_endpoints(&self) -> bool {
        self.health_check.is_some() || self.outlier_detection.is_some()
    }
}

/// What `portico explain` says about a cluster's balancing and resilience. `explain` runs
/// from the config alone, so eligibility is as the config has it; the live state (health,
/// ejections) is on the admin listener's `/clusters`.
pub(crate) fn describe(cluster: &crate::config::model::Cluster) -> Vec<(&'static str, String)> {
    let policy = &cluster.policy;
    let mut lines = vec![("load balancing", policy.balancing.describe())];
    let weighted: Vec<String> = cluster
        .endpoints
        .iter()
        .zip(&policy.weights)
        .map(|(endpoint, weight)| format!("{endpoint} (weight {weight})"))
        .collect();
    lines.push(("eligible per config", weighted.join(", ")));
    if let Some(slow_start) = policy.slow_start {
        lines.push(("slow start", format!("{slow_start:?}")));
    }
    if let Some(check) = &policy.health_check {
        let kind = match &check.kind {
            HealthCheckKind::Http { path, .. } => format!("HTTP GET {path}"),
            HealthCheckKind::Grpc { service } => format!("gRPC health ({service:?})"),
            HealthCheckKind::Tcp => "TCP connect".into(),
        };
        lines.push((
            "health check",
            format!(
                "{kind} every {:?} (+ up to {:?}), timeout {:?}, unhealthy after {}, healthy \
                 after {}",
                check.interval,
                check.jitter,
                check.timeout,
                check.unhealthy_threshold,
                check.healthy_threshold
            ),
        ));
    }
    if let Some(outlier) = &policy.outlier_detection {
        lines.push((
            "outlier detection",
            format!(
                "eject after {} consecutive 5xx or {} gateway failures, for {:?} growing to \
                 {:?}, at most {} % of endpoints",
                outlier.consecutive_5xx,
                outlier.consecutive_gateway_failures,
                outlier.base_ejection_time,
                outlier.max_ejection_time,
                outlier.max_ejection_percent
            ),
        ));
    }
    if policy.filters_endpoints() {
        lines.push((
            "panic threshold",
            format!(
                "{} % (below it, every endpoint is used)",
                policy.panic_threshold
            ),
        ));
    }
    if let Some(dns) = &policy.dns {
        lines.push((
            "dns discovery",
            format!(
                "names resolved (A and AAAA) when their TTL runs out ({:?}..{:?}), {:?} after a \
                 failure, via {}; each address is an endpoint (live list: /clusters)",
                dns.min_ttl,
                dns.max_ttl,
                dns.refresh,
                match &dns.nameservers {
                    Some(servers) => servers
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "the system's resolver".into(),
                }
            ),
        ));
    }
    let breaker = &policy.circuit_breaker;
    let limits: Vec<String> = [
        ("connections", breaker.max_connections),
        ("pending requests", breaker.max_pending_requests),
        ("requests", breaker.max_requests),
        ("retries", breaker.max_retries),
    ]
    .iter()
    .filter_map(|(name, max)| max.map(|max| format!("{max} {name}")))
    .collect();
    if !limits.is_empty() {
        lines.push(("circuit breaker", limits.join(", ")));
    }
    lines
}

/// `load_balancing` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadBalancingFile {
    /// `round_robin` (default), `weighted_round_robin`, `random`, `least_request` or
    /// `consistent_hash`.
    pub(crate) policy: Option<String>,
    /// Endpoint (as written in `endpoints`) → weight 1..=1000. Default 1 each.
    pub(crate) weights: Option<BTreeMap<String, u32>>,
    /// least_request: endpoints drawn per pick. Default 2.
    pub(crate) choices: Option<usize>,
    /// least_request: weigh in-flight requests by peak-EWMA latency. Default false.
    pub(crate) peak_ewma: Option<bool>,
    /// least_request with peak_ewma: how fast old latencies fade. Default `10s`.
    pub(crate) ewma_decay: Option<String>,
    /// consistent_hash: `header:NAME`, `cookie:NAME`, `client_ip`, `consumer` or `path`.
    pub(crate) hash_on: Option<String>,
    /// consistent_hash: `ring` (default) or `maglev`.
    pub(crate) hash_table: Option<String>,
    /// ring: points per unit of weight. Default 160.
    pub(crate) ring_points: Option<usize>,
    /// maglev: table size, a prime. Default 65537.
    pub(crate) maglev_table_size: Option<usize>,
    /// Ramp a new endpoint's share up over this long. Default `0s` (off).
    pub(crate) slow_start: Option<String>,
}

/// `health_check` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckFile {
    /// `http` (default), `grpc` or `tcp`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// http: the path to GET. Default `/healthz`.
    pub(crate) path: Option<String>,
    /// http: the Host header. Default: the cluster's name.
    pub(crate) host: Option<String>,
    /// http: healthy statuses. Default: any 2xx.
    pub(crate) expected_statuses: Option<Vec<u16>>,
    /// grpc: the service name asked about. Default `""` (the whole server).
    pub(crate) service: Option<String>,
    /// Default `10s`.
    pub(crate) interval: Option<String>,
    /// Default `2s`.
    pub(crate) timeout: Option<String>,
    /// Random extra wait before each check, up to this. Default: a tenth of interval.
    pub(crate) jitter: Option<String>,
    /// Default 2.
    pub(crate) healthy_threshold: Option<u32>,
    /// Default 3.
    pub(crate) unhealthy_threshold: Option<u32>,
}

/// `outlier_detection` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutlierDetectionFile {
    /// Default 5; 0 turns this reason off.
    pub(crate) consecutive_5xx: Option<u32>,
    /// Default 5; 0 turns this reason off.
    pub(crate) consecutive_gateway_failures: Option<u32>,
    /// Default `30s`.
    pub(crate) base_ejection_time: Option<String>,
    /// Default `300s`.
    pub(crate) max_ejection_time: Option<String>,
    /// Default 50.
    pub(crate) max_ejection_percent: Option<u32>,
}

/// `circuit_breaker` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitBreakerFile {
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_pending_requests: Option<u64>,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_retries: Option<u64>,
}

/// `dns` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DnsFile {
    /// Default `5s`.
    pub(crate) refresh: Option<String>,
    /// Default `1s`.
    pub(crate) min_ttl: Option<String>,
    /// Default `300s`.
    pub(crate) max_ttl: Option<String>,
    /// `IP:port` of DNS servers. Default: the system's (`/etc/resolv.conf`).
    pub(crate) nameservers: Option<Vec<String>>,
}

/// `retry_budget` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBudgetFile {
    /// Default 20.
    pub(crate) percent: Option<u32>,
    /// Default 10.
    pub(crate) min_retries: Option<u32>,
    /// Default `10s`.
    pub(crate) window: Option<String>,
}

/// The cluster keys this module owns, as written (fields of `ClusterFile`).
pub(crate) struct PolicyFiles<'a> {
    pub(crate) load_balancing: Option<&'a LoadBalancingFile>,
    pub(crate) health_check: Option<&'a HealthCheckFile>,
    pub(crate) outlier_detection: Option<&'a OutlierDetectionFile>,
    pub(crate) panic_threshold: Option<u32>,
    pub(crate) circuit_breaker: Option<&'a CircuitBreakerFile>,
    pub(crate) retry_budget: Option<&'a RetryBudgetFile>,
    pub(crate) dns: Option<&'a DnsFile>,
    /// The cluster speaks HTTP/2 (gRPC health checks need it).
    pub(crate) http2: bool,
}

/// Check a cluster's policy keys (`cluster` is `clusters[i]`; `endpoints` as written) and
/// build the typed settings; `None` once the problems are reported.
pub(crate) fn check(
    files: &PolicyFiles<'_>,
    cluster: &KeyPath,
    endpoints: &[String],
    checker: &mut Checker<'_>,
) -> Option<ClusterPolicy> {
    let default_lb = LoadBalancingFile::default();
    let lb = files.load_balancing.unwrap_or(&default_lb);
    let lb_path = cluster.key("load_balancing");
    let balancing = balancing(lb, &lb_path, checker);
    let weights = weights(lb, &lb_path, endpoints, checker);
    let slow_start = checker
        .duration(
            &lb_path.key("slow_start"),
            lb.slow_start.as_deref(),
            Duration::ZERO,
            true,
        )
        .map(|d| (!d.is_zero()).then_some(d));
    if let (Some(policy), Some(Some(_))) = (&balancing, &slow_start) {
        if matches!(
            policy,
            BalancingPolicy::RoundRobin | BalancingPolicy::ConsistentHash { .. }
        ) {
            checker.report(
                &lb_path.key("slow_start"),
                "slow_start needs a policy that weighs endpoints: weighted_round_robin, random \
                 or least_request",
            );
        }
    }
    if let (Some(policy), Some(weights)) = (&balancing, &weights) {
        let weighted = weights.iter().any(|w| *w != 1);
        if weighted
            && matches!(
                policy,
                BalancingPolicy::RoundRobin | BalancingPolicy::LeastRequest { .. }
            )
        {
            checker.report(
                &lb_path.key("weights"),
                "weights apply to weighted_round_robin, random and consistent_hash; this \
                 policy would ignore them",
            );
        }
    }
    let health_check = match files.health_check {
        None => Some(None),
        Some(file) => {
            health_check(file, &cluster.key("health_check"), files.http2, checker).map(Some)
        }
    };
    let outlier_detection = match files.outlier_detection {
        None => Some(None),
        Some(file) => outlier(file, &cluster.key("outlier_detection"), checker).map(Some),
    };
    let panic_threshold = checker.count(
        &cluster.key("panic_threshold"),
        files.panic_threshold,
        DEFAULT_PANIC_THRESHOLD,
        (0, 100),
    );
    let breaker_file = files.circuit_breaker.cloned().unwrap_or_default();
    let breaker_path = cluster.key("circuit_breaker");
    let mut breaker_ok = true;
    for (key, value) in [
        ("max_connections", breaker_file.max_connections),
        ("max_pending_requests", breaker_file.max_pending_requests),
        ("max_requests", breaker_file.max_requests),
    ] {
        if value == Some(0) {
            checker.report(
                &breaker_path.key(key),
                "must be at least 1 (leave it out for no limit)",
            );
            breaker_ok = false;
        }
    }
    let budget_file = files.retry_budget.cloned().unwrap_or_default();
    let budget_path = cluster.key("retry_budget");
    let percent = checker.count(
        &budget_path.key("percent"),
        budget_file.percent,
        DEFAULT_BUDGET_PERCENT,
        (0, 1000),
    );
    let window = checker.duration(
        &budget_path.key("window"),
        budget_file.window.as_deref(),
        DEFAULT_BUDGET_WINDOW,
        false,
    );
    let dns = match files.dns {
        None => Some(None),
        Some(file) => dns(file, &cluster.key("dns"), endpoints, checker).map(Some),
    };
    Some(ClusterPolicy {
        dns: dns?,
        balancing: balancing?,
        weights: weights?,
        slow_start: slow_start?,
        health_check: health_check?,
        outlier_detection: outlier_detection?,
        panic_threshold: panic_threshold?,
        circuit_breaker: breaker_ok.then_some(CircuitBreaker {
            max_connections: breaker_file.max_connections,
            max_pending_requests: breaker_file.max_pending_requests,
            max_requests: breaker_file.max_requests,
            max_retries: breaker_file.max_retries,
        })?,
        retry_budget: RetryBudget {
            percent: percent?,
            min_retries: budget_file
                .min_retries
                .unwrap_or(DEFAULT_BUDGET_MIN_RETRIES),
            window: window?,
        },
    })
}

fn balancing(
    lb: &LoadBalancingFile,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<BalancingPolicy> {
    let policy = lb.policy.as_deref().unwrap_or("round_robin");
    // Keys that only one policy reads are refused with the others, so a setting never
    // silently does nothing.
    let only = |key: &str, set: bool, policies: &str, checker: &mut Checker<'_>| {
        if set {
            checker.report(
                &path.key(key),
                format!("`{key}` applies only to policy {policies}, not {policy}"),
            );
            false
        } else {
            true
        }
    };
    let least = policy == "least_request";
    let hash = policy == "consistent_hash";
    let mut ok = only(
        "choices",
        lb.choices.is_some() && !least,
        "least_request",
        checker,
    );
    ok &= only(
        "peak_ewma",
        lb.peak_ewma.is_some() && !least,
        "least_request",
        checker,
    );
    ok &= only(
        "ewma_decay",
        lb.ewma_decay.is_some() && !least,
        "least_request",
        checker,
    );
    ok &= only(
        "hash_on",
        lb.hash_on.is_some() && !hash,
        "consistent_hash",
        checker,
    );
    ok &= only(
        "hash_table",
        lb.hash_table.is_some() && !hash,
        "consistent_hash",
        checker,
    );
    ok &= only(
        "ring_points",
        lb.ring_points.is_some() && !hash,
        "consistent_hash",
        checker,
    );
    ok &= only(
        "maglev_table_size",
        lb.maglev_table_size.is_some() && !hash,
        "consistent_hash",
        checker,
    );
    let policy = match policy {
        "round_robin" => BalancingPolicy::RoundRobin,
        "weighted_round_robin" => BalancingPolicy::WeightedRoundRobin,
        "random" => BalancingPolicy::Random,
        "least_request" => {
            let choices =
                checker.count(&path.key("choices"), lb.choices, DEFAULT_CHOICES, (2, 16))?;
            let decay = checker.duration(
                &path.key("ewma_decay"),
                lb.ewma_decay.as_deref(),
                DEFAULT_EWMA_DECAY,
                false,
            )?;
            if lb.ewma_decay.is_some() && lb.peak_ewma != Some(true) {
                checker.report(&path.key("ewma_decay"), "needs `peak_ewma: true`");
                return None;
            }
            BalancingPolicy::LeastRequest {
                choices,
                peak_ewma: (lb.peak_ewma == Some(true)).then_some(decay),
            }
        }
        "consistent_hash" => {
            let Some(text) = lb.hash_on.as_deref() else {
                checker.report(
                    path,
                    "consistent_hash needs `hash_on`: header:NAME, cookie:NAME, client_ip, consumer or \
                     path",
                );
                return None;
            };
            let key = match hash_key(text) {
                Ok(key) => key,
                Err(message) => {
                    checker.report(&path.key("hash_on"), message);
                    return None;
                }
            };
            let table = match lb.hash_table.as_deref().unwrap_or("ring") {
                "ring" => {
                    if lb.maglev_table_size.is_some() {
                        checker.report(
                            &path.key("maglev_table_size"),
                            "applies to `hash_table: maglev` only",
                        );
                        return None;
                    }
                    HashTable::Ring {
                        points: checker.count(
                            &path.key("ring_points"),
                            lb.ring_points,
                            DEFAULT_RING_POINTS,
                            (1, 10_000),
                        )?,
                    }
                }
                "maglev" => {
                    if lb.ring_points.is_some() {
                        checker.report(
                            &path.key("ring_points"),
                            "applies to `hash_table: ring` only",
                        );
                        return None;
                    }
                    let size = checker.count(
                        &path.key("maglev_table_size"),
                        lb.maglev_table_size,
                        DEFAULT_MAGLEV_TABLE,
                        (7, 5_000_011),
                    )?;
                    if !is_prime(size) {
                        checker.report(
                            &path.key("maglev_table_size"),
                            format!("{size} is not a prime (try 65537 or 655373)"),
                        );
                        return None;
                    }
                    HashTable::Maglev { size }
                }
                other => {
                    checker.report(
                        &path.key("hash_table"),
                        format!("unknown hash table {other:?}: expected ring or maglev"),
                    );
                    return None;
                }
            };
            BalancingPolicy::ConsistentHash { key, table }
        }
        other => {
            checker.report(
                &path.key("policy"),
                format!(
                    "unknown policy {other:?}: expected round_robin, weighted_round_robin, \
                     random, least_request or consistent_hash"
                ),
            );
            return None;
        }
    };
    ok.then_some(policy)
}

fn dns(
    file: &DnsFile,
    path: &KeyPath,
    endpoints: &[String],
    checker: &mut Checker<'_>,
) -> Option<Dns> {
    let named = endpoints.iter().any(|text| {
        crate::config::parse_endpoint(text)
            .is_ok_and(|e| e.host.parse::<std::net::IpAddr>().is_err())
    });
    if !named {
        checker.report(
            path,
            "none of the cluster's endpoints is a DNS name: there is nothing to discover",
        );
        return None;
    }
    let refresh = checker.duration(
        &path.key("refresh"),
        file.refresh.as_deref(),
        Duration::from_secs(5),
        false,
    );
    let min_ttl = checker.duration(
        &path.key("min_ttl"),
        file.min_ttl.as_deref(),
        Duration::from_secs(1),
        false,
    );
    let max_ttl = checker.duration(
        &path.key("max_ttl"),
        file.max_ttl.as_deref(),
        Duration::from_secs(300).max(min_ttl.unwrap_or_default()),
        false,
    );
    if let (Some(min), Some(max)) = (min_ttl, max_ttl) {
        if max < min {
            checker.report(
                &path.key("max_ttl"),
                format!("{max:?} is shorter than min_ttl ({min:?})"),
            );
            return None;
        }
    }
    let nameservers = match &file.nameservers {
        None => Some(None),
        Some(list) if list.is_empty() => {
            checker.report(
                &path.key("nameservers"),
                "name at least one server, or leave the key out for the system's",
            );
            None
        }
        Some(list) => {
            let parsed: Vec<Option<std::net::SocketAddr>> = list
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    checker.socket_addr(&path.key("nameservers").index(index), text)
                })
                .collect();
            parsed.into_iter().collect::<Option<Vec<_>>>().map(Some)
        }
    };
    Some(Dns {
        refresh: refresh?,
        min_ttl: min_ttl?,
        max_ttl: max_ttl?,
        nameservers: nameservers?,
    })
}

fn hash_key(text: &str) -> Result<HashKey, String> {
    match text.split_once(':') {
        Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("{name:?} is not a valid header name")),
        Some(("cookie", name)) if !name.trim().is_empty() => {
            Ok(HashKey::Cookie(name.trim().to_string()))
        }
        None if text == "client_ip" => Ok(HashKey::ClientIp),
        None if text == "path" => Ok(HashKey::Path),
        None if text == "consumer" => Ok(HashKey::Consumer),
        _ => Err(format!(
            "unknown hash key {text:?}: expected header:NAME, cookie:NAME, client_ip, \
             consumer or path"
        )),
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn weights(
    lb: &LoadBalancingFile,
    path: &KeyPath,
    endpoints: &[String],
    checker: &mut Checker<'_>,
) -> Option<Vec<u32>> {
    let mut weights = vec![1; endpoints.len()];
    let mut ok = true;
    for (endpoint, weight) in lb.weights.iter().flatten() {
        let key = path.key("weights").key(endpoint);
        match endpoints.iter().position(|e| e == endpoint) {
            None => {
                checker.report_key(
                    &key,
                    format!("{endpoint:?} is not one of the cluster's endpoints"),
                );
                ok = false;
            }
            Some(_) if *weight == 0 || *weight > MAX_WEIGHT => {
                checker.report(
                    &key,
                    format!("{weight} is out of range: must be between 1 and {MAX_WEIGHT}"),
                );
                ok = false;
            }
            Some(index) => weights[index] = *weight,
        }
    }
    ok.then_some(weights)
}

fn health_check(
    file: &HealthCheckFile,
    path: &KeyPath,
    http2: bool,
    checker: &mut Checker<'_>,
) -> Option<HealthCheck> {
    let kind_name = file.kind.as_deref().unwrap_or("http");
    let http_only = [
        ("path", file.path.is_some()),
        ("host", file.host.is_some()),
        ("expected_statuses", file.expected_statuses.is_some()),
    ];
    let mut ok = true;
    for (key, set) in http_only {
        if set && kind_name != "http" {
            checker.report(&path.key(key), "applies to `type: http` only");
            ok = false;
        }
    }
    if file.service.is_some() && kind_name != "grpc" {
        checker.report(&path.key("service"), "applies to `type: grpc` only");
        ok = false;
    }
    let kind = match kind_name {
        "http" => {
            let check_path = file.path.clone().unwrap_or_else(|| "/healthz".into());
            let path_ok = checker
                .literal_path(&path.key("path"), &check_path)
                .is_some();
            let mut statuses = Vec::new();
            for (index, code) in file.expected_statuses.iter().flatten().enumerate() {
                match StatusCode::from_u16(*code) {
                    Ok(status) if (100..600).contains(code) => statuses.push(status),
                    _ => {
                        checker.report(
                            &path.key("expected_statuses").index(index),
                            format!("{code} is not an HTTP status (100..=599)"),
                        );
                        ok = false;
                    }
                }
            }
            if let Some(host) = &file.host {
                if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
                    checker.report(&path.key("host"), format!("{host:?} is not a valid host"));
                    ok = false;
                }
            }
            path_ok.then_some(HealthCheckKind::Http {
                path: check_path,
                host: file.host.clone(),
                statuses,
            })
        }
        "grpc" if !http2 => {
            checker.report(
                &path.key("type"),
                "gRPC health checks need the cluster's `protocol: http2`",
            );
            None
        }
        "grpc" => Some(HealthCheckKind::Grpc {
            service: file.service.clone().unwrap_or_default(),
        }),
        "tcp" => Some(HealthCheckKind::Tcp),
        other => {
            checker.report(
                &path.key("type"),
                format!("unknown health check type {other:?}: expected http, grpc or tcp"),
            );
            None
        }
    };
    let interval = checker.duration(
        &path.key("interval"),
        file.interval.as_deref(),
        DEFAULT_HC_INTERVAL,
        false,
    );
    let timeout = checker.duration(
        &path.key("timeout"),
        file.timeout.as_deref(),
        DEFAULT_HC_TIMEOUT,
        false,
    );
    let jitter = checker.duration(
        &path.key("jitter"),
        file.jitter.as_deref(),
        interval.unwrap_or(DEFAULT_HC_INTERVAL) / 10,
        true,
    );
    let healthy = checker.count(
        &path.key("healthy_threshold"),
        file.healthy_threshold,
        DEFAULT_HEALTHY_THRESHOLD,
        (1, 100),
    );
    let unhealthy = checker.count(
        &path.key("unhealthy_threshold"),
        file.unhealthy_threshold,
        DEFAULT_UNHEALTHY_THRESHOLD,
        (1, 100),
    );
    Some(HealthCheck {
        kind: ok.then_some(kind?)?,
        interval: interval?,
        timeout: timeout?,
        jitter: jitter?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
    })
}

fn outlier(
    file: &OutlierDetectionFile,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<OutlierDetection> {
    let base = checker.duration(
        &path.key("base_ejection_time"),
        file.base_ejection_time.as_deref(),
        DEFAULT_BASE_EJECTION,
        false,
    );
    let max = checker.duration(
        &path.key("max_ejection_time"),
        file.max_ejection_time.as_deref(),
        DEFAULT_MAX_EJECTION.max(base.unwrap_or_default()),
        false,
    );
    if let (Some(base), Some(max)) = (base, max) {
        if max < base {
            checker.report(
                &path.key("max_ejection_time"),
                format!("{max:?} is shorter than base_ejection_time ({base:?})"),
            );
            return None;
        }
    }
    let percent = checker.count(
        &path.key("max_ejection_percent"),
        file.max_ejection_percent,
        DEFAULT_MAX_EJECTION_PERCENT,
        (0, 100),
    );
    Some(OutlierDetection {
        consecutive_5xx: file.consecutive_5xx.unwrap_or(DEFAULT_CONSECUTIVE_5XX),
        consecutive_gateway_failures: file
            .consecutive_gateway_failures
            .unwrap_or(DEFAULT_CONSECUTIVE_GATEWAY),
        base_ejection_time: base?,
        max_ejection_time: max?,
        max_ejection_percent: percent?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_parse() {
        assert_eq!(hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(hash_key("consumer"), Ok(HashKey::Consumer));
        assert_eq!(hash_key("path"), Ok(HashKey::Path));
        assert_eq!(
            hash_key("header:X-User"),
            Ok(HashKey::Header(HeaderName::from_static("x-user")))
        );
        assert_eq!(hash_key("cookie:sid"), Ok(HashKey::Cookie("sid".into())));
        assert!(hash_key("cookie:").is_err());
        assert!(hash_key("query:x").is_err());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(!is_prime(65_536));
        assert!(is_prime(7));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// Round robin with health checks on, and this panic threshold.
    pub(crate) fn policy_with_health(panic_threshold: u32) -> ClusterPolicy {
        ClusterPolicy {
            balancing: BalancingPolicy::RoundRobin,
            weights: Vec::new(),
            slow_start: None,
            health_check: Some(HealthCheck {
                kind: HealthCheckKind::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                jitter: Duration::ZERO,
                healthy_threshold: 1,
                unhealthy_threshold: 1,
            }),
            outlier_detection: None,
            panic_threshold,
            circuit_breaker: CircuitBreaker::default(),
            retry_budget: RetryBudget {
                percent: 20,
                min_retries: 10,
                window: Duration::from_secs(10),
            },
            dns: None,
        }
    }
}

#[cfg(test)]
mod reference {
    use super::*;

    /// Every key of the cluster policy sections is in the reference config.
    #[test]
    fn the_reference_config_documents_every_cluster_policy_key() {
        let reference = include_str!("../../config/portico.yaml");
        let mut keys: Vec<String> = [
            "load_balancing",
            "health_check",
            "outlier_detection",
            "panic_threshold",
            "circuit_breaker",
            "retry_budget",
            "dns",
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        for value in [
            serde_json::to_value(LoadBalancingFile::default()),
            serde_json::to_value(HealthCheckFile::default()),
            serde_json::to_value(OutlierDetectionFile::default()),
            serde_json::to_value(CircuitBreakerFile::default()),
            serde_json::to_value(RetryBudgetFile::default()),
            serde_json::to_value(DnsFile::default()),
        ]
        .into_iter()
        .flatten()
        {
            if let serde_json::Value::Object(fields) = value {
                keys.extend(fields.keys().cloned());
            }
        }
        for key in keys {
            assert!(reference.contains(&format!(" {key}:")), "{key}");
        }
    }
}
