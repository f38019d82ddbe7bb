//! The route stack's seam, end to end: every answer of a route — the gateway's own errors
//! included — flows back through the route's response decorators, and a gRPC caller gets
//! its errors the way gRPC clients read them.

use crate::common::*;
use http::{Request, StatusCode};
use std::net::SocketAddr;

/// A backend that accepts requests and never answers.
async fn silent_backend() -> SocketAddr {
    backend(|_req| async {
        std::future::pending::<()>().await;
        http::Response::new(full(""))
    })
    .await
}

/// Three routes with the same `response_headers`: one in front of a live backend with a
/// 1 KiB body limit, one in front of a silent backend with a short timeout, one in front of
/// a closed port.
async fn decorated_gateway() -> TestGateway {
    let live = echo_backend("live").await;
    let silent = silent_backend().await;
    let dead = closed_port().await;
    let decorate = "response_headers: { set: { x-route-policy: applied }, add: { vary: origin } }";
    TestGateway::start(&config(&format!(
        r#"clusters:
  - {{ name: live, endpoints: ["{live}"] }}
  - {{ name: silent, endpoints: ["{silent}"] }}
  - {{ name: dead, endpoints: ["{dead}"] }}
routes:
  - {{ match: {{ path_prefix: /live }}, cluster: live, max_body_size: 1KiB, {decorate} }}
  - {{ match: {{ path_prefix: /silent }}, cluster: silent, timeout: 200ms, {decorate} }}
  - {{ match: {{ path_prefix: /dead }}, cluster: dead, {decorate} }}
"#
    )))
    .await
}

#[tokio::test]
async fn route_response_headers_decorate_the_gateways_own_errors() {
    let gw = decorated_gateway().await;

    let ok = get(gw.addr, "h", "/live").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["x-route-policy"], "applied");

    let too_large = send(
        gw.addr,
        Request::post("/live")
            .header("host", "h")
            .body(full(vec![b'x'; 2048]))
            .expect("request"),
    )
    .await;
    let timed_out = get(gw.addr, "h", "/silent").await;
    let unreachable = get(gw.addr, "h", "/dead").await;
    for (reply, status, code) in [
        (
            &too_large,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (&timed_out, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        (
            &unreachable,
            StatusCode::BAD_GATEWAY,
            "upstream_connect_failed",
        ),
    ] {
        assert_eq!(reply.status, status);
        assert_eq!(reply.error_code(), code);
        assert_eq!(reply.headers["x-route-policy"], "applied", "{code}");
        assert_eq!(reply.headers["vary"], "origin", "{code}");
        assert!(reply.headers.contains_key("x-request-id"), "{code}");
    }

    // No route, no route policy: the router's 404 is not decorated.
    let unrouted = get(gw.addr, "h", "/elsewhere").await;
    assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    assert!(!unrouted.headers.contains_key("x-route-policy"));
}

/// An h2c request as a gRPC client sends it.
fn grpc_request(path: &str) -> Request<BoxBody> {
    Request::post(format!("http://h{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // One empty message: compressed flag 0, length 0.
        .body(full(vec![0u8; 5]))
        .expect("request")
}

#[tokio::test]
async fn a_grpc_caller_gets_a_grpc_status_instead_of_a_json_error() {
    let gw = decorated_gateway().await;
    for (path, grpc_status, message) in [
        ("/dead/pkg.Service/Method", "14", "could not connect"),
        (
            "/silent/pkg.Service/Method",
            "4",
            "did not answer within 200ms",
        ),
        ("/nowhere/pkg.Service/Method", "12", "no route"),
    ] {
        let reply = send_h2(gw.addr, grpc_request(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.headers["content-type"], "application/grpc", "{path}");
        assert_eq!(reply.headers["grpc-status"], grpc_status, "{path}");
        let text = reply.headers["grpc-message"].to_str().expect("ascii");
        assert!(text.contains(message), "{path}: {text}");
        assert!(reply.body.is_empty(), "{path}: no JSON body");
    }
    // The route's decorators apply to gRPC answers too.
    let reply = send_h2(gw.addr, grpc_request("/dead/pkg.Service/Method")).await;
    assert_eq!(reply.headers["x-route-policy"], "applied");
}

/// A real gRPC client (Python's grpcio, not our code) reads the gateway's answers: the status
/// codes and messages are what a gRPC application sees. `.ci/run` installs grpcio.
#[tokio::test]
async fn a_python_grpc_client_reads_the_gateways_statuses() {
    let gw = decorated_gateway().await;
    let script = r#"
import sys
try:
    import grpc
except ImportError:
    print("MISSING grpcio: install it with `python3 -m pip install grpcio` (.ci/run does)")
    sys.exit(3)
channel = grpc.insecure_channel(sys.argv[1])
for method in sys.argv[2:]:
    call = channel.unary_unary(method)
    try:
        call(b"", timeout=20)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name, "|", error.details())
"#;
    let target = gw.addr.to_string();
    let stdout = python_script(
        "the Python gRPC client",
        script,
        &[
            &target,
            "/dead/pkg.Service/Method",
            "/silent/pkg.Service/Method",
        ],
    )
    .await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("UNAVAILABLE | could not connect to any endpoint of cluster dead"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("DEADLINE_EXCEEDED | the upstream did not answer within 200ms"),
        "{stdout}"
    );
}
