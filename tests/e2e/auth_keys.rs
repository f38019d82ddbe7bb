//! Consumers and API keys, end to end: a key in a header or a query parameter, unknown and
//! disabled consumers refused alike, scopes and allow-lists, identity headers a client cannot
//! spoof, upgrades that go through auth like any request, and a consumers file that reloads
//! on its own.

use crate::common::*;
use http::{Request, StatusCode};
use std::net::SocketAddr;

const GOOD_KEY: &str = "pk_test_acme_0123456789";
const DISABLED_KEY: &str = "pk_test_gone_0123456789";

fn digest(key: &str) -> String {
    portico::keys::digest(key)
}

/// Consumers `acme` (enabled, scope `orders:read`) and `gone` (disabled), an API key
/// provider reading `x-api-key` or `?api_key=`, and routes: `/orders` (needs the provider),
/// `/write` (needs scope `orders:write`), `/only-other` (only consumer `other`), `/open`
/// (no auth).
fn keys_config(backend: SocketAddr) -> String {
    config(&format!(
        r#"consumers:
  - id: acme
    plan: gold
    scopes: [orders:read]
    api_keys: ["{good}"]
  - id: gone
    enabled: false
    scopes: [orders:read]
    api_keys: ["{disabled}"]
  - id: other
    api_keys: ["{other}"]
auth_providers:
  - name: keys
    api_key: {{ header: x-api-key, query: api_key }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - name: orders
    match: {{ path_prefix: /orders }}
    cluster: b
    auth:
      providers: [keys]
      forward: {{ consumer: x-consumer-id, plan: x-consumer-plan, scopes: x-consumer-scopes }}
  - match: {{ path_prefix: /write }}
    cluster: b
    auth: {{ providers: [keys], scopes: [orders:write] }}
  - match: {{ path_prefix: /only-other }}
    cluster: b
    auth: {{ providers: [keys], consumers: [other] }}
  - match: {{ path_prefix: /open }}
    cluster: b
"#,
        good = digest(GOOD_KEY),
        disabled = digest(DISABLED_KEY),
        other = digest("pk_test_other_0123456789"),
    ))
}

async fn call(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path).header("host", "api.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(addr, req.body(full("")).unwrap()).await
}

#[tokio::test]
async fn a_good_key_is_forwarded_as_its_consumer_and_the_key_itself_is_not() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&keys_config(backend)).await;

    let reply = call(gw.addr, "/orders/1", &[("x-api-key", GOOD_KEY)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-consumer-id"][0], "acme");
    assert_eq!(seen["headers"]["x-consumer-plan"][0], "gold");
    assert_eq!(seen["headers"]["x-consumer-scopes"][0], "orders:read");
    assert!(seen["headers"].get("x-api-key").is_none(), "key stripped");

    // The same key as a query parameter: accepted, and removed from the forwarded query.
    let reply = call(
        gw.addr,
        &format!("/orders/1?page=2&api_key={GOOD_KEY}"),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["query"], "page=2");
    assert_eq!(reply.json()["headers"]["x-consumer-id"][0], "acme");
}

#[tokio::test]
async fn unknown_and_disabled_keys_get_the_same_answer_and_no_key_gets_a_challenge() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&keys_config(backend)).await;

    let unknown = call(gw.addr, "/orders", &[("x-api-key", "pk_test_nobody")]).await;
    let disabled = call(gw.addr, "/orders", &[("x-api-key", DISABLED_KEY)]).await;
    for reply in [&unknown, &disabled] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error_code(), "invalid_credentials");
        assert_eq!(
            reply.headers["www-authenticate"],
            "ApiKey header=\"x-api-key\", error=\"invalid_key\", \
             error_description=\"the API key is not valid\""
        );
    }
    // Nothing tells a disabled consumer's key from an unknown one.
    assert_eq!(
        unknown.json()["error"]["message"],
        disabled.json()["error"]["message"]
    );
    assert_eq!(
        unknown.headers["www-authenticate"],
        disabled.headers["www-authenticate"]
    );

    let missing = call(gw.addr, "/orders", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.error_code(), "missing_credentials");
    assert_eq!(
        missing.headers["www-authenticate"],
        "ApiKey header=\"x-api-key\""
    );

    let twice = call(gw.addr, "/orders?api_key=a&api_key=b", &[]).await;
    assert_eq!(twice.status, StatusCode::UNAUTHORIZED);
    assert_eq!(twice.error_code(), "invalid_credentials");

    let admin = gw.admin;
    assert!(admin.is_none(), "no admin listener in this config");
}

#[tokio::test]
async fn scopes_and_consumer_lists_are_enforced_with_403() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&keys_config(backend)).await;

    let reply = call(gw.addr, "/write", &[("x-api-key", GOOD_KEY)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "insufficient_scope");
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.ends_with("scope=\"orders:write\""), "{challenge}");

    let reply = call(gw.addr, "/only-other", &[("x-api-key", GOOD_KEY)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "access_denied");
    let reply = call(
        gw.addr,
        "/only-other",
        &[("x-api-key", "pk_test_other_0123456789")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn identity_headers_from_clients_never_reach_a_backend_on_any_route() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&keys_config(backend)).await;
    let spoofed = [("x-consumer-id", "admin"), ("x-consumer-plan", "unlimited")];

    // A route without auth: the names other routes use for identity are still removed.
    let reply = call(gw.addr, "/open", &spoofed).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["headers"].get("x-consumer-id").is_none());
    assert!(reply.json()["headers"].get("x-consumer-plan").is_none());

    // A route with auth: the gateway's value replaces the client's.
    let mut headers = spoofed.to_vec();
    headers.push(("x-api-key", GOOD_KEY));
    let reply = call(gw.addr, "/orders", &headers).await;
    assert_eq!(
        reply.json()["headers"]["x-consumer-id"],
        serde_json::json!(["acme"])
    );
    assert_eq!(
        reply.json()["headers"]["x-consumer-plan"],
        serde_json::json!(["gold"])
    );
}

#[tokio::test]
async fn upgrades_and_http2_go_through_auth_like_any_request() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&keys_config(backend)).await;

    // A WebSocket handshake without a key is refused before the backend hears of it.
    let handshake =
        "GET /orders/socket HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, close\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let answer = raw(gw.addr, handshake.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    let req = Request::get("/orders/h2")
        .header("host", "api.test")
        .body(full(""))
        .unwrap();
    let reply = send_h2(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        recorder.text().is_empty(),
        "the backend saw: {}",
        recorder.text()
    );
}

#[tokio::test]
async fn refusals_are_counted_by_reason_and_logged_with_it() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = keys_config(backend)
        .replace(
            "access_log: { enabled: false }",
            &format!("access_log: {{ path: \"{}\" }}", log.display()),
        )
        .replace(
            "listeners:",
            "admin: { address: \"127.0.0.1:0\" }\nlisteners:",
        );
    let gw = TestGateway::start(&yaml).await;

    call(gw.addr, "/orders", &[("x-api-key", GOOD_KEY)]).await;
    call(gw.addr, "/orders", &[("x-api-key", DISABLED_KEY)]).await;
    call(gw.addr, "/orders", &[]).await;
    gw.wait_metric(r#"portico_auth_total{route="orders",outcome="ok"}"#, 1)
        .await;
    gw.wait_metric(
        r#"portico_auth_total{route="orders",outcome="unknown_credential"}"#,
        1,
    )
    .await;
    gw.wait_metric(r#"portico_auth_total{route="orders",outcome="missing"}"#, 1)
        .await;

    let lines = within("three access log lines", async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().count() >= 3 {
                return text;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["auth"], "ok");
    assert_eq!(lines[0]["consumer"], "acme");
    assert_eq!(lines[1]["auth"], "unknown_credential");
    assert_eq!(lines[1]["error_code"], "invalid_credentials");
    assert_eq!(lines[2]["auth"], "missing");
    // The key is in no log line.
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains(DISABLED_KEY));
}

async fn status_with_key(gw: &TestGateway, key: &str) -> StatusCode {
    call(gw.addr, "/", &[("x-api-key", key)]).await.status
}

#[tokio::test]
async fn a_consumers_file_reloads_on_its_own_and_a_bad_one_changes_nothing() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let consumers = dir.path().join("consumers.json");
    let write_consumers = |keys: &[(&str, &str)]| {
        let list: Vec<serde_json::Value> = keys
            .iter()
            .map(|(id, key)| serde_json::json!({"id": id, "api_keys": [digest(key)]}))
            .collect();
        // Whole or not at all: the gateway polls the file and must never read half of it.
        let staged = consumers.with_extension("staged");
        std::fs::write(&staged, serde_json::to_string(&list).unwrap()).unwrap();
        std::fs::rename(&staged, &consumers).unwrap();
    };
    write_consumers(&[("first", "pk_first_key")]);
    let config_path = dir.path().join("portico.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"runtime: {{ watch_interval: 20ms }}
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
consumers: {{ file: consumers.json }}
auth_providers:
  - {{ name: keys, api_key: {{}} }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b, auth: {{ providers: [keys] }} }}
"#
        ),
    )
    .unwrap();
    let gw = TestGateway::start_file(config_path).await;
    assert_eq!(status_with_key(&gw, "pk_first_key").await, StatusCode::OK);

    write_consumers(&[("first", "pk_first_key"), ("second", "pk_second_key")]);
    gw.wait_metric(r#"portico_consumer_reloads_total{outcome="success"}"#, 1)
        .await;
    assert_eq!(status_with_key(&gw, "pk_second_key").await, StatusCode::OK);

    // A duplicate id: the whole file is refused and the consumers loaded before stay.
    std::fs::write(
        &consumers,
        format!(
            r#"[{{"id": "first", "api_keys": ["{}"]}}, {{"id": "first"}}]"#,
            digest("pk_first_key")
        ),
    )
    .unwrap();
    gw.wait_metric(r#"portico_consumer_reloads_total{outcome="failure"}"#, 1)
        .await;
    assert_eq!(status_with_key(&gw, "pk_second_key").await, StatusCode::OK);
    // The main config did not reload for any of this.
    assert_eq!(gw.reload.subscribe().borrow().attempts, 0);
}
