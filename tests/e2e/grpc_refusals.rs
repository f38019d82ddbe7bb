//! What the transcoder refuses, and how: a streamed array without commas, a request body over
//! the message limit (refused while it is still arriving), an unknown enum name inside an
//! `Any`, and an upstream that answers a gRPC call with an HTTP error instead of a gRPC status.

use crate::common::*;
use crate::grpc_peers::python_server;
use crate::grpc_transcode::{call, library_config, library_gateway};
use http::{Response, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_streamed_array_without_commas_is_refused() {
    let gw = library_gateway(python_server().await, "").await;
    for body in [
        r#"[{"title":"a"} {"title":"b"}]"#,
        r#"[,{"title":"a"}]"#,
        r#"[{"title":"a"},]"#,
    ] {
        let reply = call(&gw, "POST", "/v1/books:batchAdd", body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        assert_eq!(reply.error_code(), "invalid_request", "{body}");
        let message = reply.json()["error"]["message"].to_string();
        assert!(message.contains("unexpected"), "{body}: {message}");
    }
    // The same elements with their commas go through.
    let reply = call(
        &gw,
        "POST",
        "/v1/books:batchAdd",
        r#"[{"title":"a"} , {"title":"b"}]"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["nextPageToken"], "2");
}

/// Reads from `stream` until a whole response head is in; the body may still be open.
async fn response_head(stream: &mut TcpStream) -> String {
    within("the response head", async {
        let mut out = Vec::new();
        let mut buffer = [0u8; 1024];
        while find(&out, b"\r\n\r\n").is_none() {
            let read = stream.read(&mut buffer).await.expect("read");
            assert!(read > 0, "closed before a response: {out:?}");
            out.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}

#[tokio::test]
async fn a_body_over_the_message_limit_is_refused_before_it_ends() {
    let gw = library_gateway(python_server().await, "max_request_message: 64").await;

    // Chunked: more than the limit arrives, and the rest never does. The answer must not
    // wait for the end of the body.
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let chunk = format!(r#"{{"text":"{}"#, "x".repeat(100));
    let head = format!(
        "POST /v1/echo HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n",
        chunk.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let answer = response_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A length over the limit is refused before any of the body is sent.
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let head = "POST /v1/echo HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\n\
                content-length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write");
    let answer = response_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");

    // Within the limit, the call goes through.
    let reply = call(&gw, "POST", "/v1/echo", r#"{"text":"short"}"#).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["text"], "short");
}

#[tokio::test]
async fn an_unknown_enum_name_inside_an_any_is_refused() {
    let gw = library_gateway(python_server().await, "").await;
    let book = |genre: &str| {
        json!({"any": {"@type": "type.googleapis.com/library.v1.Book", "title": "t", "genre": genre}})
            .to_string()
    };
    let reply = call(&gw, "POST", "/v1/echo", &book("NOPE")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(reply.error_code(), "invalid_request");
    let message = reply.json()["error"]["message"].to_string();
    assert!(
        message.contains("any.genre") && message.contains("NOPE"),
        "{message}"
    );

    // Inside an Any inside an Any too.
    let nested = json!({"any": {
        "@type": "type.googleapis.com/google.protobuf.Any",
        "value": {"@type": "type.googleapis.com/library.v1.Book", "genre": "NOPE"}
    }});
    let reply = call(&gw, "POST", "/v1/echo", &nested.to_string()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());

    // A name the enum has goes through, and comes back.
    let reply = call(&gw, "POST", "/v1/echo", &book("SCIENCE")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["any"]["genre"], "SCIENCE");
}

#[tokio::test]
async fn an_http_error_instead_of_a_grpc_answer_is_mapped_by_grpcs_table() {
    // An h2c upstream that answers every call with the HTTP status the caller asked for in
    // `x-answer-status` (forwarded as metadata), as a proxy or a server that is not gRPC would.
    let upstream = backend(|req| async move {
        let status = req
            .headers()
            .get("x-answer-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(500);
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(full("not gRPC"))
            .expect("response")
    })
    .await;
    let gw = TestGateway::start(&library_config(upstream, "")).await;
    for (http, code, answered) in [
        (400, 13, 500),
        (401, 16, 401),
        (403, 7, 403),
        (404, 12, 501),
        (429, 14, 503),
        (502, 14, 503),
        (503, 14, 503),
        (504, 14, 503),
        (500, 2, 500),
    ] {
        for path in ["/v1/echo/x", "/v1/shelves/s/books?pageSize=2"] {
            let reply = crate::grpc_transcode::call_with(
                &gw,
                "GET",
                path,
                "",
                &[("x-answer-status", &http.to_string())],
            )
            .await;
            assert_eq!(
                reply.status.as_u16(),
                answered,
                "{http} {path}: {}",
                reply.text()
            );
            assert_eq!(reply.headers["content-type"], "application/json", "{http}");
            assert_eq!(
                reply.json(),
                json!({"code": code, "message": format!("the upstream answered HTTP {http}"), "details": []}),
                "{http} {path}"
            );
        }
    }
}
