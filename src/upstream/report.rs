//! What the admin listener shows about clusters: `/clusters` (JSON, each endpoint's live
//! state) and the per-endpoint series of `/metrics`.
//!
//! Off the request path: read on demand from the current runtime's clusters; it only loads
//! atomics the request path and the health checkers keep up to date.

use super::endpoint::now_ms;
use super::limits::Limit;
use super::Cluster;
use crate::metrics::escape;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

impl Cluster {
    /// The cluster and each endpoint's state, for `/clusters`.
    pub(crate) fn status(&self) -> Value {
        let now = now_ms();
        let set = self.endpoints();
        let candidates = self.candidates(&set);
        let endpoints: Vec<Value> = set
            .pools
            .iter()
            .enumerate()
            .map(|(index, pool)| {
                let state = &pool.state;
                let counters = &state.counters;
                json!({
                    "address": pool.label.as_ref(),
                    "weight": set.weights.get(index).copied().unwrap_or(1),
                    "healthy": state.is_healthy(),
                    "ejected": state.is_ejected(now),
                    "ejected_for_ms": state.ejected_for(now),
                    "eligible": candidates.is_usable(index),
                    "active_requests": state.active(),
                    "latency_ewma_ms": state.latency() / 1e6,
                    "requests": counters.requests.load(Relaxed),
                    "ejections": counters.ejections.load(Relaxed),
                    "retries": counters.retries.load(Relaxed),
                    "health_checks_passed": counters.health_checks_passed.load(Relaxed),
                    "health_checks_failed": counters.health_checks_failed.load(Relaxed),
                })
            })
            .collect();
        let overflows: serde_json::Map<String, Value> = Limit::ALL
            .iter()
            .map(|limit| {
                (
                    limit.key().to_string(),
                    json!(self.limits.overflows(*limit)),
                )
            })
            .collect();
        json!({
            "name": self.name.as_ref(),
            "policy": self.policy.balancing.describe(),
            "panic": self.policy.filters_endpoints()
                && candidates.usable_count() == set.pools.len()
                && set.pools.iter().any(|e| !e.state.is_usable(now)),
            "open_connections": self.limits.current(Limit::Connections),
            // Requests (in flight and in total) are counted per endpoint for clusters that use
            // any balancing or resilience feature; a plain round-robin cluster does not pay
            // for it.
            "load_tracked": self.tracks_load,
            "active_requests": set.pools.iter().map(|e| e.state.active()).sum::<u64>(),
            "overflows": overflows,
            "retry_budget_exhausted": self.limits.budget_exhausted.load(Relaxed),
            "endpoints": endpoints,
        })
    }
}

/// The per-endpoint and per-cluster-limit series of `clusters`, in the text format.
pub(crate) fn render_metrics(clusters: &[std::sync::Arc<Cluster>], out: &mut String) {
    let now = now_ms();
    type Series = (&'static str, &'static str, &'static str);
    let endpoint_series: [Series; 6] = [
        (
            "portico_upstream_endpoint_healthy",
            "gauge",
            "1 while the endpoint passes its active health checks.",
        ),
        (
            "portico_upstream_endpoint_ejected",
            "gauge",
            "1 while outlier detection has the endpoint ejected.",
        ),
        (
            "portico_upstream_endpoint_active_requests",
            "gauge",
            "Requests sent to the endpoint whose response has not ended (counted for clusters with a balancing or resilience setting).",
        ),
        (
            "portico_upstream_endpoint_ejections_total",
            "counter",
            "Ejections of the endpoint by outlier detection.",
        ),
        (
            "portico_upstream_endpoint_retries_total",
            "counter",
            "Retries sent to the endpoint.",
        ),
        (
            "portico_upstream_endpoint_requests_total",
            "counter",
            "Requests sent to the endpoint (each attempt counts; counted for clusters with a balancing or resilience setting).",
        ),
    ];
    for (name, kind, help) in endpoint_series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for cluster in clusters {
            for pool in &cluster.endpoints().pools {
                let state = &pool.state;
                let value = match name {
                    "portico_upstream_endpoint_healthy" => u64::from(state.is_healthy()),
                    "portico_upstream_endpoint_ejected" => u64::from(state.is_ejected(now)),
                    "portico_upstream_endpoint_active_requests" => state.active(),
                    "portico_upstream_endpoint_ejections_total" => {
                        state.counters.ejections.load(Relaxed)
                    }
                    "portico_upstream_endpoint_retries_total" => {
                        state.counters.retries.load(Relaxed)
                    }
                    _ => state.counters.requests.load(Relaxed),
                };
                let _ = writeln!(
                    out,
                    "{name}{{cluster=\"{}\",endpoint=\"{}\"}} {value}",
                    escape(&cluster.name),
                    escape(&pool.label)
                );
            }
        }
    }
    let name = "portico_upstream_health_checks_total";
    let _ = writeln!(
        out,
        "# HELP {name} Active health checks by endpoint and result.\n# TYPE {name} counter"
    );
    for cluster in clusters {
        for pool in &cluster.endpoints().pools {
            let counters = &pool.state.counters;
            for (result, value) in [
                ("passed", counters.health_checks_passed.load(Relaxed)),
                ("failed", counters.health_checks_failed.load(Relaxed)),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{cluster=\"{}\",endpoint=\"{}\",result=\"{result}\"}} {value}",
                    escape(&cluster.name),
                    escape(&pool.label)
                );
            }
        }
    }
    let name = "portico_upstream_overflows_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests refused at once because a circuit-breaker limit was reached.\n# TYPE {name} counter"
    );
    for cluster in clusters {
        for limit in Limit::ALL {
            let _ = writeln!(
                out,
                "{name}{{cluster=\"{}\",limit=\"{}\"}} {}",
                escape(&cluster.name),
                limit.key(),
                cluster.limits.overflows(limit)
            );
        }
    }
    let name = "portico_upstream_retry_budget_exhausted_total";
    let _ = writeln!(
        out,
        "# HELP {name} Retries not made because the cluster's retry budget was spent.\n# TYPE {name} counter"
    );
    for cluster in clusters {
        let _ = writeln!(
            out,
            "{name}{{cluster=\"{}\"}} {}",
            escape(&cluster.name),
            cluster.limits.budget_exhausted.load(Relaxed)
        );
    }
    let name = "portico_upstream_open_connections";
    let _ = writeln!(
        out,
        "# HELP {name} Open connections to the cluster's endpoints.\n# TYPE {name} gauge"
    );
    for cluster in clusters {
        let _ = writeln!(
            out,
            "{name}{{cluster=\"{}\"}} {}",
            escape(&cluster.name),
            cluster.limits.current(Limit::Connections)
        );
    }
}
