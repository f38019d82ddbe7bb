//! Limits: body size (413), head size and count (431), target length (414), and the time
//! budgets that cut slow clients; many idle connections do not starve others.

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn counting_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = backend(move |req: Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            http::Response::new(full(format!("{body}")))
        }
    })
    .await;
    (addr, hits)
}

fn limited_config(backend: std::net::SocketAddr, limits: &str) -> String {
    format!(
        r#"
access_log: {{ enabled: false }}
listeners:
  - name: public
    address: 127.0.0.1:0
    limits: {{ {limits} }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b, max_body_size: 1KiB }}
"#
    )
}

#[tokio::test]
async fn bodies_over_the_route_limit_are_413_before_the_backend_sees_them() {
    let (addr, hits) = counting_backend().await;
    let gw = TestGateway::start(&limited_config(addr, "")).await;

    let req = Request::post("/")
        .header("host", "h")
        .body(full(vec![b'x'; 1024]))
        .expect("req");
    let reply = send(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "1024");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let req = Request::post("/")
        .header("host", "h")
        .body(full(vec![b'x'; 1025]))
        .expect("req");
    let reply = send(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "payload_too_large");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "refused from Content-Length alone"
    );

    // Without a length (chunked), the body is counted as it streams and cut at the limit.
    let answer = raw(
        gw.addr,
        format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
            "a".repeat(1024),
            "b".repeat(1024)
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[tokio::test]
async fn oversized_heads_are_431_and_long_targets_414() {
    let (addr, hits) = counting_backend().await;
    let gw = TestGateway::start(&limited_config(
        addr,
        "max_header_bytes: 8KiB, max_headers: 20, max_uri_length: 1KiB",
    ))
    .await;

    let big = "v".repeat(10 * 1024);
    let answer = raw(
        gw.addr,
        format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(
        answer.contains("\"code\":\"headers_too_large\""),
        "{answer}"
    );

    let many: String = (0..25).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let answer = raw(
        gw.addr,
        format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("headers_too_large"), "{answer}");

    let long = format!("/{}", "p".repeat(2000));
    let reply = get(gw.addr, "h", &long).await;
    assert_eq!(reply.status, StatusCode::URI_TOO_LONG);
    assert_eq!(reply.error_code(), "uri_too_long");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Within the limits all is well.
    assert_eq!(get(gw.addr, "h", "/fine").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_trickling_its_head_is_cut_by_a_total_budget() {
    let (addr, hits) = counting_backend().await;
    let gw = TestGateway::start(&limited_config(addr, "header_read_timeout: 300ms")).await;
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    // A slow client: one byte every 50 ms. Each read makes progress, but the head never
    // completes; only a total budget stops this. (The pacing simulates the client; the
    // test itself waits on the connection closing.)
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat_n(&b'a', 400)) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    // Returns (Ok at EOF, or Err on reset) only once the gateway has closed the socket.
    let _ = within(
        "the gateway to close a trickling client",
        reader.read_to_end(&mut answer),
    )
    .await;
    assert!(
        answer.is_empty(),
        "no response, just a close: {}",
        String::from_utf8_lossy(&answer)
    );
    trickle.abort();
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408() {
    let (addr, _hits) = counting_backend().await;
    let gw = TestGateway::start(&limited_config(addr, "request_body_timeout: 300ms")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly part")
        .await
        .expect("write");
    let mut answer = Vec::new();
    within("the body timeout", stream.read_to_end(&mut answer))
        .await
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let (addr, _hits) = counting_backend().await;
    let gw = TestGateway::start(&limited_config(addr, "idle_timeout: 200ms")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = within("a response", stream.read(&mut buf))
        .await
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Now idle: the gateway closes the connection by itself.
    let n = within("the idle close", stream.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn thousands_of_idle_connections_do_not_stop_others_being_served() {
    portico::raise_fd_limit();
    let (addr, _hits) = counting_backend().await;
    let gw = TestGateway::start(&limited_config(addr, "max_connections: 5000")).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    // Half of them even started a request head and stalled.
    for stream in idle.iter_mut().step_by(2) {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: h")
            .await
            .expect("write");
    }
    for _ in 0..20 {
        let req = Request::post("/")
            .header("host", "h")
            .body(full(Bytes::from_static(b"abc")))
            .expect("req");
        let reply = send(gw.addr, req).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "3");
    }
    drop(idle);
}
