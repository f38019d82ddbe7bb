//! Rewrites with captures, query parameter operations, and the answers a route declares
//! (direct responses and redirects), end to end.

use crate::common::*;
use http::{Request, StatusCode};

async fn gateway() -> TestGateway {
    let echo = echo_backend("echo").await;
    TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: echo, endpoints: ["{echo}"] }}
routes:
  - match: {{ path_template: "/v2/users/{{id}}/files/{{rest=**}}" }}
    cluster: echo
    path_rewrite: "/u/{{id}}/{{rest}}"
    query_params: {{ set: {{ format: json }}, add: {{ via: a b }}, remove: [debug] }}
  - match: {{ path_prefix: /legacy }}
    cluster: echo
    regex_rewrite: {{ pattern: '^/legacy/(\w+)/(\d+)$', substitution: '/modern/$2/$1' }}
  - match: {{ path_template: "/v0/{{rest=**}}" }}
    redirect: {{ status: 301, location: "https://api.example.com/v1/{{rest}}" }}
  - match: {{ path_prefix: /down }}
    direct_response:
      status: 503
      headers: {{ retry-after: 120, content-type: application/json }}
      body: '{{"maintenance":true}}'
    cors: {{ allow_origins: ["https://app.example"] }}
    response_headers: {{ set: {{ x-served-by: portico }} }}
"#
    )))
    .await
}

#[tokio::test]
async fn paths_are_rewritten_from_captures_and_regex_groups() {
    let gw = gateway().await;
    let reply = get(
        gw.addr,
        "h",
        "/v2/users/42/files/a/b%20c?debug=1&x=2&format=xml",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.json();
    assert_eq!(seen["path"], "/u/42/a/b%20c");
    assert_eq!(seen["query"], "x=2&format=json&via=a+b");

    let reply = get(gw.addr, "h", "/legacy/orders/17").await;
    assert_eq!(reply.json()["path"], "/modern/17/orders");
    // No match: the path goes on unchanged.
    let reply = get(gw.addr, "h", "/legacy/orders/x/y").await;
    assert_eq!(reply.json()["path"], "/legacy/orders/x/y");
}

#[tokio::test]
async fn declared_answers_are_given_without_a_cluster() {
    let gw = gateway().await;
    let moved = get(gw.addr, "h", "/v0/users/7?expand=1").await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        moved.headers["location"],
        "https://api.example.com/v1/users/7?expand=1"
    );
    assert!(moved.headers.contains_key("x-request-id"));

    let down = send(
        gw.addr,
        Request::get("/down/anything")
            .header("host", "h")
            .header("origin", "https://app.example")
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers["retry-after"], "120");
    assert_eq!(down.headers["content-type"], "application/json");
    assert_eq!(down.json()["maintenance"], true);
    // The route's decorators apply to its own answer too.
    assert_eq!(down.headers["x-served-by"], "portico");
    assert_eq!(
        down.headers["access-control-allow-origin"],
        "https://app.example"
    );
}
