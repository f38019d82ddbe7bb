//! The end of a request: the gateway's own response headers, then — once the response body
//! has been sent or abandoned — metrics, the access log line and the connection's idle clock.
//!
//! On the request path: [`RequestRecord::finish`] is the last step of `gateway::handle`, for
//! every answer (forwarded, or made by the gateway). The response body hyper writes is a
//! [`ResponseBody`]: the route's body, counted, with a [`Completion`] riding along; when
//! hyper drops it after the last byte (or when the client goes away), the completion records
//! the request. One place, however the request ended.

use crate::access_log::{rfc3339_now, AccessLog, AccessRecord};
use crate::body::Body;
use crate::context::ClientConnection;
use crate::error::LocalAnswer;
use crate::forwarding::via_value;
use crate::metrics::{Metrics, RouteMetrics};
use crate::middleware::auth::identity::IdentityNote;
use crate::middleware::retry::AttemptCount;
use crate::request_id::X_REQUEST_ID;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;

/// What is known about a request from its start, for its completion.
pub(crate) struct RequestRecord {
    pub(crate) connection: Arc<ClientConnection>,
    pub(crate) request_id: HeaderValue,
    pub(crate) started: Instant,
    /// Gathered only when there is an access log.
    log: Option<Box<LogFacts>>,
}

/// The route a request took, as its completion reports it.
pub(crate) struct RouteRecord {
    pub(crate) name: Arc<str>,
    pub(crate) cluster: Arc<str>,
    pub(crate) metrics: Arc<RouteMetrics>,
}

struct LogFacts {
    sink: AccessLog,
    method: Method,
    path: String,
    version: Version,
    bytes_in: u64,
    /// Tries of a retrying route's request (`None`: one).
    attempts: Option<AttemptCount>,
    /// Who the caller was, once the route's auth has said (`None`: no auth on the route).
    identity: Option<IdentityNote>,
}

impl RequestRecord {
    pub(crate) fn start<B>(
        connection: Arc<ClientConnection>,
        request_id: HeaderValue,
        started: Instant,
        req: &Request<B>,
        access_log: Option<&AccessLog>,
    ) -> RequestRecord {
        RequestRecord {
            connection,
            request_id,
            started,
            log: access_log.map(|sink| {
                Box::new(LogFacts {
                    sink: sink.clone(),
                    method: req.method().clone(),
                    path: req.uri().path().to_string(),
                    version: req.version(),
                    bytes_in: declared_length(req.headers()),
                    attempts: None,
                    identity: None,
                })
            }),
        }
    }

    /// A counter of the tries the retry layer makes, when there is an access log to put it
    /// in.
    pub(crate) fn attempts(&mut self) -> Option<AttemptCount> {
        let facts = self.log.as_mut()?;
        Some(
            facts
                .attempts
                .get_or_insert_with(AttemptCount::default)
                .clone(),
        )
    }

    /// Where the route's auth notes the caller, when there is an access log to put it in.
    pub(crate) fn identity_note(&mut self) -> Option<IdentityNote> {
        let facts = self.log.as_mut()?;
        Some(
            facts
                .identity
                .get_or_insert_with(IdentityNote::default)
                .clone(),
        )
    }

    /// Add the gateway's own headers to `response` and attach the completion. `route` is the
    /// route that served it, `None` for requests no route took.
    pub(crate) fn finish(
        self,
        mut response: Response<Body>,
        route: Option<&RouteRecord>,
        unmatched: &Arc<RouteMetrics>,
        metrics: &Metrics,
    ) -> Response<ResponseBody> {
        let local = response.extensions().get::<LocalAnswer>().copied();
        if let Some(local) = local {
            metrics.local_response(local.code).fetch_add(1, Relaxed);
        }
        let listener = &self.connection.listener;
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
        if let Some(hsts) = &listener.hsts {
            // A backend that sets its own policy knows its site best.
            headers
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
        if listener.config.via {
            headers.append(header::VIA, via_value(Version::HTTP_11));
        }
        let log = self.log.map(|facts| {
            let identity = facts.identity.as_ref().and_then(IdentityNote::identity);
            let consumer = identity
                .and_then(|identity| identity.consumer.as_ref())
                .map(|c| c.id.clone());
            let auth = local.and_then(|l| l.auth).or(identity.map(|_| "ok"));
            Box::new(PendingLog {
                facts: *facts,
                request_id: self.request_id,
                route: route.map(|r| r.name.clone()),
                cluster: route.map(|r| r.cluster.clone()),
                upstream: match response.body() {
                    Body::Upstream { body } => Some(body.upstream().clone()),
                    _ => None,
                },
                error_code: local.map(|l| l.code),
                auth,
                consumer,
            })
        });
        let completion = Completion {
            connection: self.connection,
            metrics: route.map_or_else(|| unmatched.clone(), |r| r.metrics.clone()),
            status: response.status().as_u16(),
            started: self.started,
            bytes_out: 0,
            completed: false,
            log,
        };
        response.map(|body| ResponseBody::new(body, completion))
    }
}

fn declared_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct PendingLog {
    facts: LogFacts,
    request_id: HeaderValue,
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    error_code: Option<&'static str>,
    auth: Option<&'static str>,
    consumer: Option<Arc<str>>,
}

/// Runs when the response is finished (fully sent, or abandoned): the one place that
/// records metrics, writes the access log line and tells the connection it is idle again.
struct Completion {
    connection: Arc<ClientConnection>,
    metrics: Arc<RouteMetrics>,
    status: u16,
    started: Instant,
    bytes_out: u64,
    completed: bool,
    log: Option<Box<PendingLog>>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.started);
        self.metrics.observe(self.status, elapsed);
        self.connection.state.request_finished(now.into_std());
        if let Some(log) = self.log.take() {
            let PendingLog {
                facts,
                request_id,
                route,
                cluster,
                upstream,
                error_code,
                auth,
                consumer,
            } = *log;
            facts.sink.log(&AccessRecord {
                time: rfc3339_now(),
                request_id: request_id.to_str().unwrap_or("").to_string(),
                client_ip: self.connection.peer.ip(),
                listener: self.connection.listener.name.to_string(),
                protocol: match facts.version {
                    Version::HTTP_10 => "HTTP/1.0",
                    Version::HTTP_2 => "HTTP/2",
                    _ => "HTTP/1.1",
                },
                method: facts.method.to_string(),
                path: facts.path,
                route: route.map(|r| r.to_string()),
                cluster: cluster.map(|c| c.to_string()),
                upstream: upstream.map(|u| u.to_string()),
                status: self.status,
                error_code,
                auth,
                consumer: consumer.map(|c| c.to_string()),
                bytes_in: facts.bytes_in,
                bytes_out: self.bytes_out,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                completed: self.completed,
                attempts: facts
                    .attempts
                    .as_ref()
                    .map_or(1, |a| a.0.load(Relaxed).max(1)),
            });
        }
    }
}

pin_project! {
    /// The body hyper writes to the client: the route's body, counted, with [`Completion`] riding
    /// along until hyper drops it after the last byte.
    pub(crate) struct ResponseBody {
        #[pin]
        inner: Body,
        completion: Completion,
    }
}

impl ResponseBody {
    fn new(inner: Body, mut completion: Completion) -> ResponseBody {
        if http_body::Body::is_end_stream(&inner) {
            completion.completed = true;
        }
        ResponseBody { inner, completion }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.completion.bytes_out += data.len() as u64;
                }
            }
            Some(Err(error)) => {
                tracing::debug!(error = %error, "response body ended early");
            }
            None => this.completion.completed = true,
        }
        if frame.is_some() && inner.is_end_stream() {
            this.completion.completed = true;
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
