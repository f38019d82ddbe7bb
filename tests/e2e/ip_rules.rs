//! IP allow and deny lists on the real client address: the connection's peer, or — behind
//! trusted proxies — the right-most untrusted hop of the forwarding header, so spoofed
//! headers get nobody in.

use crate::common::*;
use http::{Request, StatusCode};
use std::net::SocketAddr;

async fn gateway(backend: SocketAddr, trusted_proxies: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{trusted_proxies}{}",
        config(&format!(
            r#"clusters:
  - {{ name: b, endpoints: ["{backend}"] }}
routes:
  - {{ match: {{ path_prefix: /internal }}, cluster: b,
       ip_rules: {{ allow: [10.0.0.0/8, "2001:db8::/32"], deny: [10.0.13.0/24] }} }}
  - {{ match: {{ path_prefix: /open }}, cluster: b, ip_rules: {{ deny: [203.0.113.0/24] }} }}
"#
        ))
    ))
    .await
}

async fn call(gw: &TestGateway, path: &str, header: Option<(&str, &str)>) -> Reply {
    let mut req = Request::get(path).header("host", "h");
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    send(gw.addr, req.body(full("")).expect("request")).await
}

fn refused(reply: &Reply) -> bool {
    reply.status == StatusCode::FORBIDDEN && reply.error_code() == "ip_not_allowed"
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_decides() {
    let backend = echo_backend("b").await;
    // The test client (127.0.0.1) plays the trusted proxy, and 10.9.0.0/16 a second tier.
    let gw = gateway(
        backend,
        "trusted_proxies: { addresses: [127.0.0.1, 10.9.0.0/16] }\n",
    )
    .await;
    let xff = |value| Some(("x-forwarded-for", value));
    let allowed = call(&gw, "/internal/x", xff("10.1.2.3")).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.json()["path"], "/internal/x");
    // Through two trusted tiers, with a lie on the left.
    let chained = call(&gw, "/internal/x", xff("6.6.6.6, 10.1.2.3, 10.9.0.1")).await;
    assert_eq!(chained.status, StatusCode::OK);
    // Denied inside the allowed range.
    assert!(refused(&call(&gw, "/internal/x", xff("10.0.13.5")).await));
    // A client that prepends an allowed address is still the address its proxy saw.
    assert!(refused(
        &call(&gw, "/internal/x", xff("10.1.2.3, 198.51.100.7")).await
    ));
    // No header: the client is the proxy itself, which is not allowed.
    assert!(refused(&call(&gw, "/internal/x", None).await));
    // A deny-only route lets everyone else in.
    assert!(refused(&call(&gw, "/open", xff("203.0.113.9")).await));
    assert_eq!(
        call(&gw, "/open", xff("198.51.100.7")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_trusted_proxies_forwarding_headers_are_not_believed() {
    let backend = echo_backend("b").await;
    let gw = gateway(backend, "").await;
    for header in [
        ("x-forwarded-for", "10.1.2.3"),
        ("forwarded", "for=10.1.2.3"),
        ("x-real-ip", "10.1.2.3"),
    ] {
        let reply = call(&gw, "/internal/x", Some(header)).await;
        assert!(refused(&reply), "{header:?}: {}", reply.status);
    }
    // The peer (127.0.0.1) is not denied on the open route.
    assert_eq!(call(&gw, "/open", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forwarded_headers_are_read_when_the_proxies_write_them() {
    let backend = echo_backend("b").await;
    let gw = gateway(
        backend,
        "trusted_proxies: { addresses: [127.0.0.1], header: forwarded }\n",
    )
    .await;
    let forwarded = |value| Some(("forwarded", value));
    let v6 = call(
        &gw,
        "/internal/x",
        forwarded(r#"for="[2001:db8::5]:4711";proto=https"#),
    )
    .await;
    assert_eq!(v6.status, StatusCode::OK);
    assert!(refused(
        &call(
            &gw,
            "/internal/x",
            forwarded(r#"for=10.1.2.3, for="[2001:db9::1]""#)
        )
        .await
    ));
    // X-Forwarded-For is not the header these proxies write: not believed.
    assert!(refused(
        &call(&gw, "/internal/x", Some(("x-forwarded-for", "10.1.2.3"))).await
    ));
}
