//! Request mirroring to a shadow cluster: the `mirror` key.
//!
//! Sits innermost, just above the destination, so the shadow sees the request exactly as the
//! primary does (rewritten, decoded). A copy of a share of requests is sent to the shadow
//! cluster from a task of its own; its answer is read and discarded, and nothing about it —
//! slowness, failure — ever reaches the primary exchange or delays it:
//! - the number of mirrored requests in flight is bounded (`max_in_flight`); past it, a
//!   request is simply not mirrored (counted as `dropped`);
//! - a body is copied only when it declares a length of at most `max_body_size`: it is
//!   copied as it streams to the primary (never held back), and the copy goes to the shadow
//!   once the primary's body has arrived whole; a larger body, or one of unknown length,
//!   is not mirrored (`skipped`);
//! - a mirrored exchange is bounded by `timeout`.
//!
//! Counted in `portico_mirror_requests_total{route,outcome}` (`sent`, `failed`, `dropped`,
//! `skipped`).

use crate::body::{Body, BodyError};
use crate::chance::Share;
use crate::config::check::{Description, RouteCheck, RoutePolicy};
use crate::config::source::Seg;
use crate::error::GatewayError;
use crate::metrics::{Metrics, MIRROR_REQUESTS};
use crate::upstream::Cluster;
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use tower_layer::Layer;
use tower_service::Service;

const DEFAULT_MAX_IN_FLIGHT: usize = 64;
const DEFAULT_MAX_BODY: u64 = 64 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The route's mirror, checked; `None` when it has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MirrorPolicy {
    pub(crate) mirror: Option<Arc<MirrorSettings>>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct MirrorSettings {
    pub(crate) cluster: usize,
    pub(crate) cluster_name: String,
    pub(crate) share: Share,
    pub(crate) max_in_flight: usize,
    pub(crate) max_body_size: u64,
    pub(crate) timeout: Duration,
}

/// `mirror` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct MirrorRouteFile {
    mirror: Option<MirrorFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct MirrorFile {
    /// The shadow cluster.
    cluster: String,
    /// Share of requests mirrored, 0..=100. Default `100`.
    percent: Option<f64>,
    /// Mirrored requests in flight at most. Default `64`.
    max_in_flight: Option<usize>,
    /// Largest body copied. Default `64KiB`.
    max_body_size: Option<String>,
    /// Bound of one mirrored exchange. Default `5s`.
    timeout: Option<String>,
}

impl RoutePolicy for MirrorPolicy {
    const KEYS: &'static [&'static str] = &["mirror"];
    type File = MirrorRouteFile;

    fn adds_layer(&self) -> bool {
        self.mirror.is_some()
    }

    fn check(file: &MirrorRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(file) = &file.mirror else {
            return Some(MirrorPolicy::default());
        };
        let path = route.key("mirror");
        let cluster = route.cluster(&path.key("cluster"), &file.cluster);
        let percent = file.percent.unwrap_or(100.0);
        let share = Share::from_percent(percent);
        if share.is_none() {
            route.report(
                &path.key("percent"),
                format!("{percent} is not a percentage from 0 to 100"),
            );
        }
        let max_in_flight = route.count(
            &path.key("max_in_flight"),
            file.max_in_flight,
            DEFAULT_MAX_IN_FLIGHT,
            (1, 100_000),
        );
        let max_body_size = route.size(
            &path.key("max_body_size"),
            file.max_body_size.as_deref(),
            DEFAULT_MAX_BODY,
        );
        let timeout = route.duration(
            &path.key("timeout"),
            file.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            false,
        );
        Some(MirrorPolicy {
            mirror: Some(Arc::new(MirrorSettings {
                cluster: cluster?,
                cluster_name: file.cluster.clone(),
                share: share?,
                max_in_flight: max_in_flight?,
                max_body_size: max_body_size?,
                timeout: timeout?,
            })),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if let Some(m) = &self.mirror {
            out.line(
                "mirror",
                format!(
                    "{}% to cluster {} (answers discarded; at most {} in flight, bodies up to \
                     {} bytes)",
                    m.share.percent(),
                    m.cluster_name,
                    m.max_in_flight,
                    m.max_body_size
                ),
            );
        }
    }

    fn wants_text(path: &[Seg]) -> bool {
        matches!(path, [Seg::Key(a), Seg::Key(b)] if a == "mirror" && b == "max_body_size")
    }
}

/// What an enabled mirror needs per request, made once per config.
pub(crate) struct MirrorRuntime {
    settings: Arc<MirrorSettings>,
    shadow: Arc<Cluster>,
    in_flight: Arc<Semaphore>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

#[derive(Clone)]
pub(crate) struct MirrorLayer {
    on: Option<Arc<MirrorRuntime>>,
}

impl MirrorLayer {
    pub(crate) fn new(
        route: &str,
        policy: &MirrorPolicy,
        clusters: &[Arc<Cluster>],
        metrics: &Metrics,
    ) -> MirrorLayer {
        let on = policy.mirror.as_ref().and_then(|settings| {
            let counter = |outcome| {
                metrics.counter(&MIRROR_REQUESTS, &[("route", route), ("outcome", outcome)])
            };
            Some(Arc::new(MirrorRuntime {
                shadow: clusters.get(settings.cluster)?.clone(),
                in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
                sent: counter("sent"),
                failed: counter("failed"),
                dropped: counter("dropped"),
                skipped: counter("skipped"),
                settings: settings.clone(),
            }))
        });
        MirrorLayer { on }
    }
}

impl<S> Layer<S> for MirrorLayer {
    type Service = Mirror<S>;

    fn layer(&self, inner: S) -> Mirror<S> {
        Mirror {
            inner,
            on: self.on.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Mirror<S> {
    inner: S,
    on: Option<Arc<MirrorRuntime>>,
}

impl<S> Service<Request<Body>> for Mirror<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> S::Future {
        match &self.on {
            Some(mirror) if mirror.settings.share.hit() => {
                let req = mirror.start(req);
                self.inner.call(req)
            }
            _ => self.inner.call(req),
        }
    }
}

impl MirrorRuntime {
    /// Start mirroring `req` if it can be, and give back the request for the primary.
    fn start(self: &Arc<Self>, req: Request<Body>) -> Request<Body> {
        let empty = http_body::Body::is_end_stream(req.body());
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !empty && declared.is_none_or(|len| len > self.settings.max_body_size) {
            self.skipped.fetch_add(1, Relaxed);
            return req;
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.dropped.fetch_add(1, Relaxed);
            return req;
        };
        let (parts, body) = req.into_parts();
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        let (body, copy) = if empty {
            (body, None)
        } else {
            let (tx, rx) = oneshot::channel();
            let tee = Tee {
                inner: body,
                copy: BytesMut::new(),
                limit: self.settings.max_body_size,
                done: Some(tx),
            };
            (Body::boxed(tee), Some(rx))
        };
        let mirror = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let body = match copy {
                None => Body::empty(),
                Some(rx) => match rx.await {
                    Ok(bytes) => Body::full(bytes),
                    // The primary's body failed or outgrew the copy: nothing to mirror.
                    Err(_) => {
                        mirror.skipped.fetch_add(1, Relaxed);
                        return;
                    }
                },
            };
            let req = head.map(|()| body);
            let exchange = async {
                let response = mirror.shadow.clone().send(req).await?;
                // Read the answer to its end so the connection goes back to the pool.
                let _ = response.into_body().collect().await;
                Ok::<_, GatewayError>(())
            };
            match tokio::time::timeout(mirror.settings.timeout, exchange).await {
                Ok(Ok(())) => mirror.sent.fetch_add(1, Relaxed),
                _ => mirror.failed.fetch_add(1, Relaxed),
            };
        });
        Request::from_parts(parts, body)
    }
}

/// The primary's body, copied as it streams; the copy is handed over when it ends whole
/// within the limit.
struct Tee {
    inner: Body,
    copy: BytesMut,
    limit: u64,
    done: Option<oneshot::Sender<Bytes>>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if (this.copy.len() + data.len()) as u64 > this.limit {
                        // More than declared: give up the copy, never the primary.
                        this.done = None;
                    } else if this.done.is_some() {
                        this.copy.extend_from_slice(data);
                    }
                }
                // The last frame: the copy is whole now (the body may not be polled again).
                if this.inner.is_end_stream() {
                    if let Some(done) = this.done.take() {
                        let _ = done.send(std::mem::take(&mut this.copy).freeze());
                    }
                }
            }
            Some(Err(_)) => this.done = None,
            None => {
                if let Some(done) = this.done.take() {
                    let _ = done.send(std::mem::take(&mut this.copy).freeze());
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // hyper may stop polling once the body reports its end: the copy is whole then.
        if http_body::Body::is_end_stream(&self.inner) {
            if let Some(done) = self.done.take() {
                let _ = done.send(std::mem::take(&mut self.copy).freeze());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::middleware::test_support::route_problems;

    #[test]
    fn mirrors_are_checked_at_their_keys() {
        assert!(route_problems("mirror: { cluster: c }").is_empty());
        let p = route_problems("mirror: { cluster: x, percent: 101, max_in_flight: 0 }");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter()
                .any(|p| p.contains("mirror.cluster: unknown cluster `x`")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.contains("mirror.percent")), "{p:?}");
        assert!(
            p.iter().any(|p| p.contains("mirror.max_in_flight")),
            "{p:?}"
        );
    }
}
