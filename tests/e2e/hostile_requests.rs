//! Hostile requests and responses: host confusion, ambiguous framing on either side,
//! underscore headers, slow clients blamed correctly, and the gateway's own HTTP version.
//! Backends record the exact bytes they receive, so "nothing reached the backend" is
//! asserted, not assumed.

use crate::common::*;
use http::{Request, StatusCode};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One listener (with `listener_keys`, flow-map entries), an admin listener, one route to
/// `backend` (with `route_keys`).
fn gateway_config(backend: SocketAddr, listener_keys: &str, route_keys: &str) -> String {
    format!(
        r#"
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0"{listener_keys} }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b{route_keys} }}
"#
    )
}

/// The status line and the JSON error code of a raw answer.
fn status_and_code(answer: &str) -> (String, String) {
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, code)
}

#[tokio::test]
async fn a_request_with_more_than_one_host_or_an_invalid_one_is_refused_unforwarded() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(backend, "", "")).await;
    let cases: [(&[u8], &str); 6] = [
        (
            b"GET /a HTTP/1.1\r\nHost: internal.example\r\nHost: public.example\r\n\r\n",
            "duplicate_host",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: public.example\r\nhost: public.example\r\n\r\n",
            "duplicate_host",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: evil host@/x\r\n\r\n",
            "invalid_host",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: a.example,b.example\r\n\r\n",
            "invalid_host",
        ),
        (
            b"GET /a HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n",
            "invalid_host",
        ),
        (
            b"GET http://a.example/a HTTP/1.1\r\nHost: b.example\r\n\r\n",
            "authority_mismatch",
        ),
    ];
    for (head, code) in cases {
        let answer = raw(gw.addr, head).await;
        let (status, got) = status_and_code(&answer);
        assert!(status.starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(got, code, "{answer}");
        assert!(!answer.contains("x-forwarded-host"), "{answer}");
    }
    assert_eq!(recorder.text(), "", "nothing reached the backend");

    // HTTP/2: a Host header that disagrees with :authority.
    let req = Request::get("http://a.example/a")
        .header("host", "b.example")
        .body(full(""))
        .expect("request");
    let reply = send_h2(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "authority_mismatch");
    assert_eq!(recorder.text(), "");

    // One valid host is forwarded, as the single Host the backend sees.
    let answer = raw(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: public.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = recorder.text().to_ascii_lowercase();
    assert_eq!(seen.matches("\r\nhost: ").count(), 1, "{seen}");
    assert!(seen.contains("\r\nhost: public.example:8080\r\n"), "{seen}");
}

/// A backend that reads one request head and answers with `answer`, byte for byte, then
/// closes.
async fn scripted_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while find(&seen, b"\r\n\r\n").is_none() {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_response_with_ambiguous_framing_is_a_502() {
    let answers: [&'static [u8]; 2] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ];
    for answer in answers {
        let backend = scripted_backend(answer).await;
        let gw = TestGateway::start(&gateway_config(backend, "", "")).await;
        let reply = get(gw.addr, "h", "/").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.error_code(), "upstream_bad_response");
        let h2 = send_h2(
            gw.addr,
            Request::get("http://h/").body(full("")).expect("request"),
        )
        .await;
        assert_eq!(h2.status, StatusCode::BAD_GATEWAY);
        gw.wait_metric(
            "portico_local_responses_total{code=\"upstream_bad_response\"}",
            2,
        )
        .await;
    }
}

#[tokio::test]
async fn an_http1_0_upstream_is_answered_to_the_client_in_the_gateways_own_version() {
    let backend = scripted_backend(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
    let gw = TestGateway::start(&gateway_config(backend, "", "")).await;
    let answer = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
}

#[tokio::test]
async fn an_http1_0_request_without_a_host_reaches_the_upstream_with_one() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(backend, "", "")).await;
    let answer = raw(gw.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let seen = recorder.text();
    assert!(seen.starts_with("GET /old HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.contains("\r\nhost: b\r\n"),
        "the cluster's name: {seen}"
    );
}

#[tokio::test]
async fn transfer_codings_other_than_one_chunked_are_refused_unforwarded() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(backend, "", "")).await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for (coding, status, code) in [
        ("gzip, chunked", "501", "transfer_coding_not_supported"),
        ("x-custom, chunked", "501", "transfer_coding_not_supported"),
        ("chunked, chunked", "400", "bad_request_framing"),
    ] {
        let head =
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {coding}\r\n\r\n{body}");
        let answer = raw(gw.addr, head.as_bytes()).await;
        let (line, got) = status_and_code(&answer);
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{coding}: {answer}"
        );
        assert_eq!(got, code, "{coding}");
    }
    assert_eq!(recorder.text(), "", "nothing reached the backend");
}

#[tokio::test]
async fn a_malformed_chunked_body_is_reported_as_bad_framing() {
    let reader = body_reading_backend().await;
    let gw = TestGateway::start(&gateway_config(reader, "", "")).await;
    for body in [
        // Chunk data longer than its size says.
        "5\r\nhelloXX\r\n0\r\n\r\n",
        // A bare LF where the chunk's CRLF belongs.
        "5\r\nhello\n0\r\n\r\n",
        // A chunk size that is not hex.
        "zz\r\nhello\r\n0\r\n\r\n",
    ] {
        let head =
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let answer = raw(gw.addr, head.as_bytes()).await;
        let (line, code) = status_and_code(&answer);
        assert!(line.starts_with("HTTP/1.1 400"), "{body:?}: {answer}");
        assert_eq!(code, "bad_request_framing", "{body:?}");
    }
    gw.wait_metric(
        "portico_local_responses_total{code=\"bad_request_framing\"}",
        3,
    )
    .await;
}

/// A GET with an underscore header `x_tenant` next to its dash twin `x-tenant`.
fn underscore_request() -> Request<BoxBody> {
    Request::get("/")
        .header("host", "h")
        .header("x_tenant", "other")
        .header("x-tenant", "mine")
        .body(full(""))
        .expect("request")
}

#[tokio::test]
async fn header_names_with_underscores_follow_the_listeners_policy() {
    // (listener keys, whether `x_tenant` reaches the backend)
    for (policy, forwarded) in [
        ("", false),
        (", headers_with_underscores: drop", false),
        (", headers_with_underscores: allow", true),
    ] {
        let addr = echo_backend("b").await;
        let gw = TestGateway::start(&gateway_config(addr, policy, "")).await;
        let reply = send(gw.addr, underscore_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        let json = reply.json();
        assert_eq!(
            json["headers"].get("x_tenant").is_some(),
            forwarded,
            "{policy}"
        );
        assert_eq!(json["headers"]["x-tenant"][0], "mine");
    }

    let (backend, recorder) = recording_backend().await;
    let reject = TestGateway::start(&gateway_config(
        backend,
        ", headers_with_underscores: reject",
        "",
    ))
    .await;
    let reply = send(reject.addr, underscore_request()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "header_name_with_underscore");

    // HTTP/2 heads never pass the connection guard: a framing look-alike is still refused,
    // even where underscores are allowed.
    let addr = echo_backend("b").await;
    let allow = TestGateway::start(&gateway_config(
        addr,
        ", headers_with_underscores: allow",
        "",
    ))
    .await;
    for gw in [&allow, &reject] {
        let req = Request::post("http://h/")
            .header("content_length", "5")
            .body(full("hello"))
            .expect("request");
        let reply = send_h2(gw.addr, req).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code(), "malformed_request");
    }
    assert_eq!(recorder.text(), "", "nothing reached the backend");
}

/// A backend that reads request bodies to their end before answering, counting requests.
async fn body_reading_backend() -> SocketAddr {
    backend(|req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let _ = req.into_body().collect().await;
        http::Response::new(full("read"))
    })
    .await
}

#[tokio::test]
async fn a_client_slow_to_send_its_body_gets_408_not_the_upstreams_504() {
    let reader = body_reading_backend().await;
    let gw = TestGateway::start(&gateway_config(
        reader,
        ", limits: { request_body_timeout: 600ms }",
        ", timeout: 100ms",
    ))
    .await;
    // Half the body, then nothing: the route timeout (100 ms) must not blame the upstream,
    // which is waiting for the rest; the body budget (600 ms) runs out on the client.
    let answer = within("a 408", async {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello")
            .await
            .expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await;
    let (line, code) = status_and_code(&answer);
    assert!(line.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(code, "request_body_timeout");

    // A whole body and a backend that reads it but never answers: that is the upstream's
    // timeout, counted from the end of the body.
    let silent = backend(|req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let _ = req.into_body().collect().await;
        std::future::pending::<()>().await;
        http::Response::new(full(""))
    })
    .await;
    let gw = TestGateway::start(&gateway_config(
        silent,
        ", limits: { request_body_timeout: 60s }",
        ", timeout: 100ms",
    ))
    .await;
    let reply = send(
        gw.addr,
        Request::post("/")
            .header("host", "h")
            .body(full("hello"))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.error_code(), "upstream_timeout");
}

#[tokio::test]
async fn a_client_cannot_strip_host_or_smuggle_an_h2c_tunnel_or_a_forwarded_host() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&gateway_config(backend, "", "")).await;

    // `Connection` may name hop-by-hop headers to remove, never the Host the request is
    // routed and framed by.
    let answer = raw(
        gw.addr,
        b"GET /named HTTP/1.1\r\nHost: h\r\nConnection: host, content-length, x-drop, close\r\nX-Drop: 1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // An upgrade to h2c would let the client talk HTTP/2 to the backend past every route:
    // it goes on as a plain request.
    let answer = raw(
        gw.addr,
        b"GET /h2c HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Without a host, a client's X-Forwarded-Host is not passed on as the gateway's word.
    let answer = raw(
        gw.addr,
        b"GET /hostless HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");

    let seen = recorder.text().to_ascii_lowercase();
    let request = |path: &str| -> String {
        let start = seen.find(&format!("get {path} ")).expect("forwarded");
        let end = seen[start..]
            .find("\r\n\r\n")
            .map_or(seen.len(), |e| start + e);
        seen[start..end].to_string()
    };
    let named = request("/named");
    assert!(named.contains("\r\nhost: h\r\n"), "{named}");
    assert!(!named.contains("x-drop"), "{named}");
    let h2c = request("/h2c");
    assert!(!h2c.contains("upgrade"), "{h2c}");
    assert!(!h2c.contains("http2-settings"), "{h2c}");
    let hostless = request("/hostless");
    assert!(!hostless.contains("evil.example"), "{hostless}");
}
