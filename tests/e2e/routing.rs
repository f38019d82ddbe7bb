//! Routing through the real gateway: precedence, 404/405, templates and path normalisation.

use crate::common::*;
use http::{Method, Request, StatusCode};

async fn backend_name(
    gw: &TestGateway,
    method: Method,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    send(gw.addr, req.body(full("")).expect("request")).await
}

fn served_by(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.text());
    reply.headers["x-backend"]
        .to_str()
        .expect("ascii")
        .to_string()
}

#[tokio::test]
async fn the_most_specific_route_wins() {
    let names = [
        "any_prefix",
        "host_prefix",
        "wild_prefix",
        "long_prefix",
        "exact",
        "template",
        "with_header",
    ];
    let mut clusters = String::from("clusters:\n");
    for name in names {
        let addr = echo_backend(name).await;
        clusters.push_str(&format!(
            "  - {{ name: {name}, endpoints: [\"{addr}\"] }}\n"
        ));
    }
    let routes = r#"
routes:
  - { name: any_prefix,  cluster: any_prefix,  match: { path_prefix: /api } }
  - { name: wild_prefix, cluster: wild_prefix, match: { host: "*.example.com", path_prefix: /api } }
  - { name: host_prefix, cluster: host_prefix, match: { host: api.example.com, path_prefix: / } }
  - { name: long_prefix, cluster: long_prefix, match: { path_prefix: /api/v2 } }
  - { name: exact,       cluster: exact,       match: { path_exact: /api/v2/status } }
  - { name: template,    cluster: template,    match: { path_template: "/api/v2/users/{id}" } }
  - { name: with_header, cluster: with_header, match: { path_prefix: /api/v2, headers: [ { name: x-beta, value: "1" } ] } }
"#;
    let gw = TestGateway::start(&config(&format!("{clusters}{routes}"))).await;

    // Any host: the longest prefix, then exact beats template beats prefix.
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "other.test", "/api/x", &[]).await),
        "any_prefix"
    );
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "other.test", "/api/v2/x", &[]).await),
        "long_prefix"
    );
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "other.test", "/api/v2/status", &[]).await),
        "exact"
    );
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "other.test", "/api/v2/users/7", &[]).await),
        "template"
    );
    // A header condition makes an otherwise equal route more specific.
    assert_eq!(
        served_by(
            &backend_name(
                &gw,
                Method::GET,
                "other.test",
                "/api/v2/x",
                &[("x-beta", "1")]
            )
            .await
        ),
        "with_header"
    );
    assert_eq!(
        served_by(
            &backend_name(
                &gw,
                Method::GET,
                "other.test",
                "/api/v2/x",
                &[("x-beta", "2")]
            )
            .await
        ),
        "long_prefix"
    );
    // Host outranks path: exact host beats wildcard beats any host.
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "api.example.com", "/api/v2/status", &[]).await),
        "host_prefix"
    );
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "API.Example.COM:8080", "/x", &[]).await),
        "host_prefix"
    );
    assert_eq!(
        served_by(&backend_name(&gw, Method::GET, "eu.example.com", "/api/v2", &[]).await),
        "wild_prefix"
    );
    // Prefixes match on segment boundaries only.
    let reply = backend_name(&gw, Method::GET, "other.test", "/apix", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "route_not_found");
}

#[tokio::test]
async fn method_mismatch_is_405_with_allow_and_unknown_paths_404() {
    let users = echo_backend("users").await;
    let yaml = config(&format!(
        r#"
clusters:
  - {{ name: users, endpoints: ["{users}"] }}
routes:
  - {{ cluster: users, match: {{ path_prefix: /users, methods: [GET] }} }}
  - {{ cluster: users, match: {{ path_exact: /users, methods: [POST] }} }}
"#
    ));
    let gw = TestGateway::start(&yaml).await;

    let reply = backend_name(&gw, Method::DELETE, "h", "/users", &[]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error_code(), "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET, HEAD, POST");

    // HEAD is served where GET is.
    let reply = backend_name(&gw, Method::HEAD, "h", "/users/1", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());

    let reply = backend_name(&gw, Method::GET, "h", "/orders", &[]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let json = reply.json();
    assert_eq!(json["error"]["code"], "route_not_found");
    assert_eq!(
        json["error"]["request_id"],
        reply.headers["x-request-id"].to_str().expect("id")
    );
}

/// Path escapes never leave the prefix a request was routed by: the path is normalised
/// before matching and the normalised path is what the backend receives.
#[tokio::test]
async fn path_escapes_cannot_leave_a_route_prefix() {
    let api = echo_backend("api").await;
    let yaml = config(&format!(
        r#"
clusters:
  - {{ name: api, endpoints: ["{api}"] }}
routes:
  - {{ cluster: api, match: {{ path_prefix: /api }} }}
"#
    ));
    let gw = TestGateway::start(&yaml).await;

    for escape in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2e/admin",
        "/api//..//admin",
        "/api/./../admin",
    ] {
        let reply = get(gw.addr, "h", escape).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{escape} must resolve to /admin, outside /api"
        );
    }
    for refused in [
        "/api/..;/admin",
        "/api/..%3b/admin",
        "/api/%5c../admin",
        "/api/x%2f..%2fadmin",
    ] {
        let reply = get(gw.addr, "h", refused).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(reply.error_code(), "invalid_path");
    }

    // A raw backslash is refused too (the client library would not even send it).
    let answer = raw(
        gw.addr,
        b"GET /api\\..\\admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Inside the prefix the backend receives the normalised path.
    let reply = get(gw.addr, "h", "/api/v1/./x/../users//7?q=%2e").await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["path"], "/api/v1/users/7");
    assert_eq!(json["query"], "q=%2e");
}
