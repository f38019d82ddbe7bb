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
