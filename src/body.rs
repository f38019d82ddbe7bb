//! The body types that stream through the gateway, in both directions.
//!
//! On the request path everywhere between hyper's server and hyper's client.
//! [`Body`] is what the route stack passes along: a client's request body on its way upstream
//! ([`ClientBody`]: counted against the route's size limit and a total time budget), an
//! upstream's response on its way back ([`UpstreamBody`]: hands its pooled connection back
//! when the last byte has been read), or a small body the gateway made itself (errors,
//! admin). Nothing is ever buffered whole: frames are passed on as they arrive. An enum rather
//! than a boxed trait object keeps the plain proxy path free of per-request allocations.

use crate::upstream::endpoint::InFlight;
use crate::upstream::pool::Lease;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why a body stream stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
    #[error("error reading the request body from the client")]
    Client(#[source] hyper::Error),
    #[error("error reading the response body from the upstream")]
    Upstream(#[source] hyper::Error),
    /// A compressed request body that does not decode, or a coder that failed.
    #[error("the body could not be decoded or encoded")]
    Coding(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A transcoded request stream the gateway could not turn into messages.
    #[error("{0}")]
    Transcode(#[source] Arc<crate::grpc::stream::StreamElementError>),
}

impl BodyError {
    /// A coder's error: the body error it carries when the body below it failed (so that a
    /// size limit or a timeout is still answered as such), else a coding error.
    pub(crate) fn from_boxed(error: Box<dyn std::error::Error + Send + Sync>) -> BodyError {
        let error = match error.downcast::<BodyError>() {
            Ok(body_error) => return *body_error,
            Err(error) => error,
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(current) = cause {
            match current.downcast_ref::<BodyError>() {
                Some(BodyError::TooLarge { limit }) => {
                    return BodyError::TooLarge { limit: *limit }
                }
                Some(BodyError::Timeout(budget)) => return BodyError::Timeout(*budget),
                _ => cause = current.source(),
            }
        }
        BodyError::Coding(error)
    }
}

pin_project! {
    #[project = BodyProj]
    #[derive(Default)]
    pub(crate) enum Body {
        #[default]
        Empty,
        Full { data: Option<Bytes> },
        Client { #[pin] body: ClientBody },
        Upstream { #[pin] body: UpstreamBody },
        // A body a coding layer made (compression, request decompression): boxed, so only
        // the routes that use one pay for it.
        Boxed { body: UnsyncBoxBody<Bytes, BodyError> },
        // A body the gateway makes as it goes (gRPC transcoding and gRPC-Web): boxed, so
        // only the routes that use it pay for it.
        Stream { body: Pin<Box<dyn http_body::Body<Data = Bytes, Error = BodyError> + Send>> },
    }
}

impl Body {
    pub(crate) fn empty() -> Body {
        Body::Empty
    }

    /// Box a body a coding layer made, its errors as [`BodyError`]s.
    pub(crate) fn boxed<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        Body::Boxed {
            body: body
                .map_err(|error| BodyError::from_boxed(error.into()))
                .boxed_unsync(),
        }
    }

    pub(crate) fn full(data: impl Into<Bytes>) -> Body {
        let data = data.into();
        if data.is_empty() {
            Body::Empty
        } else {
            Body::Full { data: Some(data) }
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Body::Empty => "empty",
            Body::Full { .. } => "full",
            Body::Client { .. } => "client",
            Body::Upstream { .. } => "upstream",
            Body::Boxed { .. } => "boxed",
            Body::Stream { .. } => "stream",
        };
        f.debug_tuple("Body").field(&kind).finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            BodyProj::Empty => Poll::Ready(None),
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Client { body } => body.poll_frame(cx),
            BodyProj::Upstream { body } => body.poll_frame(cx),
            BodyProj::Boxed { body } => Pin::new(body).poll_frame(cx),
            BodyProj::Stream { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full { data } => data.is_none(),
            Body::Client { body } => body.is_end_stream(),
            Body::Upstream { body } => body.is_end_stream(),
            Body::Boxed { body } => body.is_end_stream(),
            Body::Stream { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Client { body } => body.size_hint(),
            Body::Upstream { body } => body.size_hint(),
            Body::Boxed { body } => body.size_hint(),
            Body::Stream { body } => body.size_hint(),
        }
    }
}

/// A client's request body: enforces the route's size limit while streaming (for bodies
/// without Content-Length) and a total time budget from the start of the request, so a
/// client trickling one byte at a time cannot hold a backend connection for ever. The timer
/// is only created if the body actually has to wait for the client. (Boxed, so the body
/// stays `Unpin` as hyper's HTTP/2 client requires.)
pub(crate) struct ClientBody {
    inner: Incoming,
    limit: u64,
    received: u64,
    deadline: Instant,
    budget: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Told when the body ends, for the route timeout; made when someone asks.
    progress: Option<Arc<BodyProgress>>,
}

impl ClientBody {
    pub(crate) fn new(
        inner: Incoming,
        limit: u64,
        started: Instant,
        budget: Duration,
    ) -> ClientBody {
        ClientBody {
            inner,
            limit,
            received: 0,
            deadline: started + budget,
            budget,
            timer: None,
            progress: None,
        }
    }

    /// Lower the size limit (a route's limit applied after the body was wrapped).
    pub(crate) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Follow this body: whether it has been received whole, and whether it is waiting for the
    /// client. The route timeout starts counting only once the request is complete.
    pub(crate) fn progress(&mut self) -> Arc<BodyProgress> {
        let (deadline, budget) = (self.deadline, self.budget);
        self.progress
            .get_or_insert_with(|| Arc::new(BodyProgress::new(deadline, budget)))
            .clone()
    }

    fn note(&self, event: BodyEvent) {
        if let Some(progress) = &self.progress {
            progress.note(event);
        }
    }

    fn fail(&self, failure: BodyFailure) {
        if let Some(progress) = &self.progress {
            let _ = progress.failure.set(failure);
        }
    }
}

enum BodyEvent {
    /// The client has not sent the next bytes yet.
    WaitingForClient,
    /// Bytes arrived.
    Received,
    /// The body has ended (whole, or failed).
    Ended,
}

/// How far a client's request body has got: shared by the body (which reports) and the route
/// timeout (which waits for the end before it starts counting the upstream's time).
pub(crate) struct BodyProgress {
    /// The body's own budget ends here (the request's start plus `request_body_timeout`).
    deadline: Instant,
    budget: Duration,
    ended: AtomicBool,
    waiting_for_client: AtomicBool,
    waker: AtomicWaker,
    /// Why the body stopped early, if the gateway stopped it: an HTTP/2 upstream client
    /// only resets the stream and loses the reason, so the upstream reads it here.
    failure: std::sync::OnceLock<BodyFailure>,
}

/// A client body the gateway cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    TooLarge { limit: u64 },
    Timeout(Duration),
}

impl BodyProgress {
    fn new(deadline: Instant, budget: Duration) -> BodyProgress {
        BodyProgress {
            deadline,
            budget,
            ended: AtomicBool::new(false),
            waiting_for_client: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            failure: std::sync::OnceLock::new(),
        }
    }

    fn note(&self, event: BodyEvent) {
        match event {
            BodyEvent::WaitingForClient => self.waiting_for_client.store(true, Relaxed),
            BodyEvent::Received => self.waiting_for_client.store(false, Relaxed),
            BodyEvent::Ended => {
                self.waiting_for_client.store(false, Relaxed);
                self.ended.store(true, Release);
                self.waker.wake();
            }
        }
    }

    /// Why the gateway cut the body off, if it did.
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        self.failure.get().copied()
    }

    /// When the body's own budget runs out.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The body's budget (`request_body_timeout`).
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// Ready once the body has ended; until then the task is woken when it does.
    pub(crate) fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ended.load(Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.ended.load(Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the body was, when last read, waiting for the client to send more (as opposed
    /// to not being read at all, which is the upstream not taking it).
    pub(crate) fn waiting_for_client(&self) -> bool {
        self.waiting_for_client.load(Relaxed)
    }
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.limit {
                        this.note(BodyEvent::Ended);
                        this.fail(BodyFailure::TooLarge { limit: this.limit });
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                    }
                }
                this.note(if this.inner.is_end_stream() {
                    BodyEvent::Ended
                } else {
                    BodyEvent::Received
                });
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.note(BodyEvent::Ended);
                Poll::Ready(Some(Err(BodyError::Client(err))))
            }
            Poll::Ready(None) => {
                this.note(BodyEvent::Ended);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.note(BodyEvent::WaitingForClient);
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                ready!(timer.as_mut().poll(cx));
                this.note(BodyEvent::Ended);
                this.fail(BodyFailure::Timeout(this.budget));
                Poll::Ready(Some(Err(BodyError::Timeout(this.budget))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An upstream's response body. The pooled connection it came on is handed back to the pool
/// at the exact moment the body ends — not when the body is dropped, which for a response
/// that was only partly read would return a connection with bytes still in flight.
pub(crate) struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease<Body>>,
    upstream: Arc<str>,
    /// The request counted in flight at its endpoint until this body ends; boxed so that
    /// every response, counted or not, stays as small to move as before.
    in_flight: Option<Box<InFlight>>,
}

impl UpstreamBody {
    pub(crate) fn new(
        inner: Incoming,
        lease: Option<Lease<Body>>,
        upstream: Arc<str>,
        in_flight: Option<Box<InFlight>>,
    ) -> UpstreamBody {
        let mut body = UpstreamBody {
            inner,
            lease,
            upstream,
            in_flight,
        };
        // An empty response (HEAD, 204, Content-Length: 0) is never polled by the server side.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// The endpoint (`host:port`) that sent this response.
    pub(crate) fn upstream(&self) -> &Arc<str> {
        &self.upstream
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        self.in_flight = None;
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                // The connection is broken: dropping the lease closes it.
                this.lease = None;
                Poll::Ready(Some(Err(BodyError::Upstream(err))))
            }
            None => {
                this.release();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
