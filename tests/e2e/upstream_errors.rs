//! Upstream failures become clear answers: 502 for unreachable or broken backends, 504 for
//! silent ones; connect failures move on to the next endpoint; connections are pooled.

use crate::common::*;
use http::StatusCode;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn one_route(endpoints: &str, extra: &str) -> String {
    config(&format!(
        "clusters:\n  - {{ name: b, endpoints: [{endpoints}], connect_timeout: 2s }}\nroutes:\n  - {{ cluster: b{extra} }}\n"
    ))
}

#[tokio::test]
async fn an_unreachable_backend_is_502() {
    let dead = closed_port().await;
    let gw = TestGateway::start(&one_route(&format!("\"{dead}\""), "")).await;
    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error_code(), "upstream_connect_failed");
}

#[tokio::test]
async fn a_garbage_or_truncated_response_is_502() {
    for garbage in [
        &b"this is not http\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"",
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(garbage).await;
                // Dropping the stream closes it: the response ends where it ends.
            }
        });
        let gw = TestGateway::start(&one_route(&format!("\"{addr}\""), "")).await;
        let req = http::Request::get("/")
            .header("host", "h")
            .body(full(""))
            .expect("req");
        let outcome = tokio::time::timeout(PATIENCE, async {
            let mut sender = h1_connection(gw.addr).await;
            let response = sender.send_request(req).await.expect("response head");
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body()).await;
            (status, body.is_ok())
        })
        .await
        .expect("answered");
        if garbage.starts_with(b"HTTP/1.1 200") {
            // The head was valid and went out; the truncated body must not look complete.
            assert_eq!(
                outcome,
                (StatusCode::OK, false),
                "a truncated body is cut, not completed"
            );
        } else {
            assert_eq!(outcome.0, StatusCode::BAD_GATEWAY);
        }
    }
}

#[tokio::test]
async fn a_silent_backend_is_504_after_the_route_timeout() {
    let addr = backend(|_req| async {
        std::future::pending::<()>().await;
        http::Response::new(full(""))
    })
    .await;
    let gw = TestGateway::start(&one_route(&format!("\"{addr}\""), ", timeout: 200ms")).await;
    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.error_code(), "upstream_timeout");
}

#[tokio::test]
async fn round_robin_skips_an_endpoint_that_refuses_connections() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dead = closed_port().await;
    let gw = TestGateway::start(&one_route(&format!("\"{a}\", \"{dead}\", \"{b}\""), "")).await;
    let mut seen = HashSet::new();
    for _ in 0..9 {
        let reply = get(gw.addr, "h", "/").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "a refused connection moves on to the next endpoint"
        );
        seen.insert(
            reply.headers["x-backend"]
                .to_str()
                .expect("name")
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "both live endpoints served: {seen:?}");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            seen.lock().expect("lock").insert(peer);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(full("pooled")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let gw = TestGateway::start(&one_route(&format!("\"{addr}\""), "")).await;
    for _ in 0..20 {
        let reply = get(gw.addr, "h", "/").await;
        assert_eq!(reply.text(), "pooled");
    }
    assert_eq!(
        peers.lock().expect("lock").len(),
        1,
        "20 sequential requests, one upstream connection"
    );
}
