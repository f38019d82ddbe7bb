//! CORS end to end: preflights answered by the gateway (never forwarded, never a 405),
//! headers only for allowed origins, on every answer of the route — and a real browser
//! (headless Chromium, which `.ci/run` installs) as the independent witness.

use crate::common::*;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ALLOWED: &str = "https://app.example";

/// A backend that counts what reaches it, answers with headers a browser may or may not
/// read, and sets a CORS header of its own (which the gateway must replace).
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let addr = backend(move |req: Request<Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            http::Response::builder()
                .header("content-type", "text/plain")
                .header("x-backend", "counted")
                .header("x-secret", "not exposed")
                .header("access-control-allow-origin", "*")
                .body(full(format!("{} {}", req.method(), req.uri().path())))
                .expect("response")
        }
    })
    .await;
    (addr, seen)
}

fn cors_keys(origins: &str) -> String {
    format!(
        "cors: {{ allow_origins: [{origins}], allow_headers: [content-type, x-token], \
         expose_headers: [x-request-id, x-backend], allow_credentials: true, max_age: 60s }}"
    )
}

/// Routes: `/api` (GET, PUT) with CORS, `/dead` with CORS in front of a closed port,
/// `/small` with CORS and a 16-byte body limit, `/plain` without CORS.
async fn gateway(backend: SocketAddr, origins: &str) -> TestGateway {
    let dead = closed_port().await;
    let cors = cors_keys(origins);
    TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
  - {{ name: dead, endpoints: ["{dead}"] }}
routes:
  - {{ match: {{ path_prefix: /api, methods: [GET, PUT] }}, cluster: b, {cors} }}
  - {{ match: {{ path_prefix: /dead }}, cluster: dead, {cors} }}
  - {{ match: {{ path_prefix: /small }}, cluster: b, max_body_size: 16, {cors} }}
  - {{ match: {{ path_prefix: /plain, methods: [GET, PUT] }}, cluster: b }}
"#
    )))
    .await
}

fn preflight(path: &str, origin: Option<&str>) -> Request<BoxBody> {
    let mut req = Request::options(path)
        .header("host", "api.test")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type, x-token");
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.body(full("")).expect("request")
}

fn access_control_headers(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn an_allowed_preflight_is_answered_by_the_gateway_not_the_router_or_the_backend() {
    let (backend, seen) = counting_backend().await;
    let gw = gateway(backend, &format!("\"{ALLOWED}\"")).await;

    // `/api` does not list OPTIONS: without CORS this would be a 405.
    let reply = send(gw.addr, preflight("/api/items", Some(ALLOWED))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let h = &reply.headers;
    assert_eq!(h["access-control-allow-origin"], ALLOWED);
    assert_eq!(h["access-control-allow-methods"], "GET,PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type,x-token");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "60");
    let vary: Vec<_> = h.get_all("vary").iter().collect();
    assert_eq!(
        vary,
        [
            "origin",
            "access-control-request-method, access-control-request-headers"
        ]
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a preflight is never forwarded"
    );

    // The same preflight on a route without CORS is still the router's 405.
    let reply = send(gw.addr, preflight("/plain/items", Some(ALLOWED))).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(access_control_headers(&reply).is_empty());
}

#[tokio::test]
async fn a_preflight_from_another_origin_or_none_is_refused_without_allow_headers() {
    let (backend, seen) = counting_backend().await;
    let gw = gateway(backend, &format!("\"{ALLOWED}\"")).await;
    for origin in [
        Some("https://evil.example"),
        Some("https://app.example.evil"),
        None,
    ] {
        let reply = send(gw.addr, preflight("/api/items", origin)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(reply.error_code(), "cors_preflight_refused");
        assert!(
            access_control_headers(&reply).is_empty(),
            "{origin:?}: {:?}",
            reply.headers
        );
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn simple_requests_get_cors_headers_only_for_allowed_origins() {
    let (backend, seen) = counting_backend().await;
    let gw = gateway(
        backend,
        "\"https://*.example.org\", \"https://app.example\"",
    )
    .await;
    let request = |origin: Option<&str>| {
        let mut req = Request::get("/api/items").header("host", "api.test");
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.body(full("")).expect("request")
    };

    for origin in [ALLOWED, "https://shop.eu.example.org"] {
        let reply = send(gw.addr, request(Some(origin))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["access-control-allow-origin"], origin);
        assert_eq!(reply.headers["access-control-allow-credentials"], "true");
        assert_eq!(
            reply.headers["access-control-expose-headers"],
            "x-request-id,x-backend"
        );
        assert!(!reply.headers.contains_key("access-control-allow-methods"));
        assert_eq!(reply.headers["vary"], "origin");
    }
    for origin in [
        Some("https://evil.example"),
        Some("https://example.org"),
        None,
    ] {
        let reply = send(gw.addr, request(origin)).await;
        assert_eq!(reply.status, StatusCode::OK, "forwarded all the same");
        // Not even the backend's own `Access-Control-Allow-Origin: *`.
        assert!(
            access_control_headers(&reply).is_empty(),
            "{origin:?}: {:?}",
            reply.headers
        );
        assert_eq!(reply.headers["vary"], "origin");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn the_gateways_own_errors_carry_the_cors_headers() {
    let (backend, seen) = counting_backend().await;
    let gw = gateway(backend, &format!("\"{ALLOWED}\"")).await;
    let unreachable = send(
        gw.addr,
        Request::get("/dead")
            .header("host", "api.test")
            .header("origin", ALLOWED)
            .body(full(""))
            .expect("request"),
    )
    .await;
    let too_large = send(
        gw.addr,
        Request::put("/small")
            .header("host", "api.test")
            .header("origin", ALLOWED)
            .body(full(vec![b'x'; 64]))
            .expect("request"),
    )
    .await;
    for (reply, status, code) in [
        (
            &unreachable,
            StatusCode::BAD_GATEWAY,
            "upstream_connect_failed",
        ),
        (
            &too_large,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        assert_eq!(reply.status, status);
        assert_eq!(reply.error_code(), code);
        assert_eq!(
            reply.headers["access-control-allow-origin"], ALLOWED,
            "{code}"
        );
        assert_eq!(reply.headers["access-control-allow-credentials"], "true");
        assert_eq!(reply.headers["vary"], "origin");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// A real browser.

/// A loopback server that serves `page` (HTML) at `/`: a web page of its own origin.
async fn page_server(page: String) -> SocketAddr {
    let page = Arc::new(page);
    backend(move |_req: Request<Incoming>| {
        let page = page.clone();
        async move {
            http::Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .body(full(page.to_string()))
                .expect("response")
        }
    })
    .await
}

/// A page whose script calls the gateway (at the address in its own `?gw=` query) with
/// `fetch`, the way a browser application does, and writes what it saw into the document
/// for `--dump-dom` to print.
const FETCHING_PAGE: &str = r#"<!doctype html><html><body><pre id="out">pending</pre><script>
const gw = "http://" + new URLSearchParams(location.search).get("gw");
async function attempt(url, init) {
  try {
    const r = await fetch(url, init);
    return { status: r.status, body: await r.text(), backend: r.headers.get("x-backend"),
             secret: r.headers.get("x-secret"), requestId: r.headers.get("x-request-id") };
  } catch (e) {
    return { error: String(e) };
  }
}
(async () => {
  const seen = {};
  // Not a simple request (PUT, a JSON body, a custom header): the browser preflights it.
  seen.put = await attempt(gw + "/api/items", { method: "PUT", credentials: "include",
    headers: { "content-type": "application/json", "x-token": "t" }, body: "{}" });
  seen.get = await attempt(gw + "/api/items", { credentials: "include" });
  seen.unreachable = await attempt(gw + "/dead", { credentials: "include" });
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(seen);
})();
</script></body></html>"#;

/// What the page at `url` wrote, read from the DOM headless Chromium dumps. Fails with a
/// clear message when Chromium is missing: this test is never skipped.
async fn what_the_browser_saw(url: &str) -> serde_json::Value {
    let profile = tempfile::tempdir().expect("profile dir");
    let binary = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "no headless Chromium found (tried chromium, chromium-browser, google-chrome): \
                 install it with `apt-get install -y chromium` (.ci/run does)"
            )
        });
    let output = within(
        "headless Chromium",
        tokio::process::Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                // Virtual time runs out only once the page's requests are answered.
                "--virtual-time-budget=15000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let Some(start) = dom.find("RESULT ") else {
        panic!(
            "the page did not finish: {dom}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let text = &dom[start + "RESULT ".len()..];
    let end = text.find("</pre>").expect("end of the result");
    // The DOM dump escapes `&`, `<` and `>` in text.
    let json = text[..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[tokio::test]
async fn a_browser_reads_answers_for_an_allowed_origin_and_is_refused_for_another() {
    let (backend, seen) = counting_backend().await;
    // Two pages on two loopback ports: two origins, of which the gateway allows the first.
    let allowed_page = page_server(FETCHING_PAGE.to_string()).await;
    let other_page = page_server(FETCHING_PAGE.to_string()).await;
    let gw = gateway(backend, &format!("\"http://{allowed_page}\"")).await;

    let allowed = what_the_browser_saw(&format!("http://{allowed_page}/?gw={}", gw.addr)).await;
    // The preflighted PUT went through and its answer, with an exposed header, was readable.
    assert_eq!(allowed["put"]["status"], 200, "{allowed}");
    assert_eq!(allowed["put"]["body"], "PUT /api/items", "{allowed}");
    assert_eq!(allowed["put"]["backend"], "counted", "{allowed}");
    assert!(allowed["put"]["requestId"].is_string(), "{allowed}");
    // A header the route does not expose stays hidden from the page.
    assert!(allowed["put"]["secret"].is_null(), "{allowed}");
    assert_eq!(allowed["get"]["status"], 200, "{allowed}");
    // The gateway's own 502 is readable too: the page can tell the user why.
    assert_eq!(allowed["unreachable"]["status"], 502, "{allowed}");
    let body: serde_json::Value =
        serde_json::from_str(allowed["unreachable"]["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["error"]["code"], "upstream_connect_failed");
    let forwarded = seen.load(Ordering::SeqCst);
    assert_eq!(forwarded, 2, "the PUT and the GET, never the preflight");

    let refused = what_the_browser_saw(&format!("http://{other_page}/?gw={}", gw.addr)).await;
    for call in ["put", "get", "unreachable"] {
        let error = refused[call]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{refused}"));
        assert!(error.contains("TypeError"), "{call}: {refused}");
    }
    // The refused preflight kept the PUT from being sent; the simple GET went out (CORS
    // protects what the page may read, not what the server receives).
    assert_eq!(seen.load(Ordering::SeqCst), forwarded + 1);
}

// ---------------------------------------------------------------------------------------
// Every refusal of a CORS route, now that auth and rate limits sit inside it.

const REFUSAL_KEY: &str = "pk_test_cors_0123456789";

/// CORS routes that each refuse in their own way: `/auth` without credentials (401),
/// `/scoped` with a key that lacks the scope (403), `/ip` from a denied address (403),
/// `/limited` after its one request an hour (429), `/small` over its 16-byte body limit
/// (413) and `/silent` in front of a backend that never answers (504).
async fn refusing_gateway() -> TestGateway {
    let (backend, _) = counting_backend().await;
    let silent = crate::common::backend(|_req: Request<Incoming>| async {
        std::future::pending::<()>().await;
        http::Response::new(full(""))
    })
    .await;
    let cors = format!(
        "{{ allow_origins: [\"{ALLOWED}\"], allow_credentials: true, \
         allow_headers: [content-type, x-token], expose_headers: [www-authenticate, retry-after] }}"
    );
    TestGateway::start(&config(&format!(
        r#"consumers:
  - {{ id: reader, scopes: [orders:read], api_keys: ["{key}"] }}
auth_providers:
  - {{ name: keys, api_key: {{ header: x-api-key }} }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
  - {{ name: silent, endpoints: ["{silent}"] }}
routes:
  - {{ match: {{ path_prefix: /auth }}, cluster: b, cors: {cors}, auth: {{ providers: [keys] }} }}
  - {{ match: {{ path_prefix: /scoped }}, cluster: b, cors: {cors}, auth: {{ providers: [keys], scopes: [orders:write] }} }}
  - {{ match: {{ path_prefix: /ip }}, cluster: b, cors: {cors}, ip_rules: {{ deny: [127.0.0.0/8] }} }}
  - {{ match: {{ path_prefix: /limited }}, cluster: b, cors: {cors}, rate_limit: {{ key: route, limits: [{{ rate: 1/h }}] }} }}
  - {{ match: {{ path_prefix: /small }}, cluster: b, cors: {cors}, max_body_size: 16 }}
  - {{ match: {{ path_prefix: /silent }}, cluster: silent, cors: {cors}, timeout: 200ms }}
"#,
        key = portico::keys::digest(REFUSAL_KEY),
    )))
    .await
}

fn refused_request(path: &str, origin: &str) -> Request<BoxBody> {
    let req = Request::put(path)
        .header("host", "api.test")
        .header("origin", origin);
    match path {
        "/scoped" => req.header("x-api-key", REFUSAL_KEY).body(full("")),
        "/small" => req.body(full(vec![b'x'; 64])),
        _ => req.body(full("")),
    }
    .expect("request")
}

#[tokio::test]
async fn every_refusal_on_a_cors_route_carries_the_cors_headers_for_an_allowed_origin_only() {
    let gw = refusing_gateway().await;
    // The limited route's one request of the hour.
    let first = send(gw.addr, refused_request("/limited", ALLOWED)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());

    let refusals = [
        ("/auth", StatusCode::UNAUTHORIZED, "missing_credentials"),
        ("/scoped", StatusCode::FORBIDDEN, "insufficient_scope"),
        ("/ip", StatusCode::FORBIDDEN, "ip_not_allowed"),
        ("/limited", StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ("/small", StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("/silent", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
    ];
    for (path, status, code) in refusals {
        let reply = send(gw.addr, refused_request(path, ALLOWED)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(reply.error_code(), code, "{path}");
        let h = &reply.headers;
        assert_eq!(h["access-control-allow-origin"], ALLOWED, "{path}");
        assert_eq!(h["access-control-allow-credentials"], "true", "{path}");
        assert_eq!(
            h["access-control-expose-headers"], "www-authenticate,retry-after",
            "{path}"
        );
        assert_eq!(h["vary"], "origin", "{path}");

        let reply = send(gw.addr, refused_request(path, "https://evil.example")).await;
        assert_eq!(reply.status, status, "{path}, another origin");
        assert_eq!(reply.error_code(), code, "{path}, another origin");
        assert!(
            access_control_headers(&reply).is_empty(),
            "{path}, another origin: {:?}",
            reply.headers
        );
        assert_eq!(reply.headers["vary"], "origin", "{path}, another origin");
    }

    // The browser's preflight comes before auth: no credentials needed to be told.
    let reply = send(gw.addr, preflight("/auth/items", Some(ALLOWED))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["access-control-allow-origin"], ALLOWED);
    assert_eq!(reply.headers["access-control-allow-methods"], "PUT");
}
