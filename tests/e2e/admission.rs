//! Bad input at the edge: each class answered clearly, none forwarded ambiguously.

use crate::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A gateway whose only route goes to a backend that counts what reaches it.
async fn counted_gateway() -> (TestGateway, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = backend(move |_req| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            http::Response::new(full("ok"))
        }
    })
    .await;
    let yaml = single_route(addr, ", max_body_size: 1KiB");
    (TestGateway::start(&yaml).await, hits)
}

fn json_body(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON error body ({e}): {answer}"))
}

#[tokio::test]
async fn conflicting_or_malformed_framing_is_400_and_closes() {
    let (gw, hits) = counted_gateway().await;
    let cases: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: five\r\n\r\nhello",
    ];
    for case in cases {
        // read_to_end returning proves the gateway closed the connection.
        let answer = raw(gw.addr, case).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let json = json_body(&answer);
        assert!(json["error"]["code"].is_string(), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn invalid_chunking_never_completes_a_request() {
    let (gw, _hits) = counted_gateway().await;
    // A chunk size that is not hex: the body can't be framed; the exchange is refused.
    let answer = raw(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_malformed_request_line_gets_a_json_400() {
    let (gw, hits) = counted_gateway().await;
    let answer = raw(gw.addr, b"GET /\x01bad HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(json_body(&answer)["error"]["code"], "malformed_request");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn never_an_open_proxy() {
    let (gw, hits) = counted_gateway().await;
    let answer = raw(
        gw.addr,
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(json_body(&answer)["error"]["code"], "connect_not_supported");

    let answer = raw(
        gw.addr,
        b"GET http://evil.example/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(json_body(&answer)["error"]["code"], "authority_mismatch");

    // Absolute form naming the same host is ordinary HTTP/1.1 and is served.
    let answer = raw(
        gw.addr,
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let answer = raw(gw.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(json_body(&answer)["error"]["code"], "missing_host");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
