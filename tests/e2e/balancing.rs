//! Load balancing end to end: each policy's spread over real backends, consistent hashing
//! across a reload that adds an endpoint, active health checks (HTTP, gRPC against a real
//! grpcio health server, TCP), passive outlier ejection, the panic threshold, and what the
//! admin listener and `explain` show.

use crate::common::*;
use http::{Request, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A keep-alive client: requests one after another on one connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<BoxBody>,
}

impl Client {
    pub async fn new(addr: SocketAddr) -> Client {
        Client {
            sender: h1_connection(addr).await,
        }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(path).header("host", "h");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(full("")).expect("request")).await
    }

    pub async fn send(&mut self, req: Request<BoxBody>) -> Reply {
        within("a response", async {
            self.sender.ready().await.expect("connection ready");
            let response = self.sender.send_request(req).await.expect("response");
            collect(response).await
        })
        .await
    }
}

/// Which backend (`x-backend`) answered each of `count` GETs of `path`.
async fn spread(gw: &TestGateway, path: &str, count: usize) -> HashMap<String, usize> {
    let mut client = Client::new(gw.addr).await;
    let mut seen = HashMap::new();
    for _ in 0..count {
        let reply = client.get(path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let name = reply.headers["x-backend"]
            .to_str()
            .expect("name")
            .to_string();
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

/// Poll the admin listener until `series` has `value` (health checks and ejections happen
/// on their own clock).
pub async fn wait_series(gw: &TestGateway, series: &str, value: u64) {
    within(&format!("{series} to be {value}"), async {
        loop {
            if gw.metric(series).await == value {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

fn endpoint_series(name: &str, cluster: &str, endpoint: SocketAddr) -> String {
    format!("{name}{{cluster=\"{cluster}\",endpoint=\"{endpoint}\"}}")
}

fn admin_config(rest: &str) -> String {
    config(&format!("admin: {{ address: 127.0.0.1:0 }}\n{rest}"))
}

#[tokio::test]
async fn each_policy_spreads_requests_as_configured() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: rr, endpoints: ["{a}", "{b}", "{c}"] }}
  - name: wrr
    endpoints: ["{a}", "{b}", "{c}"]
    load_balancing: {{ policy: weighted_round_robin, weights: {{ "{b}": 2, "{c}": 3 }} }}
  - name: random
    endpoints: ["{a}", "{b}", "{c}"]
    load_balancing: {{ policy: random }}
  - name: p2c
    endpoints: ["{a}", "{b}", "{c}"]
    load_balancing: {{ policy: least_request }}
routes:
  - {{ match: {{ path_prefix: /rr }}, cluster: rr }}
  - {{ match: {{ path_prefix: /wrr }}, cluster: wrr }}
  - {{ match: {{ path_prefix: /random }}, cluster: random }}
  - {{ match: {{ path_prefix: /p2c }}, cluster: p2c }}
"#
    )))
    .await;
    let rr = spread(&gw, "/rr", 300).await;
    assert_eq!((rr["a"], rr["b"], rr["c"]), (100, 100, 100), "{rr:?}");
    // Smooth weighted round robin is exact over whole cycles.
    let wrr = spread(&gw, "/wrr", 600).await;
    assert_eq!((wrr["a"], wrr["b"], wrr["c"]), (100, 200, 300), "{wrr:?}");
    // Random: expected 300 each; more than six standard deviations of slack.
    let random = spread(&gw, "/random", 900).await;
    for name in ["a", "b", "c"] {
        let n = random.get(name).copied().unwrap_or(0);
        assert!((210..=390).contains(&n), "{random:?}");
    }
    // Idle endpoints (one request at a time) share least-request picks.
    let p2c = spread(&gw, "/p2c", 600).await;
    for name in ["a", "b", "c"] {
        assert!(p2c.get(name).copied().unwrap_or(0) >= 60, "{p2c:?}");
    }
}

#[tokio::test]
async fn least_request_keeps_away_from_an_endpoint_with_requests_in_flight() {
    // `held` never answers: each request it takes stays in flight until the test ends.
    let arrived = Arc::new(tokio::sync::Notify::new());
    let held_count = Arc::new(AtomicUsize::new(0));
    let (notify, count) = (arrived.clone(), held_count.clone());
    let held = backend(move |_req| {
        let (notify, count) = (notify.clone(), count.clone());
        async move {
            count.fetch_add(1, Relaxed);
            notify.notify_one();
            std::future::pending::<()>().await;
            http::Response::new(full(""))
        }
    })
    .await;
    let fast = echo_backend("fast").await;
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - name: p2c
    endpoints: ["{held}", "{fast}"]
    load_balancing: {{ policy: least_request }}
routes:
  - {{ cluster: p2c }}
"#
    )))
    .await;
    let mut answered = 0;
    let mut stuck = Vec::new();
    for _ in 0..40 {
        let addr = gw.addr;
        let mut request = tokio::spawn(async move { get(addr, "h", "/").await });
        // Either the fast backend answers, or the held one has the request.
        tokio::select! {
            reply = &mut request => {
                assert_eq!(reply.expect("request").status, StatusCode::OK);
                answered += 1;
            }
            _ = within("the held backend", arrived.notified()) => stuck.push(request),
        }
    }
    // Round robin would have sent 20 to the held backend; least request sends it at most
    // the first (a tie), then always prefers the endpoint with nothing in flight.
    assert!(
        held_count.load(Relaxed) <= 1,
        "{}",
        held_count.load(Relaxed)
    );
    assert!(answered >= 39);
    for request in stuck {
        request.abort();
    }
}

/// The backend (`x-backend`) each of `users` lands on, by `x-user` header.
async fn owners(gw: &TestGateway, users: usize) -> Vec<String> {
    let mut client = Client::new(gw.addr).await;
    let mut owners = Vec::new();
    for user in 0..users {
        let id = format!("user-{user}");
        let reply = client.get("/", &[("x-user", &id)]).await;
        owners.push(
            reply.headers["x-backend"]
                .to_str()
                .expect("name")
                .to_string(),
        );
    }
    owners
}

fn hash_config(path: &std::path::Path, endpoints: &[SocketAddr], table: &str) {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    std::fs::write(
        path,
        config(&format!(
            r#"runtime: {{ watch_interval: 0s }}
clusters:
  - name: sticky
    endpoints: [{}]
    load_balancing: {{ policy: consistent_hash, hash_on: "header:x-user", hash_table: {table} }}
routes:
  - {{ cluster: sticky }}
"#,
            list.join(", ")
        )),
    )
    .expect("write config");
}

#[tokio::test]
async fn consistent_hashing_sticks_and_an_added_endpoint_moves_about_one_in_n_keys() {
    for table in ["ring", "maglev"] {
        let backends = [
            echo_backend("a").await,
            echo_backend("b").await,
            echo_backend("c").await,
            echo_backend("d").await,
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portico.yaml");
        hash_config(&path, &backends[..3], table);
        let gw = TestGateway::start_file(path.clone()).await;

        let before = owners(&gw, 300).await;
        assert_eq!(
            before,
            owners(&gw, 300).await,
            "{table}: the same key, the same endpoint"
        );
        for name in ["a", "b", "c"] {
            let share = before.iter().filter(|o| *o == name).count();
            assert!(
                (60..=140).contains(&share),
                "{table}: {name} has {share} of 300"
            );
        }

        hash_config(&path, &backends, table);
        within("a reload", gw.reload.reload())
            .await
            .expect("reload");
        let after = owners(&gw, 300).await;
        let moved: Vec<usize> = (0..300).filter(|i| before[*i] != after[*i]).collect();
        // Ideal: a quarter of the keys, all to the new endpoint (modulo hashing: 3/4).
        assert!(
            (40..=110).contains(&moved.len()),
            "{table}: {} of 300 keys moved",
            moved.len()
        );
        // A ring moves keys only to the new endpoint; Maglev trades a little of that for an
        // even table and may shuffle a few keys between the old ones.
        let elsewhere = moved.iter().filter(|i| after[**i] != "d").count();
        let tolerated = if table == "ring" { 0 } else { 10 };
        assert!(
            elsewhere <= tolerated,
            "{table}: {elsewhere} keys moved between old endpoints"
        );
    }
}

/// A backend named `name` whose `/healthz` answers `health` (a status code) and whose
/// other paths answer `status`.
async fn switchable_backend(
    name: &'static str,
    health: Arc<AtomicU16>,
    status: Arc<AtomicU16>,
) -> SocketAddr {
    backend(move |req| {
        let (health, status) = (health.clone(), status.clone());
        async move {
            let code = if req.uri().path() == "/healthz" {
                health.load(Relaxed)
            } else {
                status.load(Relaxed)
            };
            http::Response::builder()
                .status(code)
                .header("x-backend", name)
                .body(full(name))
                .expect("response")
        }
    })
    .await
}

#[tokio::test]
async fn an_http_health_check_takes_an_endpoint_out_and_brings_it_back() {
    let ok = || Arc::new(AtomicU16::new(200));
    let a = switchable_backend("a", ok(), ok()).await;
    let b_health = ok();
    let b = switchable_backend("b", b_health.clone(), ok()).await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: checked
    endpoints: ["{a}", "{b}"]
    panic_threshold: 0
    health_check: {{ path: /healthz, interval: 20ms, jitter: 0s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }}
routes:
  - {{ cluster: checked }}
"#
    )))
    .await;
    let healthy_b = endpoint_series("portico_upstream_endpoint_healthy", "checked", b);
    let passed = format!(
        "portico_upstream_health_checks_total{{cluster=\"checked\",endpoint=\"{b}\",result=\"passed\"}}"
    );
    within("a passed check", async {
        while gw.metric(&passed).await == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(spread(&gw, "/", 10).await["b"], 5);

    b_health.store(503, Relaxed);
    wait_series(&gw, &healthy_b, 0).await;
    let only_a = spread(&gw, "/", 20).await;
    assert_eq!(only_a.get("b"), None, "{only_a:?}");
    let clusters = get(gw.admin.expect("admin"), "admin", "/clusters")
        .await
        .json();
    let endpoint = &clusters["clusters"][0]["endpoints"][1];
    assert_eq!(endpoint["address"], b.to_string());
    assert_eq!(endpoint["healthy"], false);
    assert_eq!(endpoint["eligible"], false);

    b_health.store(200, Relaxed);
    wait_series(&gw, &healthy_b, 1).await;
    assert_eq!(spread(&gw, "/", 10).await["b"], 5);
}

#[tokio::test]
async fn a_tcp_health_check_follows_a_listener_that_goes_and_comes_back() {
    let a = echo_backend("a").await;
    // A plain listener that accepts: all a TCP check needs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = listener.local_addr().expect("addr");
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: tcp
    endpoints: ["{a}", "{b}"]
    health_check: {{ type: tcp, interval: 20ms, jitter: 0s, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - {{ cluster: tcp }}
"#
    )))
    .await;
    let healthy_b = endpoint_series("portico_upstream_endpoint_healthy", "tcp", b);
    drop(listener);
    wait_series(&gw, &healthy_b, 0).await;
    let _listener = std::net::TcpListener::bind(b).expect("bind the same port again");
    wait_series(&gw, &healthy_b, 1).await;
}

#[tokio::test]
async fn a_grpc_health_check_reads_a_real_grpc_health_server() {
    // grpcio's own health service (grpcio-health-checking, installed by .ci/run), driven by
    // lines on its stdin: the status the server reports.
    let script = r#"
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
port = server.add_insecure_port("127.0.0.1:0")
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.start()
print(port, flush=True)
for line in sys.stdin:
    status = getattr(health_pb2.HealthCheckResponse, line.strip())
    servicer.set("", status)
    print("set", line.strip(), flush=True)
"#;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port: u16 = within("the gRPC server's port", lines.next_line())
        .await
        .expect("read")
        .expect("a line (is grpcio-health-checking installed? .ci/run installs it)")
        .trim()
        .parse()
        .expect("a port");
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: grpc
    endpoints: ["{server}"]
    protocol: http2
    panic_threshold: 0
    health_check: {{ type: grpc, interval: 20ms, jitter: 0s, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - {{ cluster: grpc }}
"#
    )))
    .await;
    let healthy = endpoint_series("portico_upstream_endpoint_healthy", "grpc", server);
    let passed = format!(
        "portico_upstream_health_checks_total{{cluster=\"grpc\",endpoint=\"{server}\",result=\"passed\"}}"
    );
    within("a passed check", async {
        while gw.metric(&passed).await == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for (status, expected) in [("NOT_SERVING", 0), ("SERVING", 1)] {
        stdin
            .write_all(format!("{status}\n").as_bytes())
            .await
            .expect("write");
        within("the server's acknowledgement", lines.next_line())
            .await
            .expect("read");
        wait_series(&gw, &healthy, expected).await;
    }
}

#[tokio::test]
async fn a_backend_answering_503_is_ejected_and_comes_back() {
    let ok = || Arc::new(AtomicU16::new(200));
    let a = switchable_backend("a", ok(), ok()).await;
    let b_status = Arc::new(AtomicU16::new(503));
    let b = switchable_backend("b", ok(), b_status.clone()).await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: flaky
    endpoints: ["{a}", "{b}"]
    outlier_detection: {{ consecutive_5xx: 3, base_ejection_time: 300ms, max_ejection_percent: 50 }}
routes:
  - {{ cluster: flaky }}
"#
    )))
    .await;
    let ejected = endpoint_series("portico_upstream_endpoint_ejected", "flaky", b);
    let mut client = Client::new(gw.addr).await;
    let mut failures = 0;
    // Round robin: b gets every other request until its third 503 in a row ejects it.
    for _ in 0..6 {
        if client.get("/", &[]).await.status == StatusCode::SERVICE_UNAVAILABLE {
            failures += 1;
        }
    }
    assert_eq!(failures, 3);
    assert_eq!(gw.metric(&ejected).await, 1);
    let during = spread(&gw, "/", 20).await;
    assert_eq!(during.get("b"), None, "{during:?}");
    assert_eq!(
        gw.metric(&endpoint_series(
            "portico_upstream_endpoint_ejections_total",
            "flaky",
            b
        ))
        .await,
        1
    );
    // Fixed: once its ejection ends it gets traffic again.
    b_status.store(200, Relaxed);
    wait_series(&gw, &ejected, 0).await;
    let after = spread(&gw, "/", 10).await;
    assert_eq!(after.get("b"), Some(&5), "{after:?}");
}

#[tokio::test]
async fn a_cluster_never_ejects_or_checks_itself_to_zero() {
    let failing = || Arc::new(AtomicU16::new(503));
    let a = switchable_backend("a", failing(), failing()).await;
    let b = switchable_backend("b", failing(), failing()).await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: ejecting
    endpoints: ["{a}", "{b}"]
    outlier_detection: {{ consecutive_5xx: 2, base_ejection_time: 1h, max_ejection_percent: 50 }}
  - name: panicking
    endpoints: ["{a}", "{b}"]
    panic_threshold: 50
    health_check: {{ interval: 20ms, jitter: 0s, unhealthy_threshold: 1 }}
  - name: strict
    endpoints: ["{a}", "{b}"]
    panic_threshold: 0
    health_check: {{ interval: 20ms, jitter: 0s, unhealthy_threshold: 1 }}
routes:
  - {{ match: {{ path_prefix: /ejecting }}, cluster: ejecting }}
  - {{ match: {{ path_prefix: /panicking }}, cluster: panicking }}
  - {{ match: {{ path_prefix: /strict }}, cluster: strict }}
"#
    )))
    .await;
    // Every answer is a 503, but only half the cluster may be ejected: the other endpoint
    // keeps getting the traffic.
    let mut client = Client::new(gw.addr).await;
    for _ in 0..20 {
        client.get("/ejecting", &[]).await;
    }
    let a_ejected = gw
        .metric(&endpoint_series(
            "portico_upstream_endpoint_ejected",
            "ejecting",
            a,
        ))
        .await;
    let b_ejected = gw
        .metric(&endpoint_series(
            "portico_upstream_endpoint_ejected",
            "ejecting",
            b,
        ))
        .await;
    assert_eq!(a_ejected + b_ejected, 1, "max_ejection_percent: 50");

    // Both endpoints fail their health checks. Below the panic threshold every endpoint is
    // used (the request reaches a backend and gets its 503); with no panic threshold the
    // cluster has nothing to offer.
    for cluster in ["panicking", "strict"] {
        for endpoint in [a, b] {
            wait_series(
                &gw,
                &endpoint_series("portico_upstream_endpoint_healthy", cluster, endpoint),
                0,
            )
            .await;
        }
    }
    let panicking = client.get("/panicking", &[]).await;
    assert_eq!(panicking.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        panicking.headers.contains_key("x-backend"),
        "the backend answered"
    );
    let strict = client.get("/strict", &[]).await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(strict.error_code(), "no_healthy_upstream");
}

#[tokio::test]
async fn explain_shows_the_policy_and_the_endpoints_eligible_per_config() {
    let config = portico::config::load_str(
        &config(
            r#"clusters:
  - name: users
    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]
    load_balancing: { policy: consistent_hash, hash_on: "cookie:sid", hash_table: maglev }
    health_check: { type: tcp }
routes:
  - { cluster: users }
"#,
        ),
        "test.yaml",
    )
    .expect("valid");
    let text = portico::explain::explain(&config, "GET", "http://h/x", &[]).expect("explained");
    assert!(
        text.contains("load balancing:     consistent hash on cookie sid (maglev, table of 65537)"),
        "{text}"
    );
    assert!(
        text.contains("eligible per config: 127.0.0.1:9001 (weight 1), 127.0.0.1:9002 (weight 1)"),
        "{text}"
    );
    assert!(text.contains("health check:       TCP connect"), "{text}");
}

#[tokio::test]
async fn an_endpoints_health_survives_a_reload_that_keeps_it() {
    let ok = || Arc::new(AtomicU16::new(200));
    let a = switchable_backend("a", ok(), ok()).await;
    let b_health = Arc::new(AtomicU16::new(503));
    let b = switchable_backend("b", b_health.clone(), ok()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let write = |timeout: &str| {
        std::fs::write(
            &path,
            admin_config(&format!(
                r#"runtime: {{ watch_interval: 0s }}
clusters:
  - name: checked
    endpoints: ["{a}", "{b}"]
    panic_threshold: 0
    health_check: {{ interval: 1h, jitter: 0s, unhealthy_threshold: 1 }}
routes:
  - {{ cluster: checked, timeout: {timeout} }}
"#
            )),
        )
        .expect("write config");
    };
    write("5s");
    let gw = TestGateway::start_file(path.clone()).await;
    let healthy_b = endpoint_series("portico_upstream_endpoint_healthy", "checked", b);
    // The first check runs at once; the next would be an hour later.
    wait_series(&gw, &healthy_b, 0).await;
    b_health.store(200, Relaxed);

    write("6s");
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    // The same checker (no new check for an hour) and the same state: still unhealthy,
    // still skipped.
    assert_eq!(gw.metric(&healthy_b).await, 0);
    let checks = format!(
        "portico_upstream_health_checks_total{{cluster=\"checked\",endpoint=\"{b}\",result=\"failed\"}}"
    );
    assert_eq!(gw.metric(&checks).await, 1);
    assert_eq!(spread(&gw, "/", 6).await.get("b"), None);
}

#[tokio::test]
async fn a_health_checker_stops_when_its_endpoint_leaves_the_config() {
    let a = echo_backend("a").await;
    // `b` reports every connection that closes: the checker keeps one open between checks.
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let checks = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let b = listener.local_addr().expect("addr");
    let counter = checks.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (closed, counter) = (closed_tx.clone(), counter.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Relaxed);
                    async { Ok::<_, std::convert::Infallible>(http::Response::new(full("ok"))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                let _ = closed.send(());
            });
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let write = |endpoints: &str| {
        std::fs::write(
            &path,
            admin_config(&format!(
                r#"runtime: {{ watch_interval: 0s }}
clusters:
  - name: checked
    endpoints: [{endpoints}]
    health_check: {{ interval: 10ms, jitter: 0s }}
routes:
  - {{ cluster: checked }}
"#
            )),
        )
        .expect("write config");
    };
    write(&format!("\"{a}\", \"{b}\""));
    let gw = TestGateway::start_file(path.clone()).await;
    within("checks of b", async {
        while checks.load(Relaxed) < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    write(&format!("\"{a}\""));
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    // The old runtime goes, and with it b's checker and the connection it kept.
    within("b's checker to stop", closed.recv())
        .await
        .expect("a closed connection");
    let series = endpoint_series("portico_upstream_endpoint_healthy", "checked", b);
    let text = metrics(gw.admin.expect("admin")).await;
    assert!(!text.contains(&series), "b is gone from /metrics");
}

#[tokio::test]
async fn hashing_on_the_client_uses_its_address_before_rewrites_and_its_consumer() {
    let (a, b, c) = (
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    );
    let consumers: String = (0..8)
        .map(|i| {
            format!(
                "  - {{ id: c{i}, api_keys: [\"{}\"] }}\n",
                portico::keys::digest(&format!("pk_test_c{i}_0123456789"))
            )
        })
        .collect();
    let gw = TestGateway::start(&config(&format!(
        r#"consumers:
{consumers}auth_providers:
  - {{ name: keys, api_key: {{ header: x-api-key }} }}
trusted_proxies: {{ addresses: [127.0.0.1] }}
clusters:
  - name: by_consumer
    endpoints: ["{a}", "{b}", "{c}"]
    load_balancing: {{ policy: consistent_hash, hash_on: consumer }}
  - name: by_ip
    endpoints: ["{a}", "{b}", "{c}"]
    load_balancing: {{ policy: consistent_hash, hash_on: client_ip }}
routes:
  - match: {{ path_prefix: /keyed }}
    cluster: by_consumer
    auth: {{ providers: [keys] }}
  - match: {{ path_prefix: /open }}
    cluster: by_consumer
  - match: {{ path_prefix: /ip }}
    cluster: by_ip
    request_headers: {{ set: {{ x-forwarded-for: 198.51.100.1 }} }}
"#
    )))
    .await;
    let mut client = Client::new(gw.addr).await;
    let mut backend_of = async |path: &str, headers: &[(&str, &str)]| {
        let reply = client.get(path, headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.headers["x-backend"]
            .to_str()
            .expect("name")
            .to_string()
    };

    // By address: the client the trusted proxy (the test, on 127.0.0.1) names, not the
    // value the route writes into X-Forwarded-For.
    for path in ["/ip", "/open"] {
        let mut seen = std::collections::HashSet::new();
        for i in 0..12 {
            let client_ip = format!("203.0.113.{i}");
            let first = backend_of(path, &[("x-forwarded-for", &client_ip)]).await;
            let again = backend_of(path, &[("x-forwarded-for", &client_ip)]).await;
            assert_eq!(first, again, "{path}: {client_ip} sticks to its endpoint");
            seen.insert(first);
        }
        assert!(seen.len() > 1, "{path}: clients spread, got {seen:?}");
    }

    // By consumer: wherever the consumer calls from, the same endpoint.
    let mut seen = std::collections::HashSet::new();
    for i in 0..8 {
        let key = format!("pk_test_c{i}_0123456789");
        let mut endpoints = std::collections::HashSet::new();
        for from in 0..4 {
            let client_ip = format!("203.0.113.{from}");
            endpoints.insert(
                backend_of(
                    "/keyed",
                    &[("x-api-key", &key), ("x-forwarded-for", &client_ip)],
                )
                .await,
            );
        }
        assert_eq!(endpoints.len(), 1, "consumer c{i} sticks: {endpoints:?}");
        seen.extend(endpoints);
    }
    assert!(seen.len() > 1, "consumers spread, got {seen:?}");
}
