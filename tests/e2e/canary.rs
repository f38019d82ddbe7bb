//! Versioned APIs and canaries: routing by header, a weighted split between clusters (within
//! statistical tolerance over a bounded number of requests), and mirroring to a shadow
//! cluster that never delays or alters the primary answer.

use crate::common::*;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use tokio::sync::mpsc;

/// A shadow backend: reports each request it receives (method, path, body) and never
/// answers.
async fn shadow_backend() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(String, String, String)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = backend(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            use http_body_util::BodyExt;
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let _ = tx.send((
                parts.method.to_string(),
                parts.uri.to_string(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
            std::future::pending::<()>().await;
            http::Response::new(full(""))
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn a_header_picks_the_version_and_a_weighted_split_spreads_the_rest() {
    let stable = echo_backend("stable").await;
    let canary = echo_backend("canary").await;
    let v2 = echo_backend("v2").await;
    let gw = TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: stable, endpoints: ["{stable}"] }}
  - {{ name: canary, endpoints: ["{canary}"] }}
  - {{ name: v2, endpoints: ["{v2}"] }}
routes:
  - match: {{ path_prefix: /api }}
    traffic_split: [{{ cluster: stable, weight: 80 }}, {{ cluster: canary, weight: 20 }}]
  - match: {{ path_prefix: /api, headers: [{{ name: accept-version, value: "2" }}] }}
    cluster: v2
"#
    )))
    .await;

    let versioned = send(
        gw.addr,
        Request::get("/api/x")
            .header("host", "h")
            .header("accept-version", "2")
            .body(full(""))
            .expect("request"),
    )
    .await;
    assert_eq!(versioned.json()["name"], "v2");

    const REQUESTS: usize = 500;
    let mut sender = h1_connection(gw.addr).await;
    let mut canaries = 0;
    for _ in 0..REQUESTS {
        let req = Request::get("/api/x")
            .header("host", "h")
            .body(full(""))
            .expect("request");
        let reply = within("a request", async {
            collect(sender.send_request(req).await.expect("response")).await
        })
        .await;
        match reply.json()["name"].as_str() {
            Some("canary") => canaries += 1,
            Some("stable") => {}
            other => panic!("unexpected backend {other:?}"),
        }
    }
    // 20% of 500 is 100, standard deviation about 8.9: five of them either way.
    assert!(
        (55..=145).contains(&canaries),
        "{canaries} of {REQUESTS} to the canary"
    );
}

async fn mirrored_gateway(primary: SocketAddr, shadow: SocketAddr) -> TestGateway {
    TestGateway::start(&format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{}",
        config(&format!(
            r#"clusters:
  - {{ name: primary, endpoints: ["{primary}"] }}
  - {{ name: shadow, endpoints: ["{shadow}"] }}
routes:
  - name: mirrored
    match: {{ path_prefix: /m }}
    cluster: primary
    mirror: {{ cluster: shadow, max_in_flight: 2, max_body_size: 1KiB, timeout: 10m }}
"#
        ))
    ))
    .await
}

#[tokio::test]
async fn a_mirror_gets_a_copy_and_its_silence_never_holds_up_the_primary() {
    let primary = echo_backend("primary").await;
    let (shadow, mut seen) = shadow_backend().await;
    let gw = mirrored_gateway(primary, shadow).await;

    // The shadow never answers; the primary's answer comes all the same, unaltered.
    let reply = send(
        gw.addr,
        Request::post("/m/orders?x=1")
            .header("host", "h")
            .body(full("{\"qty\":2}"))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["name"], "primary");
    assert_eq!(json["body"], "{\"qty\":2}");
    let copy = within("the mirrored copy", seen.recv())
        .await
        .expect("a copy");
    assert_eq!(
        copy,
        ("POST".into(), "/m/orders?x=1".into(), "{\"qty\":2}".into())
    );

    let reply = get(gw.addr, "h", "/m/second").await;
    assert_eq!(reply.status, StatusCode::OK);
    let copy = within("the second copy", seen.recv())
        .await
        .expect("a copy");
    assert_eq!(copy.1, "/m/second");

    // Two copies are stuck at the shadow: the third request is not mirrored, and not held.
    let reply = get(gw.addr, "h", "/m/third").await;
    assert_eq!(reply.status, StatusCode::OK);
    gw.wait_metric(
        "portico_mirror_requests_total{route=\"mirrored\",outcome=\"dropped\"}",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_body_too_large_to_copy_is_not_mirrored() {
    let primary = echo_backend("primary").await;
    let (shadow, mut seen) = shadow_backend().await;
    let gw = mirrored_gateway(primary, shadow).await;
    let big = "x".repeat(4096);
    let reply = send(
        gw.addr,
        Request::post("/m/big")
            .header("host", "h")
            .body(full(big.clone()))
            .expect("request"),
    )
    .await;
    assert_eq!(reply.json()["body"], big.as_str());
    gw.wait_metric(
        "portico_mirror_requests_total{route=\"mirrored\",outcome=\"skipped\"}",
        1,
    )
    .await;
    // A small one after it is mirrored: the big one never reached the shadow.
    let _ = get(gw.addr, "h", "/m/small").await;
    let copy = within("the small copy", seen.recv()).await.expect("a copy");
    assert_eq!(copy.1, "/m/small");
}
