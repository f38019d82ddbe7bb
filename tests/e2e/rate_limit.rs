//! Rate limits on the local backend, end to end: 429 with `Retry-After` and the rate-limit
//! headers (and CORS, like every answer), remaining quota on successful answers, the client
//! address that a spoofed `X-Forwarded-For` cannot change, consumer plans shared across
//! routes with an anonymous fallback, counts that survive a reload, and concurrency limits.

use crate::common::*;
use http::{Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

async fn call(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path).header("host", "api.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(addr, req.body(full("")).unwrap()).await
}

fn header<'r>(reply: &'r Reply, name: &str) -> &'r str {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", reply.headers))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn over_the_limit_is_429_with_headers_and_answers_before_it_say_what_is_left() {
    let (backend, recorder) = recording_backend().await;
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - match: {{ path_prefix: /ietf }}
    cluster: b
    cors: {{ allow_origins: ["https://app.example"] }}
    rate_limit: {{ key: ip, limits: [{{ name: burst, rate: 3/min }}, {{ name: monthly, quota: 1000/month }}] }}
  - match: {{ path_prefix: /classic }}
    cluster: b
    rate_limit: {{ key: route, headers: classic, limits: [{{ rate: 2/h }}] }}
  - match: {{ path_prefix: /open }}
    cluster: b
"#
    )))
    .await;
    let origin = [("origin", "https://app.example")];
    for remaining in [2, 1, 0] {
        let reply = call(gw.addr, "/ietf", &origin).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            header(&reply, "ratelimit-policy"),
            "\"burst\";q=3;w=60, \"monthly\";q=1000;w=2592000"
        );
        let state = header(&reply, "ratelimit");
        assert!(
            state.starts_with(&format!("\"burst\";r={remaining};t=")),
            "{state}"
        );
        assert!(
            state.contains(&format!("\"monthly\";r={};t=", 997 + remaining)),
            "{state}"
        );
    }
    let refused = call(gw.addr, "/ietf", &origin).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error_code(), "rate_limited");
    let retry: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request comes back in 20 s: {retry}"
    );
    assert!(header(&refused, "ratelimit").starts_with("\"burst\";r=0;t="));
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        "https://app.example",
        "the 429 carries CORS headers like every answer"
    );
    // The backend saw three requests, never the fourth.
    assert_eq!(recorder.text().matches("GET /ietf").count(), 3);

    // The classic trio, for the limit closest to refusing; one bucket for the whole route.
    let first = call(gw.addr, "/classic", &[]).await;
    assert_eq!(header(&first, "x-ratelimit-limit"), "2");
    assert_eq!(header(&first, "x-ratelimit-remaining"), "1");
    assert_eq!(header(&first, "x-ratelimit-reset"), "1800");
    assert_eq!(call(gw.addr, "/classic", &[]).await.status, StatusCode::OK);
    let refused = call(gw.addr, "/classic", &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert!(refused.headers.get("ratelimit").is_none());

    // A route without limits carries no such headers and is not limited.
    for _ in 0..5 {
        let open = call(gw.addr, "/open", &[]).await;
        assert_eq!(open.status, StatusCode::OK);
        assert!(open.headers.get("ratelimit").is_none());
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_shares_the_peers_bucket() {
    let backend = echo_backend("b").await;
    let routes = format!(
        r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b, rate_limit: {{ key: ip, limits: [{{ rate: 2/min }}] }} }}
"#
    );
    // No trusted proxy: every X-Forwarded-For is the client's own invention.
    let gw = TestGateway::start(&config(&routes)).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let spoofed = format!("203.0.113.{i}");
        statuses.push(
            call(gw.addr, "/", &[("x-forwarded-for", &spoofed)])
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429, 429].map(|s| StatusCode::from_u16(s).unwrap())
    );
    // Behind a trusted proxy (the test client plays it), the addresses it reports are
    // different clients, each with its own bucket.
    let gw = TestGateway::start(&format!(
        "trusted_proxies: {{ addresses: [127.0.0.1] }}\n{}",
        config(&routes)
    ))
    .await;
    for i in 0..5 {
        let client = format!("6.6.6.6, 203.0.113.{i}");
        let reply = call(gw.addr, "/", &[("x-forwarded-for", &client)]).await;
        assert_eq!(reply.status, StatusCode::OK, "client {i}");
    }
}

const GOLD_KEY: &str = "pk_test_gold_0123456789";
const FREE_KEY: &str = "pk_test_free_0123456789";

#[tokio::test]
async fn plans_count_per_consumer_across_routes_and_anonymous_callers_fall_back_to_their_address() {
    let backend = echo_backend("b").await;
    let gw = TestGateway::start(&config(&format!(
        r#"consumers:
  - {{ id: acme, plan: gold, api_keys: ["{gold}"] }}
  - {{ id: tiny, plan: free, api_keys: ["{free}"] }}
auth_providers:
  - {{ name: keys, api_key: {{ header: x-api-key }} }}
rate_limiting:
  plans:
    - {{ name: gold, limits: [{{ name: daily, quota: 4/day }}] }}
    - {{ name: free, limits: [{{ name: daily, quota: 1/day }}] }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ match: {{ path_prefix: /a }}, cluster: b, auth: {{ providers: [keys] }}, rate_limit: {{ plan: true }} }}
  - {{ match: {{ path_prefix: /b }}, cluster: b, auth: {{ providers: [keys] }}, rate_limit: {{ plan: true }} }}
  - {{ match: {{ path_prefix: /open }}, cluster: b, rate_limit: {{ limits: [{{ rate: 2/min }}] }} }}
"#,
        gold = portico::keys::digest(GOLD_KEY),
        free = portico::keys::digest(FREE_KEY),
    )))
    .await;
    let gold = [("x-api-key", GOLD_KEY)];
    // Four a day for acme, whichever route they go to.
    for path in ["/a", "/b", "/a", "/b"] {
        let reply = call(gw.addr, path, &gold).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(header(&reply, "ratelimit-policy").starts_with("\"gold/daily\";q=4;w=86400"));
    }
    let refused = call(gw.addr, "/b", &gold).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gold/daily"));
    // Another consumer has its own plan and count.
    let free = [("x-api-key", FREE_KEY)];
    assert_eq!(call(gw.addr, "/a", &free).await.status, StatusCode::OK);
    assert_eq!(
        call(gw.addr, "/a", &free).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // No consumer on an open route (the default key, consumer): counted by address.
    assert_eq!(call(gw.addr, "/open", &[]).await.status, StatusCode::OK);
    assert_eq!(call(gw.addr, "/open", &[]).await.status, StatusCode::OK);
    assert_eq!(
        call(gw.addr, "/open", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_reloaded_consumers_file_naming_an_undeclared_plan_is_refused_whole() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let consumers = dir.path().join("consumers.json");
    let write_consumers = |list: &[(&str, &str, &str)]| {
        let list: Vec<serde_json::Value> = list
            .iter()
            .map(|(id, plan, key)| {
                serde_json::json!({"id": id, "plan": plan, "api_keys": [portico::keys::digest(key)]})
            })
            .collect();
        // Whole or not at all: the gateway polls the file and must never read half of it.
        let staged = consumers.with_extension("staged");
        std::fs::write(&staged, serde_json::to_string(&list).unwrap()).unwrap();
        std::fs::rename(&staged, &consumers).unwrap();
    };
    const ACME: &str = "pk_test_acme_0123456789";
    const BETA: &str = "pk_test_beta_0123456789";
    const GAMMA: &str = "pk_test_gamma_012345678";
    write_consumers(&[("acme", "gold", ACME)]);
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
  - {{ name: keys, api_key: {{ header: x-api-key }} }}
rate_limiting:
  plans:
    - {{ name: gold, limits: [{{ name: daily, quota: 1/day }}] }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ cluster: b, auth: {{ providers: [keys] }}, rate_limit: {{ plan: true }} }}
"#
        ),
    )
    .unwrap();
    let gw = TestGateway::start_file(config_path).await;
    assert_eq!(
        call(gw.addr, "/", &[("x-api-key", ACME)]).await.status,
        StatusCode::OK
    );

    // A consumer added with a declared plan: reloaded, and limited by it.
    write_consumers(&[("acme", "gold", ACME), ("beta", "gold", BETA)]);
    gw.wait_metric(r#"portico_consumer_reloads_total{outcome="success"}"#, 1)
        .await;
    assert_eq!(
        call(gw.addr, "/", &[("x-api-key", BETA)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(gw.addr, "/", &[("x-api-key", BETA)]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A plan that no one declared: the whole file is refused, the consumers before stay.
    write_consumers(&[
        ("acme", "platinum", ACME),
        ("beta", "gold", BETA),
        ("gamma", "platinum", GAMMA),
    ]);
    gw.wait_metric(r#"portico_consumer_reloads_total{outcome="failure"}"#, 1)
        .await;
    assert_eq!(
        call(gw.addr, "/", &[("x-api-key", GAMMA)]).await.status,
        StatusCode::UNAUTHORIZED,
        "the refused file's new consumer is unknown"
    );
    let acme = call(gw.addr, "/", &[("x-api-key", ACME)]).await;
    assert_eq!(
        acme.status,
        StatusCode::TOO_MANY_REQUESTS,
        "acme keeps its gold plan and its spent quota"
    );
    assert!(header(&acme, "ratelimit-policy").starts_with("\"gold/daily\""));
    assert_eq!(gw.reload.subscribe().borrow().attempts, 0);
}

#[tokio::test]
async fn counts_survive_a_reload_that_keeps_the_limits_and_restart_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    let write = |rate: &str, tag: &str| {
        std::fs::write(
            &path,
            config(&format!(
                r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - name: limited
    cluster: b
    response_headers: {{ set: {{ x-config: {tag} }} }}
    rate_limit: {{ key: route, limits: [{{ rate: {rate} }}] }}
"#
            )),
        )
        .unwrap();
    };
    write("2/h", "one");
    let gw = TestGateway::start_file(path.clone()).await;
    assert_eq!(call(gw.addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(call(gw.addr, "/", &[]).await.status, StatusCode::OK);
    assert_eq!(
        call(gw.addr, "/", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another response header, the same limits: the spent bucket stays spent.
    write("2/h", "two");
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    let reply = call(gw.addr, "/", &[]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&reply, "x-config"), "two");
    // New limits: new counts.
    write("3/h", "three");
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    assert_eq!(call(gw.addr, "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_concurrency_limit_refuses_what_is_beyond_it_until_a_response_is_done() {
    let release = Arc::new(Notify::new());
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<()>();
    let backend = {
        let release = release.clone();
        backend(move |_req| {
            let release = release.clone();
            let seen_tx = seen_tx.clone();
            async move {
                // Waiting for the release before saying it arrived: none is missed.
                let released = release.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let _ = seen_tx.send(());
                released.await;
                http::Response::new(full("done"))
            }
        })
        .await
    };
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ match: {{ path_prefix: /busy }}, cluster: b, concurrency_limit: {{ max: 1 }} }}
  - {{ match: {{ path_prefix: /polite }}, cluster: b, concurrency_limit: {{ max: 1, status: 429 }} }}
"#
    )))
    .await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { call(addr, "/busy", &[]).await });
    within("the first request at the backend", seen.recv()).await;
    let refused = call(gw.addr, "/busy", &[]).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "concurrency_limited");
    // Another route has its own count.
    let second = tokio::spawn(async move { call(addr, "/polite", &[]).await });
    within("the polite request at the backend", seen.recv()).await;
    let polite = call(gw.addr, "/polite", &[]).await;
    assert_eq!(polite.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(polite.error_code(), "concurrency_limited");
    release.notify_waiters();
    assert_eq!(
        within("the first answer", first).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        within("the second answer", second).await.unwrap().status,
        StatusCode::OK
    );
    // Both slots are back once their responses were sent whole.
    let third = tokio::spawn(async move { call(addr, "/busy", &[]).await });
    within("the third request at the backend", seen.recv()).await;
    release.notify_waiters();
    assert_eq!(
        within("the third answer", third).await.unwrap().status,
        StatusCode::OK
    );
}
