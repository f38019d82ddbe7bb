//! Fault injection: a declared share of requests aborted or delayed, within statistical
//! tolerance over a bounded number of requests, or on request by header; counted in metrics;
//! a delayed request held back from the backend while others pass.

use crate::common::*;
use http::{Request, StatusCode};
use std::future::Future;

async fn gateway() -> TestGateway {
    let echo = echo_backend("echo").await;
    TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{}",
        config(&format!(
            r#"clusters:
  - {{ name: echo, endpoints: ["{echo}"] }}
routes:
  - name: flaky
    match: {{ path_prefix: /flaky }}
    cluster: echo
    fault: {{ abort: {{ status: 503, percent: 25 }} }}
  - name: asked
    match: {{ path_prefix: /asked }}
    cluster: echo
    fault: {{ delay: {{ duration: 20ms }}, abort: {{ status: 500 }}, header: x-fault }}
  - name: calm
    match: {{ path_prefix: /calm }}
    cluster: echo
"#
        ))
    ))
    .await
}

#[tokio::test]
async fn a_declared_share_of_requests_is_aborted() {
    let gw = gateway().await;
    const REQUESTS: u64 = 400;
    let mut sender = h1_connection(gw.addr).await;
    let mut aborted = 0;
    for _ in 0..REQUESTS {
        let req = Request::get("/flaky")
            .header("host", "h")
            .body(full(""))
            .expect("request");
        let reply = within("a request", async {
            collect(sender.send_request(req).await.expect("response")).await
        })
        .await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(reply.error_code(), "fault_injected");
                aborted += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // 25% of 400 is 100, with a standard deviation of about 8.7: five of them either way.
    assert!(
        (57..=143).contains(&aborted),
        "{aborted} of {REQUESTS} aborted"
    );
    gw.wait_metric(
        "portico_faults_injected_total{route=\"flaky\",fault=\"abort\"}",
        aborted,
    )
    .await;
    // A route without faults never fails.
    for _ in 0..50 {
        assert_eq!(get(gw.addr, "h", "/calm").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_header_asks_for_the_faults_and_never_reaches_the_backend() {
    let gw = gateway().await;
    // Declared at 0%: nothing happens unless asked.
    let plain = get(gw.addr, "h", "/asked").await;
    assert_eq!(plain.status, StatusCode::OK);

    let delayed = send(
        gw.addr,
        Request::get("/asked")
            .header("host", "h")
            .header("x-fault", "delay")
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(delayed.status, StatusCode::OK);
    assert!(
        delayed.json()["headers"].get("x-fault").is_none(),
        "the header is the gateway's"
    );
    gw.wait_metric(
        "portico_faults_injected_total{route=\"asked\",fault=\"delay\"}",
        1,
    )
    .await;

    let aborted = send(
        gw.addr,
        Request::get("/asked")
            .header("host", "h")
            .header("x-fault", "abort")
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(aborted.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(aborted.error_code(), "fault_injected");
    gw.wait_metric(
        "portico_faults_injected_total{route=\"asked\",fault=\"abort\"}",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_delayed_request_is_held_back_from_the_backend_while_others_pass() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{}",
        config(&format!(
            r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - name: held
    match: {{ path_prefix: /held }}
    cluster: b
    fault: {{ delay: {{ duration: 1h }}, header: x-fault }}
"#
        ))
    ))
    .await;
    // An hour's delay, asked for: the request is counted, then held.
    let mut sender = h1_connection(gw.addr).await;
    let mut delayed = Box::pin(
        sender.send_request(
            Request::get("/held/first")
                .header("host", "h")
                .header("x-fault", "delay")
                .body(full(""))
                .expect("request"),
        ),
    );
    gw.wait_metric(
        "portico_faults_injected_total{route=\"held\",fault=\"delay\"}",
        1,
    )
    .await;
    // Sent after the delayed one was counted, and answered: without the delay the first
    // would have reached the backend before it.
    let passed = get(gw.addr, "h", "/held/second").await;
    assert_eq!(passed.status, StatusCode::OK);
    let seen = recorder.text();
    assert!(seen.contains("GET /held/second "), "{seen}");
    assert!(
        !seen.contains("/held/first"),
        "the delayed request reached the backend: {seen}"
    );
    let answered =
        std::future::poll_fn(|cx| std::task::Poll::Ready(delayed.as_mut().poll(cx).is_ready()))
            .await;
    assert!(!answered, "the delayed request was answered");
}
