//! Hostile connections: silent or stalling clients are cut by the header budget (and only
//! idle keep-alive connections wait for the idle budget), over-long request lines get 414,
//! and underscore twins of framing headers are refused. Every test puts a backend that
//! records the exact bytes it receives behind the gateway, so "nothing reached the
//! backend" is checked, not assumed.

use crate::common::*;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUTS: &str =
    "portico_connections_closed_total{listener=\"public\",reason=\"header_timeout\"}";
const IDLE_CLOSES: &str = "portico_connections_closed_total{listener=\"public\",reason=\"idle\"}";

/// Read until the gateway closes the connection (EOF, or a reset after an answer) and
/// return what came before. A connection the gateway keeps open fails the test.
async fn until_closed<S: AsyncRead + Unpin>(what: &str, stream: &mut S) -> String {
    let mut out = Vec::new();
    let _ = within(what, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON error body of a raw answer, after checking the gateway's error shape and that
/// it announces the close.
fn error_code(answer: &str) -> String {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{answer}");
    assert!(head.contains("connection: close"), "{answer}");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    assert!(json["error"]["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    json["error"]["code"].as_str().expect("code").to_string()
}

// ---------------------------------------------------------------------------------------
// 1. Time budgets

#[tokio::test]
async fn connections_that_never_send_a_request_are_cut_at_the_header_budget() {
    let (backend, recorder) = recording_backend().await;
    // The idle budget is far longer than the test's patience: only the header budget can
    // close these connections in time.
    let gw = TestGateway::start(&gateway_config(
        backend,
        "header_read_timeout: 300ms, idle_timeout: 60s",
    ))
    .await;

    // Not a single byte.
    let mut silent = TcpStream::connect(gw.addr).await.expect("connect");
    let answer = until_closed("the gateway to cut a silent connection", &mut silent).await;
    assert_eq!(answer, "", "closed without an answer");

    // HTTP/2 with prior knowledge: the preface, then nothing — no request, no head to time,
    // but the first request's budget applies all the same.
    let mut h2c = TcpStream::connect(gw.addr).await.expect("connect");
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    until_closed("the gateway to cut a silent h2c connection", &mut h2c).await;

    gw.wait_metric(HEADER_TIMEOUTS, 2).await;
    assert_eq!(gw.metric(IDLE_CLOSES).await, 0);
    assert_eq!(recorder.text(), "", "nothing reached the backend");
}

#[tokio::test]
async fn between_requests_the_idle_budget_waits_and_a_started_head_gets_the_header_budget() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(
        backend,
        "header_read_timeout: 300ms, idle_timeout: 600ms",
    ))
    .await;

    // A request, then silence: the idle budget closes it (gracefully), not the header one.
    let mut quiet = TcpStream::connect(gw.addr).await.expect("connect");
    quiet
        .write_all(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    assert!(read_response(&mut quiet)
        .await
        .0
        .starts_with("HTTP/1.1 200"));
    assert_eq!(until_closed("the idle close", &mut quiet).await, "");
    gw.wait_metric(IDLE_CLOSES, 1).await;
    assert_eq!(gw.metric(HEADER_TIMEOUTS).await, 0);

    // A request, then the start of a second head that never ends: the header budget
    // applies to that head, from its first byte.
    let mut stalling = TcpStream::connect(gw.addr).await.expect("connect");
    stalling
        .write_all(b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    assert!(read_response(&mut stalling)
        .await
        .0
        .starts_with("HTTP/1.1 200"));
    stalling
        .write_all(b"GET /third HTTP/1.1\r\nHost: h\r\nX-Slow: ")
        .await
        .expect("write");
    let answer = until_closed("the header budget to cut a stalled head", &mut stalling).await;
    assert_eq!(answer, "", "closed without an answer");
    gw.wait_metric(HEADER_TIMEOUTS, 1).await;
    assert_eq!(gw.metric(IDLE_CLOSES).await, 1);

    let received = recorder.text();
    assert!(received.contains("GET /first "), "{received}");
    assert!(received.contains("GET /second "), "{received}");
    assert!(!received.contains("/third"), "{received}");
}

#[tokio::test]
async fn an_idle_http2_peer_that_ignores_the_graceful_close_is_cut() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(
        backend,
        "header_read_timeout: 60s, idle_timeout: 300ms",
    ))
    .await;
    let mut peer = TcpStream::connect(gw.addr).await.expect("connect");
    // h2c prior knowledge by hand: the preface, empty SETTINGS, and one GET (HPACK: :method
    // GET, :scheme http, :path /, :authority h) ending the stream. After that the peer reads
    // but never answers anything — not the GOAWAY's PING, not even SETTINGS.
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'h'];
    out.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x4 | 0x1, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    peer.write_all(&out).await.expect("write");

    until_closed(
        "the gateway to cut an unresponsive idle HTTP/2 peer",
        &mut peer,
    )
    .await;
    gw.wait_metric(IDLE_CLOSES, 1).await;
    assert_eq!(gw.metric(HEADER_TIMEOUTS).await, 0);
    assert!(
        recorder.text().starts_with("GET / HTTP/1.1\r\n"),
        "the request was served"
    );
}

#[tokio::test]
async fn on_tls_the_header_budget_starts_when_the_handshake_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let (backend, recorder) = recording_backend().await;
    let yaml = format!(
        r#"
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - name: public
    address: 127.0.0.1:0
    limits: {{ header_read_timeout: 300ms, idle_timeout: 60s }}
    tls:
      certificates:
        - {{ cert: "{}", key: "{}" }}
      handshake_timeout: 60s
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b }}
"#,
        cert.display(),
        key.display()
    );
    let gw = TestGateway::start(&yaml).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = within(
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake");

    // Handshake done, then not a byte of HTTP: the handshake and idle budgets are both a
    // minute here, so only the header budget can end this connection in time.
    let answer = until_closed("the gateway to cut a silent TLS client", &mut tls).await;
    assert_eq!(answer, "");
    gw.wait_metric(HEADER_TIMEOUTS, 1).await;
    assert_eq!(recorder.text(), "", "nothing reached the backend");
}

// ---------------------------------------------------------------------------------------
// 2. Request lines longer than the head budget

#[tokio::test]
async fn a_request_line_longer_than_the_head_budget_is_414() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(
        backend,
        "max_header_bytes: 8KiB, max_uri_length: 1KiB",
    ))
    .await;

    let long_line = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(10 * 1024));
    let answer = raw(gw.addr, long_line.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer:.300}");
    assert_eq!(error_code(&answer), "uri_too_long");

    // A short request line with too many header bytes is still the headers' fault.
    let big_headers = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "v".repeat(10 * 1024)
    );
    let answer = raw(gw.addr, big_headers.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:.300}");
    assert_eq!(error_code(&answer), "headers_too_large");

    assert_eq!(recorder.text(), "", "nothing reached the backend");
}

// ---------------------------------------------------------------------------------------
// 3. Underscore twins of framing and hop-by-hop headers

#[tokio::test]
async fn underscore_twins_of_framing_headers_are_refused_and_never_forwarded() {
    let (backend, recorder) = recording_backend().await;
    // Other underscore headers are the listener policy's business; here it lets them pass.
    let config = gateway_config(backend, "").replace(
        "    address: 127.0.0.1:0\n",
        "    address: 127.0.0.1:0\n    headers_with_underscores: allow\n",
    );
    let gw = TestGateway::start(&config).await;

    for head in [
        "POST /smuggle HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        "POST /smuggle HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ntransfer_encoding: chunked\r\n\r\nhello",
        "POST /smuggle HTTP/1.1\r\nHost: h\r\nCONTENT_LENGTH: 5\r\n\r\n",
        "GET /smuggle HTTP/1.1\r\nHost: h\r\nKeep_Alive: timeout=5\r\n\r\n",
        "GET /smuggle HTTP/1.1\r\nHost: h\r\nProxy_Connection: keep-alive\r\n\r\n",
    ] {
        let answer = raw(gw.addr, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{head:?}: {answer}");
        assert_eq!(error_code(&answer), "malformed_request", "{head:?}");
    }

    // On a keep-alive connection, after a request that was served.
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /served-first HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    assert!(read_response(&mut stream)
        .await
        .0
        .starts_with("HTTP/1.1 200"));
    stream
        .write_all(b"POST /smuggle HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let answer = until_closed("the refusal", &mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(error_code(&answer), "malformed_request");

    // Pipelined behind an innocent request, in the same packet: the first is served, the
    // second refused.
    let answer = raw(
        gw.addr,
        b"GET /served-pipelined HTTP/1.1\r\nHost: h\r\n\r\nPOST /smuggle HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let second = &answer[answer.find("okHTTP/1.1 ").expect("two answers") + 2..];
    assert!(second.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(error_code(second), "malformed_request");

    // Other underscore headers are another policy's business: passed on.
    let answer = raw(
        gw.addr,
        b"GET /other-underscores HTTP/1.1\r\nHost: h\r\nX_Custom: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    let received = recorder.text().to_ascii_lowercase();
    assert!(!received.contains("/smuggle"), "{received}");
    for twin in [
        "transfer_encoding",
        "content_length",
        "keep_alive",
        "proxy_connection",
    ] {
        assert!(
            !received.contains(twin),
            "{twin} reached the backend: {received}"
        );
    }
    assert_eq!(received.matches("get /").count(), 3, "{received}");
    assert!(received.contains("get /served-first "), "{received}");
    assert!(received.contains("get /served-pipelined "), "{received}");
    assert!(received.contains("x_custom: 1"), "{received}");
}
