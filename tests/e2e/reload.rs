//! Hot reload: under load with zero failures, refusing bad files, keeping pools.

use crate::common::*;
use http::StatusCode;
use std::path::Path;

fn route_file(path: &Path, backend: std::net::SocketAddr, tag: &str) {
    cluster_file(path, backend, "", tag);
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

/// A config with cluster `b` and its extra `cluster_keys` (e.g. `, connect_timeout: 2s`), and
/// one route to it that tags its responses with `x-config: tag`.
fn cluster_file(path: &Path, backend: std::net::SocketAddr, cluster_keys: &str, tag: &str) {
    let yaml = format!(
        r#"
runtime: {{ watch_interval: 0s }}
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
clusters:
  - {{ name: b, endpoints: ["{backend}"]{cluster_keys} }}
routes:
  - cluster: b
    response_headers: {{ set: {{ x-config: "{tag}" }} }}
"#
    );
    std::fs::write(path, yaml).expect("write config");
}

#[tokio::test]
async fn open_connections_survive_a_reload_that_keeps_their_endpoint_and_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    cluster_file(&path, backend, ", connect_timeout: 1s", "one");
    let gw = TestGateway::start_file(path.clone()).await;
    let opened = "portico_upstream_connections_opened_total{cluster=\"b\"}";
    assert_eq!(get(gw.addr, "h", "/").await.status, StatusCode::OK);

    // Other settings of the cluster change: the endpoint's pooled connection stays.
    cluster_file(
        &path,
        backend,
        ", connect_timeout: 2s, pool: { max_idle_per_endpoint: 8 }",
        "two",
    );
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.headers["x-config"], "two");
    assert_eq!(gw.metric(opened).await, 1);

    // The protocol changes: connections made for HTTP/1.1 are not reused for HTTP/2.
    cluster_file(&path, backend, ", protocol: http2", "three");
    within("a reload", gw.reload.reload())
        .await
        .expect("reload");
    let reply = get(gw.addr, "h", "/").await;
    assert_eq!(reply.headers["x-config"], "three");
    assert_eq!(reply.json()["version"], "HTTP/2.0");
    assert_eq!(gw.metric(opened).await, 2);
}

/// With one async worker (this test's runtime), a reload whose files are slow to read must not
/// hold up requests. The config file is replaced by a FIFO that delivers the new config only
/// when the test says so; until then requests keep completing. The new config also names a
/// CA bundle, which the reload reads and parses in the same place.
#[tokio::test]
async fn a_reload_waiting_on_its_files_does_not_stall_requests() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portico.yaml");
    let backend = echo_backend("b").await;
    route_file(&path, backend, "before");
    let gw = TestGateway::start_file(path.clone()).await;

    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])
        .expect("certificate")
        .cert
        .pem();
    std::fs::write(dir.path().join("ca.pem"), ca).expect("write CA");
    let next = std::fs::read_to_string(&path)
        .expect("config")
        .replace("x-config: \"before\"", "x-config: \"after\"")
        .replace(
            "clusters:\n",
            "clusters:\n  - { name: slow, endpoints: [\"127.0.0.1:9\"], tls: { ca: ca.pem } }\n",
        );
    std::fs::remove_file(&path).expect("remove config");
    let path_c = std::ffi::CString::new(path.to_str().expect("utf-8 path")).expect("c path");
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(path_c.as_ptr(), 0o600) }, 0, "mkfifo");
    // The writer waits for the test's go-ahead, or for PATIENCE: if the reload ever blocked
    // this runtime's one thread, the test then fails instead of hanging.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let fifo = path.clone();
    let writer = std::thread::spawn(move || {
        let _ = wait.recv_timeout(PATIENCE);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open the FIFO");
        file.write_all(next.as_bytes()).expect("write the FIFO");
    });

    let handle = gw.reload.clone();
    let reload = tokio::spawn(async move { handle.reload().await });
    for _ in 0..20 {
        let reply = get(gw.addr, "h", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["x-config"], "before");
    }
    assert!(
        !reload.is_finished(),
        "the reload cannot have finished: its file has not been written yet"
    );
    go.send(()).expect("writer waiting");
    within("the reload", reload)
        .await
        .expect("joined")
        .expect("the reload succeeds once the file is readable");
    writer.join().expect("writer");
    assert_eq!(get(gw.addr, "h", "/").await.headers["x-config"], "after");
}
