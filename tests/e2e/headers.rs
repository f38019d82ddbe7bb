//! What the gateway adds, removes and rewrites on the way through.

use crate::common::*;
use http::{Request, StatusCode};

fn header<'a>(json: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    json["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn forwarding_headers_hop_by_hop_and_request_ids() {
    let users = echo_backend("users").await;
    let yaml = format!(
        r#"
access_log: {{ enabled: false }}
listeners:
  - {{ name: public, address: "127.0.0.1:0", via: true }}
clusters:
  - {{ name: users, endpoints: ["{users}"] }}
routes:
  - cluster: users
    match: {{ host: api.example.com, path_prefix: /v1/users }}
    strip_prefix: /v1
    request_headers:
      set: {{ x-platform: portico }}
      add: {{ x-tag: added }}
      remove: [x-internal]
    response_headers:
      set: {{ x-served-by: portico }}
      remove: [x-backend]
"#
    );
    let gw = TestGateway::start(&yaml).await;
    let req = Request::get("/v1/users/42?x=1")
        .header("host", "api.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "gzip")
        .header("x-internal", "secret")
        .header("x-tag", "original")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .body(full(""))
        .expect("request");
    let reply = send(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();

    assert_eq!(json["path"], "/users/42", "prefix stripped");
    assert_eq!(json["query"], "x=1");
    for hop in ["connection", "x-hop", "keep-alive", "te", "x-internal"] {
        assert!(
            header(&json, hop).is_empty(),
            "{hop} must not reach the backend"
        );
    }
    assert_eq!(header(&json, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(
        header(&json, "x-forwarded-proto"),
        ["http"],
        "set by the edge, never trusted from the client"
    );
    assert_eq!(header(&json, "x-forwarded-host"), ["api.example.com"]);
    assert_eq!(header(&json, "host"), ["api.example.com"]);
    assert_eq!(header(&json, "x-platform"), ["portico"]);
    assert_eq!(header(&json, "x-tag"), ["original", "added"]);
    assert_eq!(header(&json, "via"), ["1.1 portico"]);

    // The id the backend saw is the one echoed to the client.
    let id = reply.headers["x-request-id"].to_str().expect("id");
    assert_eq!(id.len(), 32);
    assert_eq!(header(&json, "x-request-id"), [id]);
    assert_eq!(reply.headers["x-served-by"], "portico");
    assert!(!reply.headers.contains_key("x-backend"));
    assert_eq!(reply.headers["via"], "1.1 portico");
}

#[tokio::test]
async fn a_callers_request_id_is_kept_and_a_bad_one_replaced() {
    let users = echo_backend("users").await;
    let yaml = single_route(users, "");
    let gw = TestGateway::start(&yaml).await;

    let req = Request::get("/")
        .header("host", "h")
        .header("x-request-id", "abc-123")
        .body(full(""))
        .expect("req");
    let reply = send(gw.addr, req).await;
    assert_eq!(reply.headers["x-request-id"], "abc-123");
    assert_eq!(header(&reply.json(), "x-request-id"), ["abc-123"]);

    let long = "x".repeat(300);
    let req = Request::get("/")
        .header("host", "h")
        .header("x-request-id", long.as_str())
        .body(full(""))
        .expect("req");
    let reply = send(gw.addr, req).await;
    assert_ne!(reply.headers["x-request-id"], long.as_str());
    assert_eq!(reply.headers["x-request-id"].len(), 32);
}

#[tokio::test]
async fn host_rewrite_replaces_the_host_header() {
    let users = echo_backend("users").await;
    let yaml = single_route(users, ", host_rewrite: internal.svc");
    let gw = TestGateway::start(&yaml).await;
    let json = get(gw.addr, "public.example", "/").await.json();
    assert_eq!(header(&json, "host"), ["internal.svc"]);
    assert_eq!(header(&json, "x-forwarded-host"), ["public.example"]);
}
