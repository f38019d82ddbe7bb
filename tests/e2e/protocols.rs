//! Protocol bridging: h2c clients to HTTP/1.1 backends and back, and WebSocket upgrades.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn an_h2c_client_reaches_an_http1_backend() {
    let users = echo_backend("users").await;
    let gw = TestGateway::start(&config(&format!(
        "clusters:\n  - {{ name: users, endpoints: [\"{users}\"], protocol: http1 }}\nroutes:\n  - {{ cluster: users, match: {{ host: api.example.com }} }}\n"
    )))
    .await;
    let req = Request::post("http://api.example.com/things?x=1")
        .version(Version::HTTP_2)
        .body(full("h2 body"))
        .expect("req");
    let reply = send_h2(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["path"], "/things");
    assert_eq!(json["body"], "h2 body");
    assert_eq!(
        json["headers"]["host"][0], "api.example.com",
        ":authority becomes Host"
    );
    assert_eq!(reply.headers["x-request-id"].len(), 32);
}

#[tokio::test]
async fn an_http1_client_reaches_an_h2c_backend_over_one_multiplexed_connection() {
    let users = echo_backend("users").await;
    let gw = TestGateway::start(&config(&format!(
        "clusters:\n  - {{ name: users, endpoints: [\"{users}\"], protocol: http2 }}\nroutes:\n  - {{ cluster: users }}\n"
    )))
    .await;
    let mut exchanges = Vec::new();
    for i in 0..10 {
        let addr = gw.addr;
        exchanges.push(tokio::spawn(async move {
            let req = Request::post(format!("/n/{i}"))
                .header("host", "api.example.com")
                .body(full(format!("body {i}")))
                .expect("req");
            send(addr, req).await
        }));
    }
    for (i, exchange) in exchanges.into_iter().enumerate() {
        let reply = within("an exchange", exchange).await.expect("task");
        assert_eq!(reply.status, StatusCode::OK);
        let json = reply.json();
        assert_eq!(json["version"], "HTTP/2.0");
        assert_eq!(json["path"], format!("/n/{i}"));
        assert_eq!(json["body"], format!("body {i}"));
    }
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let ws_addr = websocket_echo_backend().await;
    let gw = TestGateway::start(&config(&format!(
        "clusters:\n  - {{ name: ws, endpoints: [\"{ws_addr}\"] }}\nroutes:\n  - {{ cluster: ws, match: {{ path_prefix: /ws }} }}\n"
    )))
    .await;

    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut ws, response) = within(
        "the websocket handshake",
        tokio_tungstenite::client_async(format!("ws://{}/ws/echo", gw.addr), stream),
    )
    .await
    .expect("handshake through the gateway");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(response.headers().contains_key("x-request-id"));
    for text in ["hello", "through", "portico"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = within("an echo", ws.next())
            .await
            .expect("message")
            .expect("ok");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    let echoed = within("a binary echo", ws.next())
        .await
        .expect("message")
        .expect("ok");
    assert_eq!(echoed.into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.expect("close");
}

/// The start of a raw HTTP/2 client's Python script (Python's `hpack` codec): a cleartext
/// connection to the port in `argv[1]` with its preface sent, an `encoder`, `frame(kind,
/// flags, stream, payload)` to build a frame and `read_frame()` to read the next one as
/// `(kind, flags, stream, payload)`, the server's SETTINGS acknowledged on the way.
const RAW_HTTP2_CLIENT: &str = r#"
import socket, struct, sys
from hpack import Encoder
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
encoder = Encoder()
def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
pending = b""
def read_frame():
    global pending
    while len(pending) < 9 or len(pending) < 9 + int.from_bytes(pending[:3], "big"):
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit("the gateway closed the connection")
        pending += chunk
    length = int.from_bytes(pending[:3], "big")
    kind, flags, stream = pending[3], pending[4], int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
    payload, pending = pending[9:9 + length], pending[9 + length:]
    if kind == 4 and not flags & 0x1:
        conn.sendall(frame(4, 0x1, 0, b""))
    return kind, flags, stream, payload
"#;

/// Run `script` after [`RAW_HTTP2_CLIENT`] against the gateway's `port`; its stdout.
async fn raw_http2_client(port: u16, script: &str) -> String {
    let script = format!("{RAW_HTTP2_CLIENT}{script}");
    python_script("the Python HTTP/2 client", &script, &[&port.to_string()]).await
}

/// An HTTP/2 request never carries a hop-by-hop header to the backend: one with a
/// connection-specific header is malformed (RFC 9113 §8.2.2) and its stream is reset before
/// it reaches a route, while `te: trailers`, the one such header HTTP/2 allows, goes
/// through. Raw frames from a client we did not write (Python's `hpack` codec).
#[tokio::test]
async fn over_http2_a_request_with_a_connection_header_is_reset_and_te_trailers_passes() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&single_route(backend, "")).await;
    let script = r#"
import json
base = [(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", "/")]
requests = {
    1: [("connection", "x-hop"), ("x-hop", "secret")],
    3: [("keep-alive", "timeout=5")],
    5: [("te", "trailers"), ("x-kept", "1")],
}
for stream, extra in requests.items():
    conn.sendall(frame(1, 0x4 | 0x1, stream, encoder.encode(base + extra)))
    body = b""
    while True:
        kind, flags, on, payload = read_frame()
        if on != stream:
            continue
        if kind == 3:
            print(stream, "reset", int.from_bytes(payload[:4], "big"))
            break
        if kind == 1:
            print(stream, "headers")
        if kind == 0:
            body += payload
        if kind in (0, 1) and flags & 0x1:
            print(stream, "body", json.dumps(json.loads(body)["headers"], sort_keys=True))
            break
"#;
    let stdout = raw_http2_client(gw.addr.port(), script).await;
    let lines: Vec<&str> = stdout.lines().collect();
    // PROTOCOL_ERROR (1) for both malformed requests; the third is answered.
    assert!(lines.contains(&"1 reset 1"), "{stdout}");
    assert!(lines.contains(&"3 reset 1"), "{stdout}");
    let forwarded = lines
        .iter()
        .find_map(|l| l.strip_prefix("5 body "))
        .unwrap_or_else(|| panic!("no answer on stream 5: {stdout}"));
    let headers: serde_json::Value = serde_json::from_str(forwarded).expect("headers as JSON");
    assert_eq!(headers["te"], serde_json::json!(["trailers"]), "{stdout}");
    assert_eq!(headers["x-kept"], serde_json::json!(["1"]), "{stdout}");
    for hop in ["connection", "keep-alive", "x-hop"] {
        assert!(headers.get(hop).is_none(), "{hop} forwarded: {stdout}");
    }
}

/// An HTTP/2 client we did not write (raw frames, Python's `hpack` codec) reads how each
/// response header was encoded: the request id, new on every response, is sent "never
/// indexed", so it does not push the repeating headers out of the connection's table.
#[tokio::test]
async fn over_http2_the_request_id_is_never_indexed_and_other_headers_are() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&single_route(backend, "")).await;
    let script = r#"
from hpack import Decoder, NeverIndexedHeaderTuple
decoder = Decoder()
for stream in (1, 3):
    block = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", "/")])
    conn.sendall(frame(1, 0x4 | 0x1, stream, block))
    while True:
        kind, flags, on, payload = read_frame()
        if kind == 1 and on == stream:
            assert flags & 0x4 and not flags & 0x28, "one HEADERS frame, no padding or priority"
            for header in decoder.decode(payload):
                indexing = "never" if isinstance(header, NeverIndexedHeaderTuple) else "may"
                print(stream, header[0], indexing)
            break
"#;
    let stdout = raw_http2_client(gw.addr.port(), script).await;
    for stream in [1, 3] {
        let seen = |line: &str| stdout.lines().any(|l| l == format!("{stream} {line}"));
        assert!(seen(":status may"), "{stdout}");
        assert!(seen("x-request-id never"), "{stdout}");
        assert!(seen("content-type may"), "{stdout}");
        assert!(seen("x-backend may"), "{stdout}");
    }
}
