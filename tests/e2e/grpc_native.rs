//! Native gRPC and gRPC-Web through the gateway: a Python grpcio client (code made by protoc,
//! none of ours) calls through plain routes and transcoding routes, over h2c and over TLS
//! with ALPN h2, with trailers and streams intact; a gRPC-Web caller gets its trailers in the
//! body.

use crate::common::*;
use crate::grpc_peers::{pool, proto_dir, python_server, tonic_server};
use crate::grpc_transcode::library_config;
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, StatusCode};
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};
use std::net::SocketAddr;
use std::path::Path;

/// Run the Python client against `target`; its output lines.
async fn python_client(target: &str, root_ca: Option<&Path>) -> Vec<String> {
    let out = tempfile::tempdir().expect("tempdir");
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/grpc_peer.py"
        ))
        .arg("client")
        .arg(proto_dir())
        .arg(out.path())
        .arg(target);
    if let Some(ca) = root_ca {
        command.arg(ca);
    }
    run_peer("the Python gRPC client", command)
        .await
        .lines()
        .map(str::to_string)
        .collect()
}

fn expected_native_lines() -> Vec<String> {
    [
        "UNARY text=native big=1152921504606846976 served_by=Echo",
        "FAIL NOT_FOUND | no such book ✓ | trailer=failed details=True",
        "STREAM 3 shelves/s1/books/2 NOT_FOUND",
        "CLIENT_STREAM 2 ['a', 'b']",
        "BIDI one! two! 0 OK",
        "GREETER Hello, native",
        "GETBOOK OK",
    ]
    .map(str::to_string)
    .to_vec()
}

#[tokio::test]
async fn native_grpc_calls_pass_through_plain_and_transcoding_routes() {
    let backend = python_server().await;
    // A plain route to an HTTP/2 cluster: no gRPC settings at all.
    let plain = TestGateway::start(&config(&format!(
        "clusters:\n  - {{ name: g, endpoints: [\"{backend}\"], protocol: http2 }}\nroutes:\n  - {{ cluster: g }}\n"
    )))
    .await;
    assert_eq!(
        python_client(&plain.addr.to_string(), None).await,
        expected_native_lines()
    );
    // A transcoding route passes native calls through untouched.
    let transcoding = TestGateway::start(&library_config(backend, "")).await;
    assert_eq!(
        python_client(&transcoding.addr.to_string(), None).await,
        expected_native_lines()
    );
}

#[tokio::test]
async fn native_grpc_over_tls_with_alpn_h2() {
    let backend = python_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("sign");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let ca_path = write("ca.pem", ca.pem());
    let cert = write("server.pem", server.pem());
    let key = write("server-key.pem", server_key.serialize_pem());
    // Clients may present a certificate; GetBook's route requires one, which the Python
    // client does not have: the gateway refuses it with its own status, 16 UNAUTHENTICATED.
    let gw = TestGateway::start(&format!(
        "access_log: {{ enabled: false }}
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: \"{}\", key: \"{}\" }}]
      client_auth: {{ mode: optional, ca: \"{}\" }}
clusters:
  - {{ name: g, endpoints: [\"{backend}\"], protocol: http2 }}
routes:
  - {{ match: {{ path_prefix: /library.v1.Library/GetBook }}, cluster: g, require_client_cert: true }}
  - {{ cluster: g }}
",
        cert.display(),
        key.display(),
        ca_path.display()
    ))
    .await;
    let mut expected = expected_native_lines();
    *expected.last_mut().expect("lines") = String::from("GETBOOK UNAUTHENTICATED");
    assert_eq!(
        python_client(&gw.addr.to_string(), Some(&ca_path)).await,
        expected
    );
}

#[tokio::test]
async fn gateway_errors_reach_grpc_callers_as_grpc_statuses() {
    let backend = python_server().await;
    let dead = closed_port().await;
    let gw = TestGateway::start(&config(&format!(
        "clusters:
  - {{ name: g, endpoints: [\"{backend}\"], protocol: http2 }}
  - {{ name: dead, endpoints: [\"{dead}\"], protocol: http2 }}
routes:
  - {{ match: {{ path_prefix: /library.v1.Library/Echo }}, cluster: g, max_body_size: 16 }}
  - {{ match: {{ path_prefix: /library.v1.Library/GetBook }}, cluster: dead }}
"
    )))
    .await;
    let script = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
for method, payload in (("/library.v1.Library/Echo", b"\x0a\x40" + b"x" * 64), ("/library.v1.Library/GetBook", b"")):
    try:
        channel.unary_unary(method)(payload, timeout=20)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name)
"#;
    let output = within(
        "the Python gRPC client",
        tokio::process::Command::new("python3")
            .args(["-c", script, &gw.addr.to_string()])
            .output(),
    )
    .await
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `-text` body: base64, possibly several padded chunks one after the other.
fn decode_web_text(text: &[u8]) -> Bytes {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = text.iter().peekable();
    while let Some(&byte) = bytes.next() {
        chunk.push(byte);
        if byte == b'=' && bytes.peek() != Some(&&b'=') {
            out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(&chunk)
                    .expect("base64 chunk"),
            );
            chunk.clear();
        }
    }
    out.extend(
        base64::engine::general_purpose::STANDARD
            .decode(&chunk)
            .expect("base64"),
    );
    Bytes::from(out)
}

/// A gRPC-Web body: each message framed, as a browser's client library sends it.
fn web_frames(messages: &[DynamicMessage]) -> Bytes {
    let mut out = BytesMut::new();
    for message in messages {
        let encoded = message.encode_to_vec();
        out.extend_from_slice(&[0]);
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&encoded);
    }
    out.freeze()
}

/// A gRPC-Web response body: its messages and its trailer block.
fn read_web_frames(mut body: Bytes) -> (Vec<Bytes>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers = String::from_utf8_lossy(&payload).into_owned();
        } else {
            messages.push(payload);
        }
    }
    assert!(body.is_empty(), "whole frames only");
    (messages, trailers)
}

fn message(name: &str, json: serde_json::Value) -> DynamicMessage {
    let descriptor = pool().get_message_by_name(name).expect("message type");
    DynamicMessage::deserialize(descriptor, json).expect("message")
}

async fn web_call(addr: SocketAddr, path: &str, body: Bytes, text: bool) -> Reply {
    let content_type = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web+proto"
    };
    let body = if text {
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(&body))
    } else {
        body
    };
    // Over HTTP/1.1, as browsers often do.
    let req = Request::post(path)
        .header("host", "h")
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(full(body))
        .expect("request");
    send(addr, req).await
}

#[tokio::test]
async fn grpc_web_calls_round_trip_with_trailers_in_the_body() {
    for backend in [python_server().await, tonic_server().await] {
        let gw = TestGateway::start(&library_config(backend, "").replace(
            "grpc_transcode: {  }",
            "grpc_transcode: {  }\n    grpc_web: true",
        ))
        .await;
        for text in [false, true] {
            let book = message(
                "library.v1.Book",
                serde_json::json!({"name": "shelves/1/books/2"}),
            );
            let reply = web_call(
                gw.addr,
                "/library.v1.Library/GetBook",
                web_frames(std::slice::from_ref(&book)),
                text,
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let content_type = reply.headers["content-type"].to_str().expect("ascii");
            assert!(content_type.starts_with(if text {
                "application/grpc-web-text"
            } else {
                "application/grpc-web"
            }));
            let body = if text {
                decode_web_text(&reply.body)
            } else {
                reply.body.clone()
            };
            let (messages, trailers) = read_web_frames(body);
            assert_eq!(messages.len(), 1, "text {text}");
            let echoed =
                DynamicMessage::decode(book.descriptor(), messages[0].clone()).expect("a Book");
            assert_eq!(echoed, book);
            assert!(
                trailers.contains("grpc-status: 0\r\n"),
                "text {text}: {trailers:?}"
            );
        }

        // A `-text` body that is not base64: the caller hears why, as a gRPC status.
        let req = Request::post("/library.v1.Library/GetBook")
            .header("host", "h")
            .header("content-type", "application/grpc-web-text")
            .body(full("!!!!not base64"))
            .expect("request");
        let reply = send(gw.addr, req).await;
        assert_eq!(reply.headers["grpc-status"], "3", "{:?}", reply.headers);
        assert!(reply.headers["grpc-message"]
            .to_str()
            .unwrap_or("")
            .contains("base64"));

        // A stream, and its error after the messages, in the trailer frame.
        let request = message(
            "library.v1.ListBooksRequest",
            serde_json::json!({"shelf": "w", "pageSize": 2, "pageToken": "fail"}),
        );
        let reply = web_call(
            gw.addr,
            "/library.v1.Library/ListBooks",
            web_frames(&[request]),
            false,
        )
        .await;
        let (messages, trailers) = read_web_frames(reply.body.clone());
        assert_eq!(messages.len(), 2);
        assert!(trailers.contains("grpc-status: 5\r\n"), "{trailers:?}");
        // The message as the server encoded it (spaces may be percent-encoded).
        let trailers = trailers.replace("%20", " ");
        assert!(
            trailers.contains("grpc-message: the shelf ran out\r\n"),
            "{trailers:?}"
        );
    }
}
