//! The admin listener: health, readiness, metrics and the effective configuration.
//!
//! A separate address (usually loopback or a management network), never the public
//! listeners. It reads the same shared state the request path uses — the metrics registry,
//! the current runtime, the draining flag — and never changes it.
//!
//! - `GET /healthz` — 200 while the process runs.
//! - `GET /readyz`  — 200 while serving, 503 once draining (take the instance out of a pool).
//! - `GET /metrics` — Prometheus text format.
//! - `GET /config`  — the effective configuration as JSON, secrets redacted.
//! - `GET /clusters` — each cluster's endpoints and their live state (health, ejection,
//!   load, counters) as JSON.
//! - `GET /openapi.json` — the OpenAPI 3.1 document of every gRPC transcoding route, made
//!   from the running configuration (so a reload with changed protos changes it).

use crate::body::Body;
use crate::context::Caller;
use crate::error::GatewayError;
use crate::runtime::Shared;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serve the admin API on `listener` until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::lifecycle::stopped(&mut stop) => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(error = %error, "admin accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %error, "admin connection ended with an error");
            }
        });
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return GatewayError::AdminReadOnly.render("", Caller::Http);
    }
    match req.uri().path() {
        "/healthz" => json(
            StatusCode::OK,
            bytes::Bytes::from_static(b"{\"status\":\"ok\"}"),
        ),
        "/readyz" => {
            if shared.draining.load(Relaxed) {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    bytes::Bytes::from_static(b"{\"status\":\"draining\"}"),
                )
            } else {
                json(
                    StatusCode::OK,
                    bytes::Bytes::from_static(b"{\"status\":\"ready\"}"),
                )
            }
        }
        "/metrics" => {
            let mut text = shared.metrics.render();
            crate::upstream::report::render_metrics(&shared.runtime.load().clusters, &mut text);
            let mut response = Response::new(Body::full(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/config" => {
            let dump = &shared.runtime.load().config.redacted_dump;
            let text = serde_json::to_vec_pretty(dump).unwrap_or_default();
            json(StatusCode::OK, bytes::Bytes::from(text))
        }
        "/clusters" => {
            let runtime = shared.runtime.load();
            let clusters: Vec<serde_json::Value> =
                runtime.clusters.iter().map(|c| c.status()).collect();
            let text = serde_json::to_vec_pretty(&serde_json::json!({ "clusters": clusters }))
                .unwrap_or_default();
            json(StatusCode::OK, bytes::Bytes::from(text))
        }
        "/openapi.json" => {
            let config = shared.runtime.load().config.clone();
            json(
                StatusCode::OK,
                crate::grpc::openapi::admin_document(&config),
            )
        }
        _ => GatewayError::AdminNotFound.render("", Caller::Http),
    }
}

fn json(status: StatusCode, body: bytes::Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
