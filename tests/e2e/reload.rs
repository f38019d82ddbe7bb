//! Hot reload: under load with zero failures, refusing bad files, keeping pools.

use crate::common::*;
use http::StatusCode;
use std::path::Path;

fn route_file(path: &Path, backend: std::net::SocketAddr, tag: &str) {
    let yaml = format!(
        r#"
runtime: {{ watch_interval: 0s }}
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - cluster: b
    response_headers: {{ set: {{ x-config: "{tag}" }} }}
"#
    );
    std::fs::write(path, yaml).expect("write config");
}

#[tokio::test]
async fn reloading_under_continuous_load_fails_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    route_file(&path, backend, "gen-0");
    let gw = TestGateway::start_file(path.clone()).await;

    // Four clients, 300 requests each, keep-alive connections, while the config changes.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            let mut sender = h1_connection(addr).await;
            let mut failures = 0;
            let mut tags = std::collections::BTreeSet::new();
            for _ in 0..300 {
                sender.ready().await.expect("ready");
                let req = http::Request::get("/")
                    .header("host", "h")
                    .body(full(""))
                    .expect("req");
                match sender.send_request(req).await {
                    Ok(response) => {
                        if response.status() != StatusCode::OK {
                            failures += 1;
                        }
                        tags.insert(
                            response.headers()["x-config"]
                                .to_str()
                                .expect("tag")
                                .to_string(),
                        );
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                    }
                    Err(_) => failures += 1,
                }
            }
            (failures, tags)
        }));
    }
    for generation in 1..=10 {
        route_file(&path, backend, &format!("gen-{generation}"));
        within("a reload", gw.reload.reload())
            .await
            .expect("reload succeeds");
        tokio::task::yield_now().await;
    }
    let mut all_tags = std::collections::BTreeSet::new();
    for client in clients {
        let (failures, tags) = within("a client", client).await.expect("task");
        assert_eq!(failures, 0);
        all_tags.extend(tags);
    }
    assert!(
        all_tags.len() >= 2,
        "requests saw more than one config: {all_tags:?}"
    );
    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.headers["x-config"], "gen-10");
    let metrics = metrics(gw.admin.expect("admin")).await;
    assert!(
        metrics.contains("portico_config_reloads_total{outcome=\"success\"} 10"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_old_config_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    route_file(&path, backend, "good");
    let gw = TestGateway::start_file(path.clone()).await;
    assert_eq!(get(gw.addr, "h", "/").await.headers["x-config"], "good");

    std::fs::write(&path, "listeners: [\nthis is: not yaml").expect("write");
    let error = within("a reload", gw.reload.reload())
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("portico.yaml"), "{error}");
    std::fs::write(&path, "routes:\n  - { cluster: missing }\n").expect("write");
    let error = within("a reload", gw.reload.reload())
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("missing"), "{error}");

    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-config"], "good");
    let status = gw.reload.subscribe().borrow().clone();
    assert_eq!(status.attempts, 2);
    assert_eq!(status.generation, 0);
    assert!(status.last_error.is_some());
    let metrics = metrics(gw.admin.expect("admin")).await;
    assert!(
        metrics.contains("portico_config_reloads_total{outcome=\"failure\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_file_watch_picks_up_a_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    route_file(&path, backend, "before");
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("watch_interval: 0s", "watch_interval: 50ms");
    std::fs::write(&path, &text).expect("write");
    let gw = TestGateway::start_file(path.clone()).await;
    let mut status = gw.reload.subscribe();

    std::fs::write(&path, text.replace("before", "after")).expect("write");
    within(
        "the watch to reload",
        status.wait_for(|s| s.generation >= 1),
    )
    .await
    .expect("status");
    assert_eq!(get(gw.addr, "h", "/").await.headers["x-config"], "after");
}

#[tokio::test]
async fn a_reload_that_needs_a_restart_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    route_file(&path, backend, "x");
    let gw = TestGateway::start_file(path.clone()).await;
    let text = std::fs::read_to_string(&path)
        .expect("read")
        .replace("name: public", "name: renamed");
    std::fs::write(&path, text).expect("write");
    let error = within("a reload", gw.reload.reload())
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("listeners"), "{error}");
}

#[tokio::test]
async fn pooled_connections_of_unchanged_clusters_survive_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    route_file(&path, backend, "one");
    let gw = TestGateway::start_file(path.clone()).await;
    for tag in ["two", "three", "four"] {
        assert_eq!(get(gw.addr, "h", "/").await.status, StatusCode::OK);
        route_file(&path, backend, tag);
        within("a reload", gw.reload.reload())
            .await
            .expect("reload");
    }
    assert_eq!(get(gw.addr, "h", "/").await.headers["x-config"], "four");
    let metrics = metrics(gw.admin.expect("admin")).await;
    assert!(
        metrics.contains("portico_upstream_connections_opened_total{cluster=\"b\"} 1"),
        "one upstream connection across three reloads:\n{metrics}"
    );
}
