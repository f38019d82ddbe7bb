//! Resilience end to end: retries (what is retried, what never is), the retry budget, the
//! circuit breaker's fast 503, and a backend killed under load. Killed between requests, a
//! backend costs nothing even without retries (pooled connections that closed and refused
//! connects fail over before the request leaves); killed holding a request, only a retry
//! saves it (`a_retry_saves_the_get_a_backend_dies_holding`, which fails without `retry`).

use crate::balancing::Client;
use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A backend that counts the requests it gets (bodies read whole) and answers `status`.
async fn counting_backend(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = backend(move |req| {
        let counter = counter.clone();
        async move {
            let _ = req.into_body().collect().await;
            counter.fetch_add(1, Relaxed);
            http::Response::builder()
                .status(status)
                .body(full("answer"))
                .expect("response")
        }
    })
    .await;
    (addr, hits)
}

fn admin_config(rest: &str) -> String {
    config(&format!("admin: {{ address: 127.0.0.1:0 }}\n{rest}"))
}

#[tokio::test]
async fn the_retry_budget_caps_amplification_against_an_all_failing_cluster() {
    let (a, a_hits) = counting_backend(503).await;
    let (b, b_hits) = counting_backend(503).await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: down
    endpoints: ["{a}", "{b}"]
    retry_budget: {{ percent: 20, min_retries: 5, window: 1h }}
routes:
  - {{ cluster: down, retry: {{ retries: 3, backoff_base: 0s, backoff_max: 0s }} }}
"#
    )))
    .await;
    let mut client = Client::new(gw.addr).await;
    for _ in 0..100 {
        assert_eq!(
            client.get("/", &[]).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let hits = a_hits.load(Relaxed) + b_hits.load(Relaxed);
    // Without the budget: 400 (each request tried 4 times). With it: the 100 requests, 5
    // retries whatever the traffic, and 20 % of the requests.
    assert!((105..=125).contains(&hits), "{hits} hits for 100 requests");
    assert!(
        gw.metric("portico_upstream_retry_budget_exhausted_total{cluster=\"down\"}")
            .await
            > 0
    );
}

#[tokio::test]
async fn a_retry_goes_to_another_endpoint_and_hides_the_failure() {
    let (bad, bad_hits) = counting_backend(503).await;
    let good = echo_backend("good").await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: mixed
    endpoints: ["{bad}", "{good}"]
    load_balancing: {{ policy: random }}
    retry_budget: {{ percent: 100 }}
routes:
  - {{ cluster: mixed, retry: {{ retries: 1, on: [503], backoff_base: 0s, backoff_max: 0s }} }}
"#
    )))
    .await;
    let mut client = Client::new(gw.addr).await;
    for _ in 0..40 {
        assert_eq!(client.get("/", &[]).await.status, StatusCode::OK);
    }
    // A random pick sends about half the first tries to `bad`; one retry is enough for
    // each of them because a retry avoids the endpoint that already failed (a random pick
    // would draw `bad` again half the time).
    let first_tries_to_bad = bad_hits.load(Relaxed) as u64;
    assert!(first_tries_to_bad > 0);
    let series =
        format!("portico_upstream_endpoint_retries_total{{cluster=\"mixed\",endpoint=\"{good}\"}}");
    assert_eq!(gw.metric(&series).await, first_tries_to_bad);
}

/// A POST to `path` with `body`, with a Content-Length or streamed in chunks.
fn post(path: &str, body: Vec<u8>, streamed: bool) -> Request<BoxBody> {
    let builder = Request::post(path).header("host", "h");
    if streamed {
        let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = body
            .chunks(512)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let stream = futures_util::stream::iter(chunks);
        let body = http_body_util::StreamBody::new(stream)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .boxed();
        builder.body(body).expect("request")
    } else {
        builder.body(full(body)).expect("request")
    }
}

#[tokio::test]
async fn a_small_body_is_replayed_and_a_large_or_streamed_one_is_sent_once() {
    let (down, hits) = counting_backend(503).await;
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: down, endpoints: ["{down}"] }}
routes:
  - match: {{ path_prefix: /opted-in }}
    cluster: down
    retry: {{ retries: 2, non_idempotent: true, max_buffered_body: 1KiB, backoff_base: 0s, backoff_max: 0s }}
  - match: {{ path_prefix: /idempotent-only }}
    cluster: down
    retry: {{ retries: 2, backoff_base: 0s, backoff_max: 0s }}
"#
    )))
    .await;
    let cases = [
        // (path, body size, streamed, tries)
        ("/opted-in", 100, false, 3),
        ("/opted-in", 4096, false, 1),
        ("/opted-in", 100, true, 1),
        ("/idempotent-only", 100, false, 1),
    ];
    for (path, size, streamed, tries) in cases {
        hits.store(0, Relaxed);
        let reply = send(gw.addr, post(path, vec![b'x'; size], streamed)).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            hits.load(Relaxed),
            tries,
            "{path}, {size} bytes, streamed: {streamed}"
        );
    }
    // A GET is idempotent: retried.
    hits.store(0, Relaxed);
    get(gw.addr, "h", "/idempotent-only").await;
    assert_eq!(hits.load(Relaxed), 3);
}

#[tokio::test]
async fn a_full_circuit_breaker_answers_503_at_once() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (gate, notify) = (release.clone(), arrived.clone());
    let held = backend(move |_req| {
        let (gate, notify) = (gate.clone(), notify.clone());
        async move {
            notify.notify_one();
            let _permit = gate.acquire().await;
            http::Response::new(full("released"))
        }
    })
    .await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: small
    endpoints: ["{held}"]
    circuit_breaker: {{ max_requests: 1 }}
routes:
  - {{ cluster: small }}
"#
    )))
    .await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { get(addr, "h", "/").await });
    within("the first request at the backend", arrived.notified()).await;
    // The second request is refused while the first is still held: no queue.
    let second = get(gw.addr, "h", "/").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.error_code(), "upstream_overflow");
    assert!(second.text().contains("max_requests"), "{}", second.text());
    assert_eq!(
        gw.metric("portico_upstream_overflows_total{cluster=\"small\",limit=\"max_requests\"}")
            .await,
        1
    );
    release.add_permits(1);
    let first = within("the first answer", first).await.expect("task");
    assert_eq!(first.status, StatusCode::OK);
    // The slot is free again once the first response has ended.
    release.add_permits(1);
    assert_eq!(get(gw.addr, "h", "/").await.status, StatusCode::OK);
}

/// An echo backend that can be killed: its listener and every open connection close.
struct Killable {
    addr: SocketAddr,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Killable {
    async fn start(name: &'static str, addr: SocketAddr) -> Killable {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let spawner = tasks.clone();
        tasks.lock().expect("tasks").spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-backend", name)
                            .body(full(name))
                            .expect("response"),
                    )
                });
                spawner.lock().expect("tasks").spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Killable { addr, tasks }
    }

    fn kill(&self) {
        self.tasks.lock().expect("tasks").abort_all();
    }
}

#[tokio::test]
async fn a_backend_killed_mid_load_costs_no_idempotent_get() {
    let backends = [
        Killable::start("a", "127.0.0.1:0".parse().expect("addr")).await,
        Killable::start("b", "127.0.0.1:0".parse().expect("addr")).await,
        Killable::start("c", "127.0.0.1:0".parse().expect("addr")).await,
    ];
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: three
    endpoints: [{}]
    outlier_detection: {{ consecutive_gateway_failures: 1, base_ejection_time: 1h }}
routes:
  - {{ cluster: three, retry: {{ retries: 2, backoff_base: 1ms, backoff_max: 5ms }} }}
"#,
        list.join(", ")
    )))
    .await;
    // Four clients with keep-alive connections (the gateway pools connections to every
    // backend), 150 GETs each; b dies a third of the way through.
    let killed = Arc::new(tokio::sync::Notify::new());
    let mut clients = JoinSet::new();
    for client in 0..4 {
        let (addr, killed) = (gw.addr, killed.clone());
        clients.spawn(async move {
            let mut connection = Client::new(addr).await;
            let mut errors = Vec::new();
            for i in 0..150 {
                if client == 0 && i == 50 {
                    killed.notified().await;
                }
                let reply = connection.get("/", &[]).await;
                if reply.status != StatusCode::OK {
                    errors.push(format!("{} {}", reply.status, reply.text()));
                }
            }
            errors
        });
    }
    // Let some traffic reach b first, then kill it (client 0 waits for the kill).
    let b_requests = format!(
        "portico_upstream_endpoint_requests_total{{cluster=\"three\",endpoint=\"{}\"}}",
        backends[1].addr
    );
    within("traffic to b", async {
        while gw.metric(&b_requests).await < 20 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    backends[1].kill();
    killed.notify_one();
    let mut errors = Vec::new();
    while let Some(result) = within("the clients", clients.join_next()).await {
        errors.extend(result.expect("client"));
    }
    assert!(errors.is_empty(), "{} errors: {errors:?}", errors.len());
}

/// The access log line of the request with `request_id` in the file at `path`.
async fn log_line(path: &std::path::Path, request_id: &str) -> serde_json::Value {
    let line = within("the access log line", async {
        loop {
            let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(request_id)) {
                return line.to_string();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    serde_json::from_str(&line).expect("a JSON line")
}

#[tokio::test]
async fn a_slow_try_is_cut_by_the_per_try_timeout_and_the_access_log_counts_the_tries() {
    // `silent` takes requests and never answers; `good` answers.
    let silent = backend(|_req| async {
        std::future::pending::<()>().await;
        http::Response::new(full(""))
    })
    .await;
    let good = echo_backend("good").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let gw = TestGateway::start(&format!(
        r#"access_log: {{ path: "{}" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
clusters:
  - {{ name: mixed, endpoints: ["{silent}", "{good}"] }}
routes:
  - cluster: mixed
    timeout: 10s
    retry: {{ retries: 1, on: [timeout], per_try_timeout: 100ms, backoff_base: 0s, backoff_max: 0s }}
"#,
        log.display()
    ))
    .await;
    let mut client = Client::new(gw.addr).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        // Round robin: each first try goes to `silent` (a retry takes the next turn).
        let reply = client.get("/", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["x-backend"], "good");
        ids.push(
            reply.headers["x-request-id"]
                .to_str()
                .expect("id")
                .to_string(),
        );
    }
    let mut attempts = Vec::new();
    for id in &ids {
        attempts.push(
            log_line(&log, id).await["attempts"]
                .as_u64()
                .expect("attempts"),
        );
    }
    assert_eq!(attempts, [2, 2]);
}

#[tokio::test]
async fn a_retry_saves_the_get_a_backend_dies_holding() {
    let a = Killable::start("a", "127.0.0.1:0".parse().expect("addr")).await;
    // b takes requests and never answers: the test kills it (listener and connections)
    // once it holds one, so that request's connection ends without a response.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b = listener.local_addr().expect("addr");
    let b_tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
    let spawner = b_tasks.clone();
    b_tasks.lock().expect("tasks").spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let arrived = arrived_tx.clone();
            let service = hyper::service::service_fn(move |_req| {
                let arrived = arrived.clone();
                async move {
                    let _ = arrived.send(());
                    std::future::pending::<()>().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("never")))
                }
            });
            spawner.lock().expect("tasks").spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: two
    endpoints: ["{}", "{b}"]
routes:
  - {{ cluster: two, retry: {{ retries: 1, backoff_base: 1ms, backoff_max: 1ms }} }}
"#,
        a.addr
    )))
    .await;
    let killer = tokio::spawn(async move {
        arrived.recv().await;
        b_tasks.lock().expect("tasks").abort_all();
    });
    // Round robin: one of the first two GETs goes to b, which dies holding it. The request
    // was sent, so only a retry (to a) can answer it.
    let mut client = Client::new(gw.addr).await;
    for _ in 0..6 {
        let reply = client.get("/", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.headers["x-backend"], "a");
    }
    within("b killed", killer).await.expect("killer");
    let retries = format!(
        "portico_upstream_endpoint_retries_total{{cluster=\"two\",endpoint=\"{}\"}}",
        a.addr
    );
    assert_eq!(gw.metric(&retries).await, 1);
}
