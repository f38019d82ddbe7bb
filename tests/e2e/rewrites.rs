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

#[tokio::test]
async fn a_rewrite_that_makes_no_valid_path_is_a_500_and_nothing_is_forwarded() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - match: {{ path_prefix: /raw }}
    cluster: b
    regex_rewrite: {{ pattern: '^/raw(.*)$', substitution: '$1' }}
"#
    )))
    .await;
    // `$1` is `/kept`: a path.
    let reply = get(gw.addr, "h", "/raw/kept").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // `$1` is empty: no path at all. Neither it nor `/raw` may reach the backend.
    let reply = get(gw.addr, "h", "/raw").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error_code(), "path_rewrite_failed");
    let seen = recorder.text();
    assert!(seen.starts_with("GET /kept HTTP/1.1"), "{seen}");
    assert_eq!(seen.matches("GET ").count(), 1, "{seen}");
}

#[test]
fn rewrites_and_redirects_that_cannot_make_a_valid_target_are_config_problems() {
    let text = |keys: &str| {
        config(&format!(
            "clusters:\n  - {{ name: b, endpoints: [\"127.0.0.1:1\"] }}\nroutes:\n  - {{ match: {{ path_template: \"/v1/{{id}}\" }}{keys} }}\n"
        ))
    };
    for (keys, says) in [
        (
            ", cluster: b, regex_rewrite: { pattern: '^/v1/(.*)$', substitution: '/v2/$1 now' }",
            "routes[0].regex_rewrite.substitution: ' ' cannot be written as is",
        ),
        (
            ", cluster: b, path_rewrite: \"/v2/<{id}>\"",
            "routes[0].path_rewrite: \"/v2/<{id}>\": '<' cannot be written as is",
        ),
        (
            ", redirect: { location: \"/v2/{id}/café\" }",
            "routes[0].redirect.location: 'é' cannot be written as is",
        ),
        (
            ", redirect: { location: \"v2/{id}\" }",
            "routes[0].redirect.location: \"v2/x\" is neither a path",
        ),
    ] {
        let error = portico::config::load_str(&text(keys), "t.yaml")
            .expect_err(keys)
            .to_string();
        assert!(error.contains(says), "{keys}: {error}");
    }
}

#[tokio::test]
async fn a_body_file_is_served_as_it_was_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Not text, and with a byte of every value: served exactly as stored.
    let mut page = b"<!doctype html><h1>Back soon</h1>\n".to_vec();
    page.extend(0..=255u8);
    std::fs::write(dir.path().join("maintenance.html"), &page).expect("write page");
    let path = dir.path().join("portico.yaml");
    std::fs::write(
        &path,
        config(
            r#"routes:
  - match: { path_prefix: /down }
    direct_response:
      status: 503
      headers: { content-type: text/html }
      body_file: maintenance.html
"#,
        ),
    )
    .expect("write config");
    let gw = TestGateway::start_file(path).await;
    let reply = get(gw.addr, "h", "/down/anything").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["content-type"], "text/html");
    assert_eq!(
        reply.headers["content-length"],
        page.len().to_string().as_str()
    );
    assert_eq!(reply.body, page);
}
