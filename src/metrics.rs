//! Prometheus metrics: a small lock-free registry and its text rendering.
//!
//! Counters are plain atomics owned by the thing they count (a route, a cluster, a listener)
//! and handed out as `Arc`s when the runtime is built, so the request path only does a few
//! relaxed atomic adds — no label lookups, no locks. Series are keyed by name and survive a
//! config reload: a route that keeps its name keeps its counters. The admin listener's
//! `/metrics` renders everything in the Prometheus text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Latency bucket upper bounds, in microseconds (0.5ms … 10s).
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Cumulative-on-render latency histogram.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&bound| us <= bound) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Per-route request counters by status class, and latency.
#[derive(Default)]
pub(crate) struct RouteMetrics {
    /// Index 0 = 1xx … 4 = 5xx.
    by_class: [AtomicU64; 5],
    latency: Histogram,
}

impl RouteMetrics {
    pub(crate) fn observe(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        self.latency.observe(elapsed);
    }
}

#[derive(Default)]
pub(crate) struct ClusterMetrics {
    pub connect_errors: AtomicU64,
    pub connections_opened: AtomicU64,
    /// TLS handshakes with an endpoint that failed (untrusted or wrong-name certificate…).
    pub tls_errors: AtomicU64,
}

/// How a downstream TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeOutcome {
    Success,
    /// The client spoke something other than TLS (usually plaintext HTTP).
    NotTls,
    /// Not finished within the listener's handshake timeout.
    Timeout,
    /// `unknown_sni: refuse` and no certificate covers the requested name.
    UnknownSni,
    /// Client certificates are required and none was presented.
    NoClientCert,
    /// The client certificate did not verify (untrusted, expired, wrong usage…).
    BadClientCert,
    /// No common protocol version, cipher suite, group or ALPN protocol.
    Incompatible,
    /// The client aborted with an alert (typically: it does not trust our certificate).
    ClientAlert,
    /// Malformed or unexpected handshake messages.
    BadMessage,
    /// The client closed the connection (or it failed) mid-handshake.
    Closed,
    Other,
}

impl HandshakeOutcome {
    pub(crate) const ALL: [HandshakeOutcome; 11] = [
        HandshakeOutcome::Success,
        HandshakeOutcome::NotTls,
        HandshakeOutcome::Timeout,
        HandshakeOutcome::UnknownSni,
        HandshakeOutcome::NoClientCert,
        HandshakeOutcome::BadClientCert,
        HandshakeOutcome::Incompatible,
        HandshakeOutcome::ClientAlert,
        HandshakeOutcome::BadMessage,
        HandshakeOutcome::Closed,
        HandshakeOutcome::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            HandshakeOutcome::Success => "success",
            HandshakeOutcome::NotTls => "not_tls",
            HandshakeOutcome::Timeout => "timeout",
            HandshakeOutcome::UnknownSni => "unknown_sni",
            HandshakeOutcome::NoClientCert => "no_client_cert",
            HandshakeOutcome::BadClientCert => "bad_client_cert",
            HandshakeOutcome::Incompatible => "incompatible",
            HandshakeOutcome::ClientAlert => "client_alert",
            HandshakeOutcome::BadMessage => "bad_message",
            HandshakeOutcome::Closed => "closed",
            HandshakeOutcome::Other => "other",
        }
    }
}

/// One certificate a TLS listener serves, for the expiry gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateExpiry {
    /// Position in the listener's `certificates` list.
    pub index: usize,
    /// The first DNS name, else the subject.
    pub name: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// Per TLS listener: handshakes by outcome, negotiated versions, certificate reloads and
/// the expiry of the certificates currently served.
#[derive(Default)]
pub(crate) struct TlsMetrics {
    handshakes: [AtomicU64; HandshakeOutcome::ALL.len()],
    tls12: AtomicU64,
    tls13: AtomicU64,
    reload_success: AtomicU64,
    reload_failure: AtomicU64,
    expiry: Mutex<Vec<CertificateExpiry>>,
}

impl TlsMetrics {
    pub(crate) fn handshake(&self, outcome: HandshakeOutcome) {
        if let Some(i) = HandshakeOutcome::ALL.iter().position(|o| *o == outcome) {
            self.handshakes[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn handshakes(&self, outcome: HandshakeOutcome) -> u64 {
        HandshakeOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.handshakes[i].load(Relaxed))
    }

    /// `tls13`: TLS 1.3, else 1.2 (nothing older is offered).
    pub(crate) fn negotiated(&self, tls13: bool) {
        if tls13 {
            self.tls13.fetch_add(1, Relaxed);
        } else {
            self.tls12.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn reloaded(&self, certificates: Vec<CertificateExpiry>) {
        self.reload_success.fetch_add(1, Relaxed);
        *self.expiry.lock().unwrap_or_else(PoisonError::into_inner) = certificates;
    }

    pub(crate) fn reload_refused(&self) {
        self.reload_failure.fetch_add(1, Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct ListenerMetrics {
    pub active_connections: AtomicI64,
    pub accepted_connections: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
    /// Idle HTTP/1 keep-alive connections parked (holding no HTTP buffers).
    pub parked_connections: AtomicI64,
}

/// A family of labelled counters that a concern registers (auth outcomes, key-set
/// refreshes, …): the concern owns its counters like every other, and the registry renders
/// each family after the core series.
pub(crate) struct CounterFamily {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
}

/// `portico_auth_total{route, outcome}`.
pub(crate) static AUTH_OUTCOMES: CounterFamily = CounterFamily {
    name: "portico_auth_total",
    help: "Authentication and authorisation outcomes by route.",
};

/// `portico_jwks_refreshes_total{provider, outcome}`.
pub(crate) static JWKS_REFRESHES: CounterFamily = CounterFamily {
    name: "portico_jwks_refreshes_total",
    help: "Fetches of identity providers' key sets by provider and outcome.",
};

/// `portico_consumer_reloads_total{outcome}`.
pub(crate) static CONSUMER_RELOADS: CounterFamily = CounterFamily {
    name: "portico_consumer_reloads_total",
    help: "Reloads of the consumers file on its own, by outcome.",
};

/// `portico_token_requests_total{outcome}`.
pub(crate) static TOKEN_REQUESTS: CounterFamily = CounterFamily {
    name: "portico_token_requests_total",
    help: "Requests to the gateway's OAuth2 token endpoint by outcome.",
};

/// `portico_faults_injected_total{route, fault}`.
pub(crate) static FAULTS_INJECTED: CounterFamily = CounterFamily {
    name: "portico_faults_injected_total",
    help: "Faults injected by routes' fault policies, by route and fault (delay, abort).",
};

/// `portico_mirror_requests_total{route, outcome}`.
pub(crate) static MIRROR_REQUESTS: CounterFamily = CounterFamily {
    name: "portico_mirror_requests_total",
    help: "Requests mirrored to shadow clusters, by route and outcome (sent, dropped, skipped, \
           failed).",
};

/// `portico_rate_limit_decisions_total{route, outcome}`.
pub(crate) static RATE_LIMIT_DECISIONS: CounterFamily = CounterFamily {
    name: "portico_rate_limit_decisions_total",
    help: "Rate-limit decisions by route and outcome (allowed, refused, fail_open, fail_closed).",
};

/// `portico_rate_limit_refusals_total{route, policy}`.
pub(crate) static RATE_LIMIT_REFUSALS: CounterFamily = CounterFamily {
    name: "portico_rate_limit_refusals_total",
    help: "Requests refused with 429, by route and the limit that refused them.",
};

/// `portico_rate_limit_keys_total{scope, policy, event}`.
pub(crate) static RATE_LIMIT_KEYS: CounterFamily = CounterFamily {
    name: "portico_rate_limit_keys_total",
    help: "Local limiters' keys evicted (idle) or sent to the shared overflow bucket (store full).",
};

/// `portico_rate_limit_redis_calls_total{outcome}`.
pub(crate) static RATE_LIMIT_REDIS_CALLS: CounterFamily = CounterFamily {
    name: "portico_rate_limit_redis_calls_total",
    help: "Rate-limit decisions asked of Redis, by outcome (ok, error, timeout).",
};

/// `portico_rate_limit_redis_latency_total{le}`.
pub(crate) static RATE_LIMIT_REDIS_LATENCY: CounterFamily = CounterFamily {
    name: "portico_rate_limit_redis_latency_total",
    help: "Redis rate-limit calls that took at most `le` seconds (cumulative buckets).",
};

/// `portico_concurrency_refusals_total{route}`.
pub(crate) static CONCURRENCY_REFUSALS: CounterFamily = CounterFamily {
    name: "portico_concurrency_refusals_total",
    help: "Requests refused because the route's concurrency limit was reached.",
};

type Family = (&'static str, BTreeMap<String, Arc<AtomicU64>>);

/// The process-wide registry. Cheap to clone (an `Arc` inside).
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    clusters: Mutex<BTreeMap<String, Arc<ClusterMetrics>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerMetrics>>>,
    tls: Mutex<BTreeMap<String, Arc<TlsMetrics>>>,
    local_responses: Mutex<BTreeMap<&'static str, Arc<AtomicU64>>>,
    /// Concerns' counter families by name: the help text, and the counters by rendered
    /// labels.
    families: Mutex<BTreeMap<&'static str, Family>>,
    reload_success: AtomicU64,
    reload_failure: AtomicU64,
    access_log_dropped: AtomicU64,
}

fn get_or_create<K: Ord + Clone, V: Default>(map: &Mutex<BTreeMap<K, Arc<V>>>, key: &K) -> Arc<V> {
    // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(key.clone()).or_default().clone()
}

impl Metrics {
    pub(crate) fn route(&self, name: &str) -> Arc<RouteMetrics> {
        get_or_create(&self.inner.routes, &name.to_string())
    }

    pub(crate) fn cluster(&self, name: &str) -> Arc<ClusterMetrics> {
        get_or_create(&self.inner.clusters, &name.to_string())
    }

    pub(crate) fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        get_or_create(&self.inner.listeners, &name.to_string())
    }

    pub(crate) fn tls(&self, listener: &str) -> Arc<TlsMetrics> {
        get_or_create(&self.inner.tls, &listener.to_string())
    }

    /// A response the gateway answered itself, by error code (`route_not_found`, …).
    pub(crate) fn local_response(&self, code: &'static str) -> Arc<AtomicU64> {
        get_or_create(&self.inner.local_responses, &code)
    }

    /// The counter of `family` with these labels (values are escaped here).
    pub(crate) fn counter(
        &self,
        family: &'static CounterFamily,
        labels: &[(&str, &str)],
    ) -> Arc<AtomicU64> {
        let rendered = labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect::<Vec<_>>()
            .join(",");
        let mut families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (_, counters) = families
            .entry(family.name)
            .or_insert_with(|| (family.help, BTreeMap::new()));
        counters.entry(rendered).or_default().clone()
    }

    pub(crate) fn reload_succeeded(&self) {
        self.inner.reload_success.fetch_add(1, Relaxed);
    }

    pub(crate) fn reload_failed(&self) {
        self.inner.reload_failure.fetch_add(1, Relaxed);
    }

    pub(crate) fn access_log_dropped(&self) {
        self.inner.access_log_dropped.fetch_add(1, Relaxed);
    }

    /// Render every series in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let r = &self.inner;

        let routes = r
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        header(
            &mut out,
            "portico_requests_total",
            "counter",
            "Requests by route and status class.",
        );
        for (name, m) in &routes {
            for (i, counter) in m.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "portico_requests_total{{route=\"{}\",class=\"{}xx\"}} {}",
                    escape(name),
                    i + 1,
                    counter.load(Relaxed)
                );
            }
        }
        header(
            &mut out,
            "portico_request_duration_seconds",
            "histogram",
            "Time from request head to the end of the response, by route.",
        );
        for (name, m) in &routes {
            m.latency.render(
                &mut out,
                "portico_request_duration_seconds",
                &format!("route=\"{}\"", escape(name)),
            );
        }

        let clusters = r
            .clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        header(
            &mut out,
            "portico_upstream_connect_errors_total",
            "counter",
            "Failed connection attempts to upstream endpoints.",
        );
        for (name, m) in &clusters {
            let _ = writeln!(
                out,
                "portico_upstream_connect_errors_total{{cluster=\"{}\"}} {}",
                escape(name),
                m.connect_errors.load(Relaxed)
            );
        }
        header(
            &mut out,
            "portico_upstream_connections_opened_total",
            "counter",
            "Connections opened to upstream endpoints.",
        );
        for (name, m) in &clusters {
            let _ = writeln!(
                out,
                "portico_upstream_connections_opened_total{{cluster=\"{}\"}} {}",
                escape(name),
                m.connections_opened.load(Relaxed)
            );
        }

        let listeners = r
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        listener_series(
            &mut out,
            &listeners,
            ("portico_active_connections", "gauge"),
            "Open downstream connections.",
            |m| m.active_connections.load(Relaxed),
        );
        listener_series(
            &mut out,
            &listeners,
            ("portico_parked_connections", "gauge"),
            "Idle HTTP/1.1 keep-alive connections parked: open, holding no HTTP buffers until the client's next request.",
            |m| m.parked_connections.load(Relaxed),
        );
        listener_series(
            &mut out,
            &listeners,
            ("portico_accepted_connections_total", "counter"),
            "Downstream connections accepted.",
            |m| m.accepted_connections.load(Relaxed),
        );
        header(
            &mut out,
            "portico_connections_closed_total",
            "counter",
            "Downstream connections closed by the gateway, by reason.",
        );
        for (name, m) in &listeners {
            let _ = writeln!(
                out,
                "portico_connections_closed_total{{listener=\"{}\",reason=\"header_timeout\"}} {}",
                escape(name),
                m.header_timeouts.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "portico_connections_closed_total{{listener=\"{}\",reason=\"idle\"}} {}",
                escape(name),
                m.idle_closed.load(Relaxed)
            );
        }

        header(
            &mut out,
            "portico_upstream_tls_errors_total",
            "counter",
            "Failed TLS handshakes with upstream endpoints.",
        );
        for (name, m) in &clusters {
            let _ = writeln!(
                out,
                "portico_upstream_tls_errors_total{{cluster=\"{}\"}} {}",
                escape(name),
                m.tls_errors.load(Relaxed)
            );
        }

        let tls = r.tls.lock().unwrap_or_else(PoisonError::into_inner).clone();
        render_tls(&mut out, &tls);

        let local = r
            .local_responses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        header(
            &mut out,
            "portico_local_responses_total",
            "counter",
            "Responses the gateway answered itself, by error code.",
        );
        for (code, counter) in &local {
            let _ = writeln!(
                out,
                "portico_local_responses_total{{code=\"{code}\"}} {}",
                counter.load(Relaxed)
            );
        }

        header(
            &mut out,
            "portico_config_reloads_total",
            "counter",
            "Configuration reloads by outcome.",
        );
        let _ = writeln!(
            out,
            "portico_config_reloads_total{{outcome=\"success\"}} {}",
            r.reload_success.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "portico_config_reloads_total{{outcome=\"failure\"}} {}",
            r.reload_failure.load(Relaxed)
        );
        header(
            &mut out,
            "portico_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer could not keep up.",
        );
        let _ = writeln!(
            out,
            "portico_access_log_dropped_total {}",
            r.access_log_dropped.load(Relaxed)
        );

        let families = r
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (name, (help, counters)) in &families {
            header(&mut out, name, "counter", help);
            for (labels, counter) in counters {
                let _ = writeln!(out, "{name}{{{labels}}} {}", counter.load(Relaxed));
            }
        }
        out
    }
}

fn render_tls(out: &mut String, listeners: &BTreeMap<String, Arc<TlsMetrics>>) {
    header(
        out,
        "portico_tls_handshakes_total",
        "counter",
        "Downstream TLS handshakes by listener and outcome.",
    );
    for (name, m) in listeners {
        for outcome in HandshakeOutcome::ALL {
            let _ = writeln!(
                out,
                "portico_tls_handshakes_total{{listener=\"{}\",outcome=\"{}\"}} {}",
                escape(name),
                outcome.label(),
                m.handshakes(outcome)
            );
        }
    }
    header(
        out,
        "portico_tls_versions_total",
        "counter",
        "Successful downstream TLS handshakes by negotiated protocol version.",
    );
    for (name, m) in listeners {
        for (version, counter) in [("TLSv1.2", &m.tls12), ("TLSv1.3", &m.tls13)] {
            let _ = writeln!(
                out,
                "portico_tls_versions_total{{listener=\"{}\",version=\"{version}\"}} {}",
                escape(name),
                counter.load(Relaxed)
            );
        }
    }
    header(
        out,
        "portico_tls_certificate_reloads_total",
        "counter",
        "Certificate loads (start, file change, SIGHUP) by listener and outcome.",
    );
    for (name, m) in listeners {
        for (outcome, counter) in [
            ("success", &m.reload_success),
            ("failure", &m.reload_failure),
        ] {
            let _ = writeln!(
                out,
                "portico_tls_certificate_reloads_total{{listener=\"{}\",outcome=\"{outcome}\"}} {}",
                escape(name),
                counter.load(Relaxed)
            );
        }
    }
    header(
        out,
        "portico_tls_certificate_expiry_seconds",
        "gauge",
        "notAfter of each certificate a listener serves, as a Unix timestamp.",
    );
    for (name, m) in listeners {
        let expiry = m
            .expiry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for cert in expiry {
            let _ = writeln!(
                out,
                "portico_tls_certificate_expiry_seconds{{listener=\"{}\",certificate=\"{}\",name=\"{}\"}} {}",
                escape(name),
                cert.index,
                escape(&cert.name),
                cert.not_after
            );
        }
    }
}

/// A family with one series per listener.
fn listener_series<V: std::fmt::Display>(
    out: &mut String,
    listeners: &BTreeMap<String, Arc<ListenerMetrics>>,
    (name, kind): (&str, &str),
    help: &str,
    value: impl Fn(&ListenerMetrics) -> V,
) {
    header(out, name, kind, help);
    for (listener, metrics) in listeners {
        let _ = writeln!(
            out,
            "{name}{{listener=\"{}\"}} {}",
            escape(listener),
            value(metrics)
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value per the exposition format.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_class_and_survives_lookup_again() {
        let metrics = Metrics::default();
        metrics
            .route("users")
            .observe(200, Duration::from_millis(3));
        metrics
            .route("users")
            .observe(503, Duration::from_millis(30));
        let text = metrics.render();
        assert!(text.contains("portico_requests_total{route=\"users\",class=\"2xx\"} 1"));
        assert!(text.contains("portico_requests_total{route=\"users\",class=\"5xx\"} 1"));
        assert!(text
            .contains("portico_request_duration_seconds_bucket{route=\"users\",le=\"0.005\"} 1"));
        assert!(text.contains("portico_request_duration_seconds_count{route=\"users\"} 2"));
    }

    #[test]
    fn tls_series() {
        let metrics = Metrics::default();
        let tls = metrics.tls("secure");
        tls.handshake(HandshakeOutcome::Success);
        tls.handshake(HandshakeOutcome::NotTls);
        tls.negotiated(true);
        tls.reloaded(vec![CertificateExpiry {
            index: 0,
            name: "api.example.com".into(),
            not_after: 1_900_000_000,
        }]);
        let text = metrics.render();
        assert!(text
            .contains("portico_tls_handshakes_total{listener=\"secure\",outcome=\"not_tls\"} 1"));
        assert!(
            text.contains("portico_tls_versions_total{listener=\"secure\",version=\"TLSv1.3\"} 1")
        );
        assert!(text.contains("portico_tls_certificate_expiry_seconds{listener=\"secure\",certificate=\"0\",name=\"api.example.com\"} 1900000000"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.route("a\"b").observe(200, Duration::ZERO);
        assert!(metrics.render().contains("route=\"a\\\"b\""));
    }
}
