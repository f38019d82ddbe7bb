//! Transcoding cases with witnesses of their own: the `{var=*}` template form and path
//! variables of the wrong type, a gRPC upstream over TLS (ALPN h2) — both against Python's
//! grpcio — and gRPC-Web through a client we did not write (Python's sonora).

use crate::common::*;
use crate::grpc_peers::{proto_dir, python_server};
use crate::grpc_transcode::{call, library_config, library_gateway};
use http::StatusCode;
use serde_json::json;
use std::path::Path;
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn a_single_segment_wildcard_variable_takes_one_decoded_segment() {
    let backend = python_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Book's fields 1 and 2 are the test library's: the Python server echoes the request.
    let proto = dir.path().join("books.proto");
    std::fs::write(
        &proto,
        r#"syntax = "proto3";
package library.v1;
import "google/api/annotations.proto";
message Book { string name = 1; string title = 2; }
service Library {
  rpc GetBook(Book) returns (Book) {
    option (google.api.http) = { get: "/v2/books/{name=*}" };
  }
}
"#,
    )
    .expect("write proto");
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - name: library
    endpoints: ["{backend}"]
    protocol: http2
    grpc: {{ protos: ["{}"] }}
routes:
  - {{ cluster: library, grpc_transcode: {{}} }}
"#,
        proto.display()
    )))
    .await;
    for (path, name) in [("/v2/books/abc", "abc"), ("/v2/books/a%2Fb%20c", "a/b c")] {
        let reply = call(&gw, "GET", path, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert_eq!(reply.headers["x-served-by"], "GetBook", "{path}");
        assert_eq!(reply.json(), json!({"name": name}), "{path}");
    }
    // `*` is one segment: two are not this binding.
    let reply = call(&gw, "GET", "/v2/books/a/b", "").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_path_variable_of_the_wrong_type_is_a_400_naming_it() {
    let gw = library_gateway(python_server().await, "").await;
    // `/v1/echo/{author.name}/{count}`: count is an int32; `/v1/echo/{text}`: a string.
    for (path, names) in [
        ("/v1/echo/bob/many", "count"),
        ("/v1/echo/bob/99999999999", "count"),
        ("/v1/echo/bob/1.5", "count"),
        ("/v1/echo/%FF%FE", "text"),
    ] {
        let reply = call(&gw, "GET", path, "").await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text()
        );
        assert_eq!(reply.error_code(), "invalid_request", "{path}");
        let message = reply.json()["error"]["message"].to_string();
        assert!(
            message.contains(&format!("path variable `{names}`")),
            "{path}: {message}"
        );
    }
    let reply = call(&gw, "GET", "/v1/echo/bob/42", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"author": {"name": "bob"}, "count": 42})
    );
}

/// A CA, and a certificate for `localhost` it signed, written into `dir`: (ca, cert, key).
fn certificates(dir: &Path) -> (String, String, String) {
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
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server-key.pem", server_key.serialize_pem()),
    )
}

#[tokio::test]
async fn transcoding_reaches_a_grpc_upstream_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    // Python's grpcio serving over TLS only: it speaks HTTP/2 only to a client that
    // negotiated `h2` by ALPN.
    let mut server = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tools/grpc_peer.py"
        ))
        .arg("server")
        .arg(proto_dir())
        .arg(dir.path().join("generated"))
        .arg(&cert)
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let stdout = server.stdout.take().expect("stdout");
    let mut line = String::new();
    within(
        "the Python gRPC server over TLS",
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("read");
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the Python gRPC server did not start: {line:?}"));
    let backend = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let yaml = library_config(backend, "").replace(
        "    protocol: http2\n",
        &format!("    protocol: http2\n    tls: {{ ca: \"{ca}\", server_name: localhost }}\n"),
    );
    assert!(yaml.contains("tls:"), "{yaml}");
    let gw = TestGateway::start(&yaml).await;

    let reply = call(&gw, "GET", "/v1/shelves/1/books/2", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["x-served-by"], "GetBook");
    assert_eq!(reply.json(), json!({"name": "shelves/1/books/2"}));

    let reply = call(&gw, "POST", "/v1/echo", r#"{"text":"over tls","big":"7"}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json(), json!({"text": "over tls", "big": "7"}));

    // A status in trailers crosses TLS too.
    let reply = call(
        &gw,
        "POST",
        "/v1/fail",
        r#"{"code":5,"message":"gone","afterHeaders":true}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    assert_eq!(reply.json()["message"], "gone");

    let reply = call(&gw, "GET", "/v1/shelves/s/books?pageSize=2", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!([
            {"name": "shelves/s/books/0", "title": "Book 0"},
            {"name": "shelves/s/books/1", "title": "Book 1"}
        ])
    );
    drop(server);
}

#[tokio::test]
async fn grpc_web_round_trips_with_a_client_we_did_not_write() {
    let backend = python_server().await;
    let gw = TestGateway::start(&library_config(backend, "").replace(
        "grpc_transcode: {  }",
        "grpc_transcode: {  }\n    grpc_web: true",
    ))
    .await;
    let out = tempfile::tempdir().expect("tempdir");
    let output = within(
        "the sonora gRPC-Web client",
        tokio::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/tools/grpc_peer.py"
            ))
            .arg("web")
            .arg(proto_dir())
            .arg(out.path())
            .arg(format!("http://{}", gw.addr))
            .output(),
    )
    .await
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "WEB_UNARY text=web big=1152921504606846976 served_by=Echo",
            "WEB_FAIL NOT_FOUND | no such book",
            "WEB_STREAM 3 shelves/s1/books/2 NOT_FOUND",
        ],
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_bidirectional_method_is_transcoded_from_a_json_array_to_a_json_array() {
    // `Chat` has no HTTP rule: auto-mapping makes it callable; each book in the body is one
    // request message and each answer one element of the answer.
    let gw = library_gateway(python_server().await, "").await;
    let reply = call(
        &gw,
        "POST",
        "/library.v1.Library/Chat",
        r#"[{"title":"a"}, {"title":"b"}]"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["x-served-by"], "Chat");
    assert_eq!(
        reply.json(),
        json!([{"name": "a!", "title": "a"}, {"name": "b!", "title": "b"}])
    );
    let reply = crate::grpc_transcode::call_with(
        &gw,
        "POST",
        "/library.v1.Library/Chat",
        r#"[{"title":"c"}]"#,
        &[("accept", "application/x-ndjson")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "{\"name\":\"c!\",\"title\":\"c\"}\n");
}
