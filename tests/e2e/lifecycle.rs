//! Lifecycle and operations: graceful drain, the admin listener, the access log.

use crate::common::*;
use http::{Request, Response, StatusCode};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[tokio::test]
async fn shutdown_drains_a_slow_in_flight_request() {
    // The backend holds its answer until the test releases it, after shutdown has begun.
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let hooks = Arc::new(Mutex::new(Some((arrived_tx, release_rx))));
    let addr = backend(move |_req| {
        let hooks = hooks.lock().expect("lock").take();
        async move {
            if let Some((arrived, release)) = hooks {
                let _ = arrived.send(());
                let _ = release.await;
            }
            Response::new(full("finished"))
        }
    })
    .await;
    let mut gw = TestGateway::start(&format!(
        "runtime: {{ drain_timeout: 30s }}\naccess_log: {{ enabled: false }}\nadmin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: public, address: \"127.0.0.1:0\" }}\nclusters:\n  - {{ name: b, endpoints: [\"{addr}\"] }}\nroutes:\n  - {{ cluster: b }}\n"
    ))
    .await;
    let admin = gw.admin.expect("admin");
    assert_eq!(get(admin, "admin", "/readyz").await.status, StatusCode::OK);

    let public = gw.addr;
    let in_flight = tokio::spawn(async move { get(public, "h", "/slow").await });
    within("the request to reach the backend", arrived_rx)
        .await
        .expect("arrived");

    let drained = gw.begin_shutdown();
    // New connections are no longer accepted once the listener is closed…
    let refused = within("the listener to close", async {
        loop {
            match tokio::net::TcpStream::connect(public).await {
                Err(_) => return true,
                Ok(stream) => {
                    // Accepted by the kernel backlog before the close: must not be served.
                    drop(stream);
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await;
    assert!(refused);
    assert!(
        !drained.is_finished(),
        "the in-flight request holds the drain open"
    );

    release_tx.send(()).expect("release");
    let reply = within("the in-flight request", in_flight)
        .await
        .expect("task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "finished");
    within("the drain to finish", drained)
        .await
        .expect("gateway task");
}

#[tokio::test]
async fn the_admin_listener_reports_health_metrics_and_redacted_config() {
    let addr = echo_backend("b").await;
    std::env::set_var("PORTICO_TEST_UPSTREAM_TOKEN", "s3cr3t-token-value");
    let gw = TestGateway::start(&format!(
        r#"
access_log: {{ enabled: false }}
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: public, address: "127.0.0.1:0" }}
clusters:
  - {{ name: users, endpoints: ["{addr}"] }}
routes:
  - name: users
    cluster: users
    match: {{ path_prefix: /users }}
    request_headers: {{ set: {{ authorization: "Bearer ${{PORTICO_TEST_UPSTREAM_TOKEN}}" }} }}
"#
    ))
    .await;
    let admin = gw.admin.expect("admin");
    assert_eq!(get(admin, "admin", "/healthz").await.status, StatusCode::OK);
    assert_eq!(
        get(admin, "admin", "/readyz").await.json()["status"],
        "ready"
    );

    // The secret reaches the backend…
    let json = get(gw.addr, "h", "/users/1").await.json();
    assert_eq!(
        json["headers"]["authorization"][0],
        "Bearer s3cr3t-token-value"
    );
    assert_eq!(
        get(gw.addr, "h", "/nowhere").await.status,
        StatusCode::NOT_FOUND
    );

    let text = metrics(admin).await;
    for series in [
        "portico_requests_total{route=\"users\",class=\"2xx\"} 1",
        "portico_requests_total{route=\"(none)\",class=\"4xx\"} 1",
        "portico_request_duration_seconds_count{route=\"users\"} 1",
        "portico_local_responses_total{code=\"route_not_found\"} 1",
        "portico_active_connections{listener=\"public\"}",
        "portico_upstream_connect_errors_total{cluster=\"users\"} 0",
        "portico_config_reloads_total{outcome=\"success\"} 0",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }

    // …but never appears in the config dump.
    let dump = get(admin, "admin", "/config").await;
    assert_eq!(dump.status, StatusCode::OK);
    let dump_text = dump.text();
    assert!(!dump_text.contains("s3cr3t"), "{dump_text}");
    assert!(dump_text.contains("<redacted>"), "{dump_text}");
    assert_eq!(dump.json()["routes"][0]["cluster"], "users");
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("access.log");
    let addr = echo_backend("b").await;
    let gw = TestGateway::start(&format!(
        "access_log: {{ enabled: true, path: \"{}\" }}\nlisteners:\n  - {{ name: public, address: \"127.0.0.1:0\" }}\nclusters:\n  - {{ name: users, endpoints: [\"{addr}\"] }}\nroutes:\n  - {{ name: users-route, cluster: users }}\n",
        log_path.display()
    ))
    .await;
    let req = Request::post("/things?x=1")
        .header("host", "h")
        .body(full("12345"))
        .expect("req");
    let reply = send(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    let request_id = reply.headers["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let body_len = reply.body.len() as u64;
    gw.shutdown().await;

    // The writer flushes whenever its queue runs empty; wait for our line to land.
    let line = within("the access log line", async {
        loop {
            let text = tokio::fs::read_to_string(&log_path)
                .await
                .unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(&request_id)) {
                return line.to_string();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["path"], "/things");
    assert_eq!(entry["route"], "users-route");
    assert_eq!(entry["cluster"], "users");
    assert_eq!(entry["upstream"], addr.to_string());
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert_eq!(entry["bytes_in"], 5);
    assert_eq!(entry["bytes_out"], body_len);
    assert_eq!(entry["completed"], true);
    assert!(entry["duration_ms"].as_f64().is_some());
    assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')));
}
