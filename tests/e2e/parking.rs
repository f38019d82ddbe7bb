//! Idle HTTP/1.1 keep-alive connections are parked (hyper's connection and its buffers
//! released, the socket kept) and served again when the client sends its next request:
//! the client sees one unbroken keep-alive connection throughout.

use crate::common::*;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARKED: &str = "portico_parked_connections{listener=\"public\"}";

/// An origin that answers `seen <method> <path> <body length>`.
async fn describing_backend() -> SocketAddr {
    backend(|req: Request<hyper::body::Incoming>| async move {
        let what = format!("seen {} {}", req.method(), req.uri().path());
        let body = req.into_body().collect().await.expect("body").to_bytes();
        http::Response::new(full(format!("{what} {}", body.len())))
    })
    .await
}

/// Write a raw request and read its one response (head, body).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (String, String) {
    stream.write_all(request).await.expect("write");
    read_response(stream).await
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_requests() {
    let gw = TestGateway::start(&gateway_config(describing_backend().await, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (head, body) = exchange(&mut stream, b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "seen GET /one 0");
    assert!(!head.to_ascii_lowercase().contains("connection: close"));
    gw.wait_metric(PARKED, 1).await;

    // The same socket: a request with a body, then (parked again) a GET.
    let (head, body) = exchange(
        &mut stream,
        b"POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "seen POST /two 5");
    gw.wait_metric(PARKED, 1).await;
    let (head, body) = exchange(&mut stream, b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "seen GET /three 0");
    gw.wait_metric(PARKED, 1).await;
    assert_eq!(
        gw.metric("portico_accepted_connections_total{listener=\"public\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_head_that_wakes_a_parked_connection_may_arrive_in_pieces_and_pipelined() {
    let gw = TestGateway::start(&gateway_config(describing_backend().await, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    exchange(&mut stream, b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n").await;
    gw.wait_metric(PARKED, 1).await;

    // The first bytes wake it; the rest of the head follows once it is awake.
    stream.write_all(b"GET /sp").await.expect("write");
    gw.wait_metric(PARKED, 0).await;
    let (head, body) = exchange(&mut stream, b"lit HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "seen GET /split 0");
    gw.wait_metric(PARKED, 1).await;

    // Two requests in one write: both answered, in order.
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    within("two responses", async {
        let mut buf = [0u8; 4096];
        while find(&seen, b"seen GET /b 0").is_none() {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    let a = text.find("seen GET /a 0").expect("the first answer");
    assert!(
        a < text.find("seen GET /b 0").expect("the second answer"),
        "{text}"
    );
}

#[tokio::test]
async fn a_parked_connection_still_closes_at_its_idle_timeout() {
    let gw = TestGateway::start(&gateway_config(
        describing_backend().await,
        "idle_timeout: 600ms",
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    gw.wait_metric(PARKED, 1).await;
    let mut buf = [0u8; 64];
    let n = within("the idle close", stream.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    gw.wait_metric(PARKED, 0).await;
    gw.wait_metric(
        "portico_connections_closed_total{listener=\"public\",reason=\"idle\"}",
        1,
    )
    .await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_and_drains_at_once() {
    let mut gw = TestGateway::start(&gateway_config(describing_backend().await, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    gw.wait_metric(PARKED, 1).await;
    let drained = gw.begin_shutdown();
    let mut buf = [0u8; 64];
    let n = within("the close at shutdown", stream.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    within("the drain", drained).await.expect("gateway task");
}

#[tokio::test]
async fn a_large_response_streams_whole_and_then_the_connection_parks() {
    let payload = Bytes::from(vec![b'x'; 4 << 20]);
    let origin = {
        let payload = payload.clone();
        backend(move |_req: Request<hyper::body::Incoming>| {
            let payload = payload.clone();
            async move { http::Response::new(full(payload)) }
        })
        .await
    };
    let gw = TestGateway::start(&gateway_config(origin, "")).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    // Small reads: the gateway's writes block on the client again and again.
    let mut buf = vec![0u8; 1024];
    let mut seen = Vec::new();
    let head_end = within("the head", async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
            if let Some(end) = find(&seen, b"\r\n\r\n") {
                return end + 4;
            }
        }
    })
    .await;
    let mut total = seen.len() - head_end;
    within("the body", async {
        while total < payload.len() {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {total} bytes");
            total += n;
        }
    })
    .await;
    assert_eq!(total, payload.len());
    gw.wait_metric(PARKED, 1).await;
    let (head, _) = exchange(&mut stream, b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_parked_connection_can_be_upgraded_to_a_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = websocket_echo_backend().await;
    let plain = describing_backend().await;
    let gw = TestGateway::start(&format!(
        r#"
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
clusters:
  - {{ name: ws, endpoints: ["{ws_addr}"] }}
  - {{ name: plain, endpoints: ["{plain}"] }}
routes:
  - {{ cluster: ws, match: {{ path_prefix: /ws }} }}
  - {{ cluster: plain }}
"#
    ))
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (head, _) = exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    gw.wait_metric(PARKED, 1).await;
    let (mut ws, response) = within(
        "the websocket handshake",
        tokio_tungstenite::client_async(format!("ws://{}/ws/echo", gw.addr), stream),
    )
    .await
    .expect("handshake through the gateway");
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("after a park")).await.expect("send");
    let echoed = within("an echo", ws.next())
        .await
        .expect("message")
        .expect("ok");
    assert_eq!(echoed.into_text().expect("text").as_str(), "after a park");
    // Upgraded, the connection is a tunnel: never parked.
    assert_eq!(gw.metric(PARKED).await, 0);
}

#[tokio::test]
async fn a_connection_waiting_for_its_first_bytes_is_counted_and_closed_at_shutdown() {
    let mut gw = TestGateway::start(&gateway_config(describing_backend().await, "")).await;
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    gw.wait_metric("portico_active_connections{listener=\"public\"}", 1)
        .await;
    // A second one that does send is served while the first waits.
    let mut talking = TcpStream::connect(gw.addr).await.expect("connect");
    let (head, body) = exchange(&mut talking, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "seen GET /x 0");
    let drained = gw.begin_shutdown();
    let mut buf = [0u8; 16];
    let n = within("the close at shutdown", silent.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    within("the drain", drained).await.expect("gateway task");
}

#[tokio::test]
async fn a_parked_connection_is_one_task_and_a_woken_one_is_watched_again() {
    // A header budget far shorter than the idle one: after the wake, only a watchdog (the
    // parked task has ended) can cut the unfinished head that woke the connection.
    let gw = TestGateway::start(&gateway_config(
        describing_backend().await,
        "header_read_timeout: 500ms, idle_timeout: 60s",
    ))
    .await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    // One connection first, so that the upstream connection and anything built lazily exist.
    let mut first = TcpStream::connect(gw.addr).await.expect("connect");
    exchange(&mut first, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    gw.wait_metric(PARKED, 1).await;
    // Counted around metrics queries, whose own connections' tasks (client and admin side,
    // a few) may or may not have ended yet: ten parked connections are about ten tasks,
    // never twenty.
    let before = tasks();
    let mut parked = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
        parked.push(stream);
    }
    gw.wait_metric(PARKED, 11).await;
    within("one task per parked connection", async {
        // The serving tasks and watchdogs of the connections just parked end a moment
        // after the parked count rises; with a watchdog beside each they would be twenty.
        while tasks().saturating_sub(before) >= 15 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // Woken by the first bytes of a head that never ends: its header budget cuts it.
    let stream = &mut parked[0];
    stream
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    gw.wait_metric(PARKED, 10).await;
    let mut buf = [0u8; 64];
    let n = within("the header budget's close", stream.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    gw.wait_metric(
        "portico_connections_closed_total{listener=\"public\",reason=\"header_timeout\"}",
        1,
    )
    .await;
    // The others are still parked, and still served.
    let (head, _) = exchange(&mut parked[1], b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
