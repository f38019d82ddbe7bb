//! HTTP/JSON → gRPC transcoding, end to end: the gateway compiles the test `.proto` files and
//! transcodes calls to two gRPC servers — the in-process tonic server and Python's grpcio
//! (tests/tools/grpc_peer.py) — which echo what they receive, so every check reads what the
//! gateway put into the request message and how it rendered the answer.

use crate::common::*;
use crate::grpc_peers::{both_servers, proto_dir, python_server, tonic_server};
use http::{Request, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;

/// A gateway with the library cluster at `backend` and one transcoding route with `route`
/// keys (inside `grpc_transcode: { … }`).
pub async fn library_gateway(backend: SocketAddr, route: &str) -> TestGateway {
    TestGateway::start(&library_config(backend, route)).await
}

pub fn library_config(backend: SocketAddr, route: &str) -> String {
    let protos = proto_dir();
    let p = protos.display();
    config(&format!(
        r#"clusters:
  - name: library
    endpoints: ["{backend}"]
    protocol: http2
    grpc:
      protos: ["{p}/library/v1/library.proto", "{p}/greeter.proto"]
      include_paths: ["{p}"]
routes:
  - match: {{ path_prefix: / }}
    cluster: library
    timeout: 20s
    grpc_transcode: {{ {route} }}
"#
    ))
}

/// One HTTP/1.1 call with a JSON body (or none when `body` is empty).
pub async fn call(gw: &TestGateway, method: &str, path: &str, body: &str) -> Reply {
    call_with(gw, method, path, body, &[]).await
}

pub async fn call_with(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example.com");
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(gw.addr, req.body(full(body.to_string())).expect("request")).await
}

fn json_of(reply: &Reply, what: &str) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json", "{what}");
    reply.json()
}

#[tokio::test]
async fn every_template_form_reaches_its_method() {
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        let cases: Vec<(&str, &str, &str, &str, Value)> = vec![
            (
                "GET",
                "/v1/shelves/1/books/2",
                "",
                "GetBook",
                json!({"name": "shelves/1/books/2"}),
            ),
            // A literal segment beats a wildcard in the same place.
            (
                "GET",
                "/v1/shelves/special/books/T",
                "",
                "GetSpecialBook",
                json!({"title": "T"}),
            ),
            (
                "DELETE",
                "/v1/shelves/1/books/2",
                "",
                "DeleteBook",
                json!({}),
            ),
            (
                "POST",
                "/v1/shelves/1/books/2:publish",
                r#"{"title":"x"}"#,
                "PublishBook",
                json!({"name": "shelves/1/books/2", "title": "x"}),
            ),
            (
                "POST",
                "/v1/shelves/s1/books",
                r#"{"title":"t","pages":"12"}"#,
                "CreateBook",
                json!({"shelf": "s1", "book": {"title": "t", "pages": "12"}}),
            ),
            // additional_bindings
            (
                "PUT",
                "/v1/shelves/s1/books/b9",
                r#"{"title":"t"}"#,
                "CreateBook",
                json!({"shelf": "s1", "bookId": "b9", "book": {"title": "t"}}),
            ),
            // A nested field as the variable, below a body field.
            (
                "PATCH",
                "/v1/shelves/1/books/2",
                r#"{"title":"n"}"#,
                "UpdateBook",
                json!({"book": {"name": "shelves/1/books/2", "title": "n"}}),
            ),
            // One segment: every escape decoded.
            (
                "GET",
                "/v1/echo/hello%20world%2Fx",
                "",
                "Echo",
                json!({"text": "hello world/x"}),
            ),
            (
                "GET",
                "/v1/echo/Ann/42",
                "",
                "Echo",
                json!({"author": {"name": "Ann"}, "count": 42}),
            ),
            ("PURGE", "/v1/cache/x", "", "Purge", json!({"name": "x"})),
            // Auto-mapping of a method without a rule.
            (
                "POST",
                "/library.v1.Library/Unannotated",
                r#"{"text":"auto"}"#,
                "Unannotated",
                json!({"text": "auto"}),
            ),
        ];
        for (method, path, body, served_by, expected) in cases {
            let reply = call(&gw, method, path, body).await;
            let what = format!("{server}: {method} {path}");
            assert_eq!(json_of(&reply, &what), expected, "{what}");
            if server == "python" || served_by != "DeleteBook" {
                assert_eq!(reply.headers["x-served-by"], served_by, "{what}");
            }
        }

        // `{path=**}` keeps reserved characters encoded; an HttpBody answer is sent as is.
        let file = call(&gw, "GET", "/v1/files/a/b%2Fc/d%20e.txt", "").await;
        assert_eq!(file.status, StatusCode::OK, "{server}: {}", file.text());
        assert_eq!(file.headers["content-type"], "text/plain", "{server}");
        assert_eq!(file.text(), "file:a/b%2Fc/d e.txt", "{server}");

        // response_body: the field alone is the answer (a default one too).
        let title = call(&gw, "GET", "/v1/shelves/1/books/2/title?title=Dune", "").await;
        assert_eq!(json_of(&title, server), json!("Dune"), "{server}");
        let untitled = call(&gw, "GET", "/v1/shelves/1/books/2/title", "").await;
        assert_eq!(json_of(&untitled, server), json!(""), "{server}");

        // An existing service with no package and no rules: `/Service/Method`.
        let hello = call(&gw, "POST", "/Greeter/SayHello", r#"{"name":"Ann"}"#).await;
        assert_eq!(
            json_of(&hello, server),
            json!({"message": "Hello, Ann"}),
            "{server}"
        );

        // A known path with another method: 405 with Allow; an unknown path: 404. JSON both.
        let wrong = call(&gw, "POST", "/v1/shelves/1/books/2", "").await;
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED, "{server}");
        assert_eq!(wrong.error_code(), "method_not_allowed");
        assert_eq!(
            wrong.headers["allow"], "GET, DELETE, PUT, PATCH",
            "{server}"
        );
        let auto_get = call(&gw, "GET", "/library.v1.Library/Unannotated", "").await;
        assert_eq!(auto_get.status, StatusCode::METHOD_NOT_ALLOWED, "{server}");
        assert_eq!(auto_get.headers["allow"], "POST");
        let unknown = call(&gw, "GET", "/v2/shelves", "").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{server}");
        assert_eq!(unknown.error_code(), "route_not_found");
        // An annotated method is not auto-mapped as well.
        let annotated = call(&gw, "POST", "/library.v1.Library/GetBook", "{}").await;
        assert_eq!(annotated.status, StatusCode::NOT_FOUND, "{server}");
    }
}

#[tokio::test]
async fn a_mount_prefix_and_auto_mapping_are_per_route() {
    let addr = python_server().await;
    let gw = library_gateway(addr, "mount: /library, auto_mapping: false").await;
    let book = call(&gw, "GET", "/library/v1/shelves/1/books/2", "").await;
    assert_eq!(
        json_of(&book, "mounted"),
        json!({"name": "shelves/1/books/2"})
    );
    let outside = call(&gw, "GET", "/v1/shelves/1/books/2", "").await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    let auto = call(&gw, "POST", "/library/library.v1.Library/Unannotated", "{}").await;
    assert_eq!(auto.status, StatusCode::NOT_FOUND, "auto-mapping is off");
}

#[tokio::test]
async fn query_parameters_are_typed_by_their_fields() {
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        let query = "count=5&big=9007199254740993&ubig=18446744073709551615&flag=true&ratio=0.5\
                     &blob=AQID&genre=SCIENCE&numbers=1&numbers=2&genres=FICTION&genres=2\
                     &author.name=Bo+Li&author.born=1970&when=2024-01-02T03:04:05Z&wait=1.5s\
                     &mask=a,b.c&maybe=7&small=1.25&delta=-3&maybe_flag=false&unknown=1";
        let reply = call(&gw, "GET", &format!("/v1/echo/x?{query}"), "").await;
        let echoed = json_of(&reply, server);
        assert_eq!(
            echoed,
            json!({
                "text": "x", "count": 5, "big": "9007199254740993",
                "ubig": "18446744073709551615", "flag": true, "ratio": 0.5, "blob": "AQID",
                "genre": "SCIENCE", "numbers": [1, 2], "genres": ["FICTION", "SCIENCE"],
                "author": {"name": "Bo Li", "born": 1970}, "when": "2024-01-02T03:04:05Z",
                "wait": "1.500s", "mask": "a,b.c", "maybe": 7, "small": 1.25, "delta": -3,
                "maybeFlag": false
            }),
            "{server}"
        );
        // The path wins over the query for the field it sets.
        let path_wins = call(&gw, "GET", "/v1/echo/fromPath?text=fromQuery", "").await;
        assert_eq!(json_of(&path_wins, server)["text"], "fromPath");

        for (query, names) in [
            ("count=abc", "count"),
            ("count=99999999999", "count"),
            ("genre=NOPE", "genre"),
            ("flag=maybe", "flag"),
            ("blob=%%%", "blob"),
            ("big=1.5", "big"),
            ("author=x", "author"),
            ("count=1&count=2", "count"),
            ("when=yesterday", "when"),
        ] {
            let reply = call(&gw, "GET", &format!("/v1/echo/x?{query}"), "").await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{server}: {query}: {}",
                reply.text()
            );
            assert_eq!(reply.error_code(), "invalid_request", "{query}");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(message.contains(names), "{query}: {message}");
        }
    }
    let gw = library_gateway(python_server().await, "unknown_query_parameters: reject").await;
    let reply = call(&gw, "GET", "/v1/echo/x?nope=1", "").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("nope"));
}

#[tokio::test]
async fn json_bodies_are_read_strictly_but_unknown_fields_are_ignored() {
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "max_json_depth: 8").await;
        let everything = json!({
            "text": "t", "big": "-5", "when": "2024-01-02T03:04:05.500Z", "wait": "3s",
            "mask": "a,bC", "extra": {"k": [1.5, "x", null, true], "o": {"p": 2.5}},
            "anything": {"a": [0.5]}, "maybe": 0,
            "any": {"@type": "type.googleapis.com/library.v1.Author", "name": "A", "born": 3},
            "counts": {"a": 1, "b": 2}, "genres": ["SCIENCE", 1], "blob": "_-8=",
        });
        let reply = call(&gw, "POST", "/v1/echo", &everything.to_string()).await;
        let echoed = json_of(&reply, server);
        assert_eq!(echoed["extra"], everything["extra"], "{server}");
        assert_eq!(echoed["anything"], everything["anything"], "{server}");
        assert_eq!(echoed["any"], everything["any"], "{server}");
        assert_eq!(echoed["maybe"], 0, "{server}: a wrapper's zero is printed");
        assert_eq!(echoed["when"], "2024-01-02T03:04:05.500Z");
        assert_eq!(echoed["wait"], "3s");
        assert_eq!(echoed["mask"], "a,bC");
        assert_eq!(echoed["counts"], json!({"a": 1, "b": 2}));
        assert_eq!(echoed["genres"], json!(["SCIENCE", "FICTION"]));
        assert_eq!(
            echoed["blob"], "/+8=",
            "URL-safe base64 read, standard printed"
        );

        let unknown = call(&gw, "POST", "/v1/echo", r#"{"text":"a","nope":{"x":1}}"#).await;
        assert_eq!(json_of(&unknown, server), json!({"text": "a"}));

        let deep = format!("{{\"extra\":{}1{}}}", "{\"a\":".repeat(9), "}".repeat(9));
        for (body, names) in [
            ("{", "not valid JSON"),
            ("{} x", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"count":"abc"}"#, "count"),
            (r#"{"count":1.5}"#, "count"),
            (r#"{"genre":"NOPE"}"#, "genre"),
            (r#"{"author":{"born":"x"}}"#, "author.born"),
            (r#"{"genres":["FICTION","NOPE"]}"#, "genres"),
            (r#"{"when":"not a time"}"#, "when"),
            (deep.as_str(), "deeper"),
        ] {
            let reply = call(&gw, "POST", "/v1/echo", body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{server}: {body}: {}",
                reply.text()
            );
            assert_eq!(reply.error_code(), "invalid_request");
            let message = reply.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(message.contains(names), "{body}: {message}");
        }
        // Invalid UTF-8 in a string.
        let req = Request::post("/v1/echo")
            .header("host", "h")
            .header("content-type", "application/json")
            .body(full(&b"{\"text\":\"\xff\"}"[..]))
            .expect("request");
        let reply = send(gw.addr, req).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.text().contains("UTF-8"), "{}", reply.text());
    }
}

#[tokio::test]
async fn grpc_statuses_become_http_statuses_with_google_rpc_status_bodies() {
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        for after_headers in [false, true] {
            for (code, status) in table {
                let body = json!({"code": code, "message": "no such book ✓ 100%", "after_headers": after_headers});
                let reply = call(&gw, "POST", "/v1/fail", &body.to_string()).await;
                let what = format!("{server}: code {code}, after headers {after_headers}");
                assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.text());
                assert_eq!(reply.headers["content-type"], "application/json", "{what}");
                assert_eq!(
                    reply.json(),
                    json!({"code": code, "message": "no such book ✓ 100%", "details": []}),
                    "{what}"
                );
            }
        }
        let body = json!({"code": 3, "message": "bad", "with_details": true});
        let reply = call(&gw, "POST", "/v1/fail", &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            reply.json(),
            json!({"code": 3, "message": "bad", "details": [{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "name", "description": "must not be empty"}]
            }]}),
            "{server}"
        );
        if server == "python" {
            assert_eq!(
                reply.headers["x-trailer"], "failed",
                "trailing metadata as headers"
            );
        }
        // A detail of a type the descriptors do not know: code and message only.
        let body = json!({"code": 9, "message": "not yet", "unknown_detail": true});
        let reply = call(&gw, "POST", "/v1/fail", &body.to_string()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{server}");
        assert_eq!(
            reply.json(),
            json!({"code": 9, "message": "not yet", "details": []}),
            "{server}"
        );
    }
}

#[tokio::test]
async fn print_options_shape_the_json() {
    let addr = python_server().await;
    let gw = library_gateway(
        addr,
        "json: { emit_defaults: true, proto_field_names: true, enums_as_ints: true, pretty: true }",
    )
    .await;
    let reply = call(&gw, "GET", "/v1/echo/x?genre=SCIENCE&maybe_flag=true", "").await;
    assert!(reply.text().contains("\n  \""), "pretty: {}", reply.text());
    let echoed = json_of(&reply, "print options");
    assert_eq!(echoed["genre"], 2);
    assert_eq!(echoed["maybe_flag"], true);
    assert_eq!(echoed["count"], 0, "defaults are printed");
    assert_eq!(echoed["big"], "0");
}

#[tokio::test]
async fn metadata_travels_both_ways_and_the_route_timeout_is_the_deadline() {
    let addr = python_server().await;
    let gw = library_gateway(addr, "").await;
    let reply = call_with(
        &gw,
        "GET",
        "/v1/metadata",
        "",
        &[
            ("x-tenant", "t1"),
            ("authorization", "Bearer abc"),
            ("x-trace-bin", "AAEC"),
            ("x-broken-bin", "!!"),
            ("grpc-timeout", "1n"),
            ("grpc-encoding", "gzip"),
        ],
    )
    .await;
    let echoed = json_of(&reply, "metadata");
    let extra = &echoed["extra"];
    assert_eq!(extra["x-tenant"], "t1");
    assert_eq!(extra["authorization"], "Bearer abc");
    assert_eq!(
        extra["x-trace-bin"], "AAEC",
        "binary metadata arrives as bytes"
    );
    assert!(extra.get("x-broken-bin").is_none(), "not base64: dropped");
    assert_eq!(
        extra["x-request-id"],
        reply.headers["x-request-id"].to_str().unwrap()
    );
    assert!(extra.get("x-forwarded-for").is_some());
    // The route's 20s timeout is the call's deadline, not the caller's grpc-timeout.
    let remaining = echoed["ratio"].as_f64().expect("time remaining");
    assert!(remaining > 1.0 && remaining <= 20.0, "{remaining}");
    assert_eq!(reply.headers["x-served-by"], "Metadata");
    assert_eq!(reply.headers["x-trailer"], "done");

    // The tonic server sees every header of the call: of the reserved `grpc-*` names, only
    // the gateway's deadline arrives, and it is the route's timeout.
    let gw = library_gateway(tonic_server().await, "").await;
    let reply = call_with(
        &gw,
        "GET",
        "/v1/metadata",
        "",
        &[
            ("x-tenant", "t2"),
            ("grpc-timeout", "1n"),
            ("grpc-encoding", "gzip"),
            ("grpc-custom", "x"),
        ],
    )
    .await;
    let extra = json_of(&reply, "metadata (tonic)")["extra"].clone();
    assert_eq!(extra["x-tenant"], "t2");
    assert_eq!(extra["grpc-timeout"], "20000m", "{extra}");
    assert!(
        extra.get("grpc-encoding").is_none() && extra.get("grpc-custom").is_none(),
        "{extra}"
    );
}

#[tokio::test]
async fn http_bodies_pass_as_they_are() {
    for (server, addr) in both_servers().await {
        let gw = library_gateway(addr, "").await;
        let req = Request::post("/v1/upload")
            .header("host", "h")
            .header("content-type", "text/csv")
            .body(full("a,b\n1,2\n"))
            .expect("request");
        let reply = send(gw.addr, req).await;
        assert_eq!(reply.status, StatusCode::OK, "{server}: {}", reply.text());
        assert_eq!(reply.headers["content-type"], "text/csv", "{server}");
        assert_eq!(reply.text(), "a,b\n1,2\n");
    }
}

#[tokio::test]
async fn message_size_limits_answer_413_and_502() {
    let addr = python_server().await;
    let gw = library_gateway(addr, "max_request_message: 64, max_response_message: 64").await;
    let long = "x".repeat(100);
    let reply = call(&gw, "POST", "/v1/echo", &json!({"text": long}).to_string()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "message_too_large");
    // Small enough to send, too large once the server has added to it.
    let reply = call(&gw, "GET", &format!("/v1/files/{}", "y".repeat(60)), "").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.error_code(), "response_message_too_large");
}

/// A small library proto: `GetBook`, and `PublishBook` when `publish` is set.
fn small_library(publish: bool) -> String {
    let publish = if publish {
        r#"
  rpc PublishBook(Book) returns (Book) {
    option (google.api.http) = { post: "/v1/{name=shelves/*/books/*}:publish" body: "*" };
  }"#
    } else {
        ""
    };
    format!(
        r#"syntax = "proto3";
package library.v1;
import "google/api/annotations.proto";
message Book {{ string name = 1; string title = 2; }}
service Library {{
  rpc GetBook(Book) returns (Book) {{
    option (google.api.http) = {{ get: "/v1/{{name=shelves/*/books/*}}" }};
  }}{publish}
}}
"#
    )
}

#[tokio::test]
async fn a_reload_with_a_changed_proto_adds_a_route_and_a_broken_proto_is_refused() {
    let addr = python_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("protos")).expect("mkdir");
    let proto = dir.path().join("protos/library.proto");
    std::fs::write(&proto, small_library(false)).expect("write proto");
    let path = dir.path().join("portico.yaml");
    // The proto path is relative to the config file.
    std::fs::write(
        &path,
        config(&format!(
            r#"clusters:
  - name: library
    endpoints: ["{addr}"]
    protocol: http2
    grpc: {{ protos: [protos/library.proto] }}
routes:
  - {{ cluster: library, grpc_transcode: {{}} }}
"#
        )),
    )
    .expect("write config");
    let gw = TestGateway::start_file(path.clone()).await;
    let publish = || {
        call(
            &gw,
            "POST",
            "/v1/shelves/1/books/2:publish",
            r#"{"title":"t"}"#,
        )
    };
    let before = publish().await;
    assert_eq!(
        before.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{}",
        before.text()
    );

    // The proto gains a method: a reload serves it, no restart.
    std::fs::write(&proto, small_library(true)).expect("write proto");
    within("a reload", gw.reload.reload())
        .await
        .expect("reload succeeds");
    let after = publish().await;
    assert_eq!(
        json_of(&after, "after reload"),
        json!({"name": "shelves/1/books/2", "title": "t"})
    );

    // A broken proto is refused with its file, line and column; the old descriptors serve.
    std::fs::write(
        &proto,
        small_library(true).replace("string title = 2;", "string title = ;"),
    )
    .expect("write");
    let error = within("a reload", gw.reload.reload())
        .await
        .expect_err("refused")
        .to_string();
    assert!(error.contains("clusters[0].grpc.protos[0]"), "{error}");
    assert!(error.contains("library.proto:4:"), "{error}");
    let still = publish().await;
    assert_eq!(
        still.status,
        StatusCode::OK,
        "the previous descriptors keep serving"
    );

    // `portico validate` reports the same.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["validate"])
        .arg(&path)
        .output()
        .expect("portico validate runs");
    assert!(!output.status.success());
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("library.proto:4:"), "{stdout}");
}

#[test]
fn descriptor_problems_are_config_problems_at_their_keys() {
    let protos = proto_dir();
    let p = protos.display();
    for (cluster, route, expected) in [
        (
            format!("protocol: http1, grpc: {{ protos: [\"{p}/greeter.proto\"] }}"),
            "grpc_transcode: {}",
            "clusters[0].protocol",
        ),
        (
            format!("protocol: http2, grpc: {{ protos: [\"{p}/missing.proto\"] }}"),
            "grpc_transcode: {}",
            "clusters[0].grpc.protos[0]",
        ),
        (
            format!(
                "protocol: http2, grpc: {{ protos: [\"{p}/greeter.proto\"], services: [Greter] }}"
            ),
            "grpc_transcode: {}",
            "clusters[0].grpc.services[0]: no service `Greter`",
        ),
        (
            String::from("protocol: http2"),
            "grpc_transcode: {}",
            "routes[0].grpc_transcode: the route's cluster has no `grpc` section",
        ),
        (
            String::from("protocol: http1"),
            "grpc_web: true",
            "routes[0].grpc_web",
        ),
        (
            format!("protocol: http2, grpc: {{ protos: [\"{p}/greeter.proto\"] }}"),
            "grpc_transcode: { streaming: xml, unknown_query_parameters: maybe }",
            "routes[0].grpc_transcode.streaming",
        ),
    ] {
        let text = config(&format!(
            "clusters:\n  - {{ name: g, endpoints: [\"127.0.0.1:1\"], {cluster} }}\nroutes:\n  - {{ cluster: g, {route} }}\n"
        ));
        let error = portico::config::load_str(&text, "test.yaml")
            .expect_err("refused")
            .to_string();
        assert!(error.contains(expected), "{expected}\n{error}");
    }
}

#[test]
fn a_bad_http_rule_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proto = dir.path().join("bad.proto");
    std::fs::write(
        &proto,
        r#"syntax = "proto3";
package bad;
import "google/api/annotations.proto";
message Book { string name = 1; }
service Shelf {
  rpc GetBook(Book) returns (Book) {
    option (google.api.http) = { get: "/v1/{nope}" };
  }
}
"#,
    )
    .expect("write proto");
    let text = config(&format!(
        "clusters:\n  - {{ name: g, endpoints: [\"127.0.0.1:1\"], protocol: http2, grpc: {{ protos: [\"{}\"] }} }}\nroutes:\n  - {{ cluster: g, grpc_transcode: {{}} }}\n",
        proto.display()
    ));
    let error = portico::config::load_str(&text, "test.yaml")
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("clusters[0].grpc.protos")
            && error.contains("bad.proto:7:5: bad.Shelf.GetBook: google.api.http")
            && error.contains("nope"),
        "{error}"
    );
}

#[tokio::test]
async fn a_descriptor_set_made_by_protoc_serves_like_the_protos() {
    let addr = python_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let set = dir.path().join("library.pb");
    // protoc itself (grpcio-tools), with the official google/api files: the rules must be
    // read from a descriptor set nobody of ours made.
    let script = r#"
import os, sys
from grpc_tools import protoc
import grpc_tools, google.api.annotations_pb2 as annotations
well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
googleapis = os.path.dirname(os.path.dirname(os.path.dirname(annotations.__file__)))
sys.exit(protoc.main(["protoc", "-I" + sys.argv[1], "-I" + well_known, "-I" + googleapis,
    "--include_imports", "--descriptor_set_out=" + sys.argv[2],
    "library/v1/library.proto", "greeter.proto"]))
"#;
    let output = within(
        "protoc",
        tokio::process::Command::new("python3")
            .args(["-c", script])
            .arg(proto_dir())
            .arg(&set)
            .output(),
    )
    .await
    .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - name: library
    endpoints: ["{addr}"]
    protocol: http2
    grpc: {{ descriptor_set: "{}", services: [library.v1.Library, Greeter] }}
routes:
  - {{ cluster: library, grpc_transcode: {{}} }}
"#,
        set.display()
    )))
    .await;
    let book = call(&gw, "GET", "/v1/shelves/1/books/2", "").await;
    assert_eq!(
        json_of(&book, "descriptor set"),
        json!({"name": "shelves/1/books/2"})
    );
    let hello = call(&gw, "POST", "/Greeter/SayHello", r#"{"name":"set"}"#).await;
    assert_eq!(
        json_of(&hello, "descriptor set"),
        json!({"message": "Hello, set"})
    );
    let details = call(
        &gw,
        "POST",
        "/v1/fail",
        r#"{"code":3,"message":"m","with_details":true}"#,
    )
    .await;
    assert_eq!(
        details.json()["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest",
        "google.rpc details resolve with a set that does not contain them"
    );
}
