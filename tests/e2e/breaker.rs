//! The circuit breaker end to end: each limit (`max_connections`, `max_pending_requests`,
//! `max_retries`) answers what is over it at once — never a queue — and the gateway's own
//! health probes are not counted by it, so a full breaker never takes a healthy endpoint out.

use crate::common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// A backend that holds `/hold` requests until `release` has a permit (saying on
/// `arrived` that one came) and answers anything else at once.
async fn holding_backend() -> (SocketAddr, Arc<Semaphore>, mpsc::UnboundedReceiver<()>) {
    let release = Arc::new(Semaphore::new(0));
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let gate = release.clone();
    let addr = backend(move |req| {
        let (gate, arrived) = (gate.clone(), arrived_tx.clone());
        async move {
            if req.uri().path() == "/hold" {
                let _ = arrived.send(());
                let _permit = gate.acquire().await;
            }
            http::Response::new(full("answer"))
        }
    })
    .await;
    (addr, release, arrived)
}

fn admin_config(rest: &str) -> String {
    config(&format!("admin: {{ address: 127.0.0.1:0 }}\n{rest}"))
}

fn checks(endpoint: SocketAddr, result: &str) -> String {
    format!(
        "portico_upstream_health_checks_total{{cluster=\"small\",endpoint=\"{endpoint}\",result=\"{result}\"}}"
    )
}

#[tokio::test]
async fn health_probes_are_not_counted_by_a_full_circuit_breaker() {
    for check in ["{ type: tcp", "{ type: http, path: /health"] {
        let (held, release, mut arrived) = holding_backend().await;
        let gw = TestGateway::start(&admin_config(&format!(
            r#"clusters:
  - name: small
    endpoints: ["{held}"]
    panic_threshold: 0
    circuit_breaker: {{ max_connections: 1, max_pending_requests: 1 }}
    health_check: {check}, interval: 10ms, jitter: 0s, unhealthy_threshold: 1 }}
routes:
  - {{ cluster: small }}
"#
        )))
        .await;
        // A request holds the only connection the breaker allows.
        let addr = gw.addr;
        let first = tokio::spawn(async move { get(addr, "h", "/hold").await });
        within("the held request", arrived.recv())
            .await
            .expect("arrived");
        let overflow = get(gw.addr, "h", "/").await;
        assert_eq!(overflow.status, StatusCode::SERVICE_UNAVAILABLE, "{check}");
        assert_eq!(overflow.error_code(), "upstream_overflow");
        // Probes go on meanwhile, and pass.
        let failed_before = gw.metric(&checks(held, "failed")).await;
        let passed_before = gw.metric(&checks(held, "passed")).await;
        within("three probes", async {
            while gw.metric(&checks(held, "passed")).await < passed_before + 3
                && gw.metric(&checks(held, "failed")).await == failed_before
            {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(
            gw.metric(&checks(held, "failed")).await,
            failed_before,
            "{check}: a probe failed while the breaker was full"
        );
        let healthy =
            format!("portico_upstream_endpoint_healthy{{cluster=\"small\",endpoint=\"{held}\"}}");
        assert_eq!(gw.metric(&healthy).await, 1, "{check}");
        release.add_permits(1);
        let first = within("the held answer", first).await.expect("task");
        assert_eq!(first.status, StatusCode::OK);
    }
}

fn overflows(limit: &str) -> String {
    format!("portico_upstream_overflows_total{{cluster=\"small\",limit=\"{limit}\"}}")
}

/// The breaker refused `reply` at once for `limit`: 503 `upstream_overflow` naming the limit,
/// counted once.
async fn assert_overflow(gw: &TestGateway, reply: &Reply, limit: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "upstream_overflow");
    assert!(reply.text().contains(limit), "{}", reply.text());
    assert_eq!(gw.metric(&overflows(limit)).await, 1);
}

#[tokio::test]
async fn max_connections_refuses_a_new_connection_at_once() {
    let (held, release, mut arrived) = holding_backend().await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: small
    endpoints: ["{held}"]
    circuit_breaker: {{ max_connections: 1 }}
routes:
  - {{ cluster: small }}
"#
    )))
    .await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { get(addr, "h", "/hold").await });
    within("the held request", arrived.recv())
        .await
        .expect("arrived");
    // The only connection is busy: a second request would need another. Answered while the
    // first is still held, so it did not wait in a queue.
    let second = get(gw.addr, "h", "/").await;
    assert_overflow(&gw, &second, "max_connections").await;
    release.add_permits(1);
    assert_eq!(
        within("the held answer", first).await.expect("task").status,
        StatusCode::OK
    );
    // The connection is back in the pool: the next request reuses it.
    assert_eq!(get(gw.addr, "h", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn max_pending_requests_refuses_a_second_wait_for_a_connection_at_once() {
    // A backend that accepts connections and never answers the TLS handshake: a request's
    // wait for a connection (pending) lasts until the connect timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent = listener.local_addr().expect("addr");
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: small
    endpoints: ["{silent}"]
    connect_timeout: 60s
    tls: {{ server_name: backend.test }}
    circuit_breaker: {{ max_pending_requests: 1 }}
routes:
  - {{ cluster: small }}
"#
    )))
    .await;
    let addr = gw.addr;
    let _first = tokio::spawn(async move { get(addr, "h", "/").await });
    within("the first connection", accepted.recv())
        .await
        .expect("accepted");
    let second = get(gw.addr, "h", "/").await;
    assert_overflow(&gw, &second, "max_pending_requests").await;
}

#[tokio::test]
async fn max_retries_stops_a_retry_at_once_and_the_answer_stands() {
    // Each path's first request gets 503; its retry is held until released.
    let release = Arc::new(Semaphore::new(0));
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let gate = release.clone();
    let flaky = backend(move |req| {
        let (gate, arrived, seen) = (gate.clone(), arrived_tx.clone(), seen.clone());
        async move {
            let first = seen
                .lock()
                .expect("seen")
                .insert(req.uri().path().to_string());
            if first {
                return http::Response::builder()
                    .status(503)
                    .body(full("unavailable"))
                    .expect("response");
            }
            let _ = arrived.send(());
            let _permit = gate.acquire().await;
            http::Response::new(full("answer"))
        }
    })
    .await;
    let gw = TestGateway::start(&admin_config(&format!(
        r#"clusters:
  - name: small
    endpoints: ["{flaky}"]
    circuit_breaker: {{ max_retries: 1 }}
    retry_budget: {{ percent: 100, min_retries: 100 }}
routes:
  - cluster: small
    retry: {{ retries: 1, backoff_base: 1ms, backoff_max: 1ms }}
"#
    )))
    .await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { get(addr, "h", "/one").await });
    within("the first request's retry", arrived.recv())
        .await
        .expect("arrived");
    // One retry is in flight: the second request's retry is not made, and its 503 is
    // answered while the first retry is still held.
    let second = get(gw.addr, "h", "/two").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.text(), "unavailable");
    assert_eq!(gw.metric(&overflows("max_retries")).await, 1);
    release.add_permits(1);
    let first = within("the retried answer", first).await.expect("task");
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "answer");
}
