//! Streaming through the transcoder: server streams as a JSON array, NDJSON or server-sent
//! events, each message sent as it arrives; errors after the first message as a final error
//! object; client streams from a JSON array or NDJSON body.

use crate::common::*;
use crate::grpc_peers::{both_servers, tonic_server, GATE};
use crate::grpc_transcode::{call, call_with, library_gateway};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

fn books(shelf: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(
            |i| json!({"name": format!("shelves/{shelf}/books/{i}"), "title": format!("Book {i}")}),
        )
        .collect()
}

#[tokio::test]
async fn server_streams_are_written_in_each_format() {
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        let path = "/v1/shelves/s1/books?page_size=3";

        let array = call(&gw, "GET", path, "").await;
        assert_eq!(array.status, StatusCode::OK, "{server}: {}", array.text());
        assert_eq!(array.headers["content-type"], "application/json");
        assert_eq!(array.json(), Value::Array(books("s1", 3)), "{server}");

        let ndjson = call_with(&gw, "GET", path, "", &[("accept", "application/x-ndjson")]).await;
        assert_eq!(ndjson.headers["content-type"], "application/x-ndjson");
        let lines: Vec<Value> = ndjson
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(lines, books("s1", 3), "{server}");

        let sse = call_with(&gw, "GET", path, "", &[("accept", "text/event-stream")]).await;
        assert_eq!(sse.headers["content-type"], "text/event-stream");
        let events: Vec<Value> = sse
            .text()
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                serde_json::from_str(event.strip_prefix("data: ").expect("a data event"))
                    .expect("JSON")
            })
            .collect();
        assert_eq!(events, books("s1", 3), "{server}");

        let empty = call(&gw, "GET", "/v1/shelves/s1/books?page_size=0", "").await;
        assert_eq!(empty.json(), json!([]), "{server}");
    }
}

#[tokio::test]
async fn an_error_after_the_first_message_ends_the_stream_with_an_error_object() {
    let error = json!({"error": {"code": 5, "message": "the shelf ran out", "details": []}});
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        let path = "/v1/shelves/s2/books?page_size=2&page_token=fail";

        let array = call(&gw, "GET", path, "").await;
        assert_eq!(array.status, StatusCode::OK, "{server}");
        let mut expected = books("s2", 2);
        expected.push(error.clone());
        assert_eq!(array.json(), Value::Array(expected.clone()), "{server}");

        let ndjson = call_with(&gw, "GET", path, "", &[("accept", "application/x-ndjson")]).await;
        let lines: Vec<Value> = ndjson
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(lines, expected, "{server}");

        let sse = call_with(&gw, "GET", path, "", &[("accept", "text/event-stream")]).await;
        let text = sse.text();
        let last = text.trim_end().rsplit("\n\n").next().expect("an event");
        assert_eq!(
            serde_json::from_str::<Value>(
                last.strip_prefix("event: error\ndata: ")
                    .expect("an error event")
            )
            .expect("JSON"),
            error,
            "{server}"
        );

        // Before any message, the error is the whole answer, with its own status.
        let failed = call(
            &gw,
            "GET",
            "/v1/shelves/s2/books?page_size=0&page_token=fail",
            "",
        )
        .await;
        assert_eq!(failed.status, StatusCode::NOT_FOUND, "{server}");
        assert_eq!(failed.json(), error["error"], "{server}");
    }
}

#[tokio::test]
async fn each_message_is_sent_as_it_arrives() {
    let gw = library_gateway(tonic_server().await, "streaming: ndjson").await;
    let mut sender = h1_connection(gw.addr).await;
    let req = Request::get("/v1/shelves/s3/books?page_size=3&page_token=gate")
        .header("host", "h")
        .body(full(""))
        .expect("request");
    let response = within("the response head", sender.send_request(req))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    // The server holds the rest of the stream until the gate opens: the first book must
    // come through on its own.
    let first = within("the first message", body.frame())
        .await
        .expect("a frame")
        .expect("data")
        .into_data()
        .expect("data");
    let first: Value = serde_json::from_slice(first.trim_ascii()).expect("one JSON line");
    assert_eq!(first, books("s3", 1)[0]);
    GATE.notify_one();
    let rest = within("the rest", body.collect())
        .await
        .expect("body")
        .to_bytes();
    let rest: Vec<Value> = String::from_utf8_lossy(&rest)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(rest, books("s3", 3)[1..].to_vec());
}

#[tokio::test]
async fn client_streams_are_read_from_a_json_array_or_ndjson() {
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        let reply = call(
            &gw,
            "POST",
            "/v1/books:batchAdd",
            r#"[{"title":"a"}, {"title":"b","pages":"3"}]"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{server}: {}", reply.text());
        assert_eq!(
            reply.json(),
            json!({"books": [{"title": "a"}, {"title": "b", "pages": "3"}], "nextPageToken": "2"}),
            "{server}"
        );

        let req = Request::post("/v1/books:batchAdd")
            .header("host", "h")
            .header("content-type", "application/x-ndjson")
            .body(full(
                "{\"title\":\"x\"}\n{\"title\":\"y\"}\n{\"title\":\"z\"}",
            ))
            .expect("request");
        let reply = send(gw.addr, req).await;
        assert_eq!(
            reply.json()["nextPageToken"],
            "3",
            "{server}: {}",
            reply.text()
        );

        let empty = call(&gw, "POST", "/v1/books:batchAdd", "[]").await;
        assert_eq!(empty.json(), json!({"nextPageToken": "0"}), "{server}");

        for (body, names) in [
            (r#"[{"title":"a"}, {"pages":"x"}]"#, "message 2"),
            (r#"{"title":"a"}"#, "JSON array"),
            (r#"[{"title":"a"}"#, "closed"),
            (r#"[{"genre":"NOPE"}]"#, "genre"),
        ] {
            let reply = call(&gw, "POST", "/v1/books:batchAdd", body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{server}: {body}: {}",
                reply.text()
            );
            assert_eq!(reply.error_code(), "invalid_request", "{body}");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(message.contains(names), "{body}: {message}");
        }
    }
}
