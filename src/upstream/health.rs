//! Active health checks: one task per endpoint probes it every `interval` (plus a random
//! jitter, so a fleet of gateways does not probe in step) and flips the endpoint's state
//! after `unhealthy_threshold` failures in a row, or back after `healthy_threshold` passes.
//!
//! Off the request path: the balancer only reads the verdict (`endpoint.rs`). A checker is a
//! reload-surviving resource per cluster + endpoint, so there is one per endpoint however many
//! routes use its cluster, it keeps running across reloads that leave its settings alone, and
//! it stops (the task is aborted) when the runtime that holds it goes away without a
//! successor taking it — the endpoint left the config, or its check changed.
//!
//! Probes: `http` sends `GET path` (on its own kept-alive connection, HTTP/1.1 or HTTP/2 as
//! the cluster speaks) and expects a listed status (any 2xx by default); `grpc` calls
//! `grpc.health.v1.Health/Check` and expects `SERVING`; `tcp` opens a connection. Probes'
//! connections are the gateway's own, never shared with requests, and not counted by the
//! circuit breaker: a breaker full of requests must not fail a probe and so take a healthy
//! endpoint out. A probe that does not finish within `timeout` fails. Failure modes of the
//! backend (refused, reset, hung, wrong answer) all count as a failed probe; nothing here can
//! fail a request.

use crate::body::Body;
use crate::config::model::UpstreamProtocol;
use crate::upstream::policy::{HealthCheck, HealthCheckKind};
use crate::upstream::pool::{EndpointPool, Lease, Opener};
use bytes::{Buf, Bytes};
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A running checker; dropping it stops the task.
pub(crate) struct Checker {
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Checker {
    /// Start checking `pool`'s endpoint. Needs a Tokio runtime (the gateway's workers, or
    /// the reload thread, which enters it); without one nothing is checked and the endpoint
    /// keeps its verdict.
    pub(crate) fn start(
        pool: Arc<EndpointPool<Body>>,
        check: HealthCheck,
        cluster_host: Option<HeaderValue>,
    ) -> Checker {
        let task = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn(run(pool, check, cluster_host)).abort_handle()),
            Err(_) => {
                tracing::warn!(endpoint = %pool.label, "no runtime to run health checks on");
                None
            }
        };
        Checker { task }
    }
}

async fn run(pool: Arc<EndpointPool<Body>>, check: HealthCheck, cluster_host: Option<HeaderValue>) {
    let mut probe = Probe {
        pool,
        host: match &check.kind {
            HealthCheckKind::Http {
                host: Some(host), ..
            } => HeaderValue::from_str(host).ok(),
            _ => None,
        }
        .or(cluster_host),
        kept: None,
        kept_h2: None,
    };
    let (mut passes, mut failures) = (0u32, 0u32);
    // The first check comes after the jitter only: a new endpoint's verdict is known soon.
    tokio::time::sleep(jitter(&check)).await;
    loop {
        let passed = matches!(
            tokio::time::timeout(check.timeout, probe.once(&check.kind)).await,
            Ok(true)
        );
        let state = &probe.pool.state;
        if passed {
            state.counters.health_checks_passed.fetch_add(1, Relaxed);
            failures = 0;
            passes = passes.saturating_add(1);
            if !state.is_healthy() && passes >= check.healthy_threshold {
                tracing::info!(endpoint = %probe.pool.label, "endpoint healthy again");
                state.set_healthy(true);
            }
        } else {
            state.counters.health_checks_failed.fetch_add(1, Relaxed);
            // A connection that failed a probe is not trusted for the next.
            probe.kept = None;
            passes = 0;
            failures = failures.saturating_add(1);
            if state.is_healthy() && failures >= check.unhealthy_threshold {
                tracing::warn!(endpoint = %probe.pool.label, "endpoint failed its health checks");
                state.set_healthy(false);
            }
        }
        tokio::time::sleep(check.interval + jitter(&check)).await;
    }
}

fn jitter(check: &HealthCheck) -> std::time::Duration {
    if check.jitter.is_zero() {
        return check.jitter;
    }
    check.jitter.mul_f64(fastrand::f64())
}

struct Probe {
    pool: Arc<EndpointPool<Body>>,
    host: Option<HeaderValue>,
    /// The HTTP/1.1 connection kept between probes.
    kept: Option<Lease<Body>>,
    /// The HTTP/2 connection kept between probes (the probe's own: it is not counted by the
    /// circuit breaker, so requests must not use it).
    kept_h2: Option<http2::SendRequest<Body>>,
}

/// Health answers are small; anything longer is not read (the probe fails).
const MAX_PROBE_BODY: usize = 64 * 1024;

impl Probe {
    async fn once(&mut self, kind: &HealthCheckKind) -> bool {
        match kind {
            HealthCheckKind::Tcp => self.pool.dial(Opener::Probe).await.is_ok(),
            HealthCheckKind::Http { path, statuses, .. } => {
                let Ok(req) = self.request(Method::GET, path, Body::empty()) else {
                    return false;
                };
                let Some(response) = self.send(req).await else {
                    return false;
                };
                let status = response.status();
                let read = read_body(response.into_body()).await.is_some();
                read && if statuses.is_empty() {
                    status.is_success()
                } else {
                    statuses.contains(&status)
                }
            }
            HealthCheckKind::Grpc { service } => {
                let Ok(mut req) = self.request(
                    Method::POST,
                    "/grpc.health.v1.Health/Check",
                    Body::full(grpc_check_request(service)),
                ) else {
                    return false;
                };
                let headers = req.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert("te", HeaderValue::from_static("trailers"));
                let Some(response) = self.send(req).await else {
                    return false;
                };
                if response.status() != StatusCode::OK {
                    return false;
                }
                let (parts, body) = response.into_parts();
                // Trailers-only answers carry grpc-status in the head.
                if parts.headers.get("grpc-status").is_some_and(|s| s != "0") {
                    return false;
                }
                let Some((data, trailers)) = read_body(body).await else {
                    return false;
                };
                let status_ok = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .or(parts.headers.get("grpc-status"))
                    .is_some_and(|s| s == "0");
                status_ok && grpc_serving(data)
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Request<Body>, http::Error> {
        let http2 = self.pool.protocol() == UpstreamProtocol::Http2;
        let host = self
            .host
            .clone()
            .or_else(|| HeaderValue::from_str(&self.pool.label).ok());
        let uri: Uri = if http2 {
            let scheme = if self.pool.is_tls() { "https" } else { "http" };
            let authority = host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or(&self.pool.label);
            format!("{scheme}://{authority}{path}").parse()?
        } else {
            path.parse()?
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .version(if http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            })
            .header(USER_AGENT, "portico-health-check");
        if !http2 {
            if let Some(host) = host {
                builder = builder.header(HOST, host);
            }
        }
        builder.body(body)
    }

    async fn send(&mut self, req: Request<Body>) -> Option<hyper::Response<Incoming>> {
        if self.pool.protocol() == UpstreamProtocol::Http2 {
            if self
                .kept_h2
                .as_ref()
                .is_none_or(|sender| sender.is_closed())
            {
                self.kept_h2 = Some(self.pool.connect_http2_for_probe().await.ok()?);
            }
            let sender = self.kept_h2.as_mut()?;
            sender.ready().await.ok()?;
            return sender.send_request(req).await.ok();
        }
        if self
            .kept
            .as_mut()
            .is_none_or(|lease| lease.sender().is_closed())
        {
            self.kept = Some(self.pool.connect_http1(false, Opener::Probe).await.ok()?);
        }
        let lease = self.kept.as_mut()?;
        lease.sender().ready().await.ok()?;
        lease.sender().send_request(req).await.ok()
    }
}

/// The whole body (at most [`MAX_PROBE_BODY`]) and its trailers.
async fn read_body(mut body: Incoming) -> Option<(Bytes, Option<http::HeaderMap>)> {
    let mut data = bytes::BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > MAX_PROBE_BODY {
                    return None;
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Some((data.freeze(), trailers))
}

/// A length-prefixed `HealthCheckRequest { service }` (field 1, a string).
fn grpc_check_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Whether a length-prefixed `HealthCheckResponse` says `status: SERVING` (field 1 = 1).
fn grpc_serving(mut data: Bytes) -> bool {
    if data.len() < 5 || data[0] != 0 {
        return false;
    }
    data.advance(1);
    let len = data.get_u32() as usize;
    if data.len() < len {
        return false;
    }
    let mut message = data.split_to(len);
    while message.has_remaining() {
        let Some(tag) = read_varint(&mut message) else {
            return false;
        };
        match (tag >> 3, tag & 7) {
            (1, 0) => return read_varint(&mut message) == Some(1),
            (_, 0) => {
                read_varint(&mut message);
            }
            (_, 2) => {
                let Some(skip) = read_varint(&mut message) else {
                    return false;
                };
                if (message.remaining() as u64) < skip {
                    return false;
                }
                message.advance(skip as usize);
            }
            (_, 1) if message.remaining() >= 8 => message.advance(8),
            (_, 5) if message.remaining() >= 4 => message.advance(4),
            _ => return false,
        }
    }
    // Field 1 absent: its default, UNKNOWN.
    false
}

fn read_varint(data: &mut Bytes) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !data.has_remaining() {
            return None;
        }
        let byte = data.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages() {
        assert_eq!(&grpc_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_check_request("svc")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']
        );
        assert!(grpc_serving(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1])));
        assert!(!grpc_serving(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 2])));
        assert!(!grpc_serving(Bytes::from_static(&[0, 0, 0, 0, 0])));
        assert!(!grpc_serving(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])));
    }
}
