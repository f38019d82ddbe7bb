//! THE request path, top to bottom.
//!
//! ```text
//! listener accept ─ TLS ─ connection guard ─ hyper (h1 / h2 / h2c)      server/
//!   └─ handle()                                                          this file
//!        request id         first, so every answer and log line carries one   request_id.rs
//!        admission          framing, CONNECT, target length, host, path        admission.rs
//!                           normalisation, redirect_https — then the router
//!        forwarding headers hop-by-hop removal, X-Forwarded-*, Via             forwarding.rs
//!        request context    connection, TLS facts, request id, caller kind,    context.rs
//!                           for routes whose policies read it
//!        route stack        CORS → response headers → compression → rescue   stack.rs
//!                           → IP rules → body limit → auth → rate limits → direct
//!                           answers → faults → request transforms → timeout → request
//!                           decompression → gRPC → mirror → upstream
//!        completion         X-Request-Id, HSTS, Via on every answer; metrics,  completion.rs
//!                           access log and the connection's idle clock once
//!                           the last byte has gone
//! ```
//! Errors before a route is chosen are answered here (no route, no route policies); errors
//! inside a route's stack are answered by its rescue layer, so the route's decorators see
//! them. Both render through the one table in `error.rs`. The [`Runtime`] a request uses is
//! loaded once at its start; a reload swaps in a new one without disturbing it.

use crate::admission::{admit, Admitted};
use crate::body::{Body, ClientBody};
use crate::client_ip::client_ip;
use crate::completion::{RequestRecord, ResponseBody};
use crate::context::{Caller, ClientConnection, RequestContext};
use crate::error::GatewayError;
use crate::forwarding::{is_upgrade_request, set_forwarding_headers};
use crate::runtime::{Runtime, Shared};
use crate::upstream::DownstreamUpgrade;
use http::{Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;

/// Serve one request. Never fails: every error becomes an answer.
///
/// Everything before the route's stack — request id, admission and routing, forwarding
/// headers, context — is done here, when hyper hands the request over; the future this
/// returns holds only the route's call and what the answer still needs. (An `async fn`
/// would keep room for the request and every local of that work in its future, which is
/// moved whole on its way to being polled.)
pub(crate) fn handle(
    shared: &Arc<Shared>,
    conn: &Arc<ClientConnection>,
    mut req: Request<Incoming>,
) -> Handling<impl Future<Output = Response<Body>>> {
    let started = Instant::now();
    let head_refusal = conn.state.start_request();
    let runtime = shared.runtime.load_full();
    let request_id = shared.request_ids.take_or_generate(req.headers());
    let mut record = RequestRecord::start(
        conn.clone(),
        request_id.clone(),
        started,
        &req,
        runtime.access_log.as_deref(),
    );

    let token_endpoint = runtime
        .token_endpoint
        .as_ref()
        .filter(|endpoint| endpoint.on_listener(&conn.listener.name));
    let admitted = admit(
        &runtime.router,
        |route| runtime.routes[route].answers_preflight,
        |path| token_endpoint.and_then(|endpoint| endpoint.path(path)),
        &conn.listener.config,
        &mut req,
        head_refusal,
    );
    let (step, answered_by) = match admitted {
        Ok(Admitted::Route { route, host }) => {
            let entry = &runtime.routes[route];
            let upgrade = is_upgrade_request(&req);
            if upgrade {
                let on_upgrade = hyper::upgrade::on(&mut req);
                req.extensions_mut().insert(DownstreamUpgrade(on_upgrade));
            }
            set_forwarding_headers(
                &mut req,
                conn,
                &runtime.identity_headers,
                host,
                &request_id,
                upgrade,
            );
            let budget = conn.listener.config.limits.request_body_timeout;
            let mut req = req.map(|incoming| {
                if http_body::Body::is_end_stream(&incoming) {
                    Body::empty()
                } else {
                    Body::Client {
                        body: ClientBody::new(incoming, u64::MAX, started, budget),
                    }
                }
            });
            if entry.retries {
                if let Some(attempts) = record.attempts() {
                    req.extensions_mut().insert(attempts);
                }
            }
            if entry.authenticates {
                if let Some(note) = record.identity_note() {
                    req.extensions_mut().insert(note);
                }
            }
            if entry.context {
                let caller = Caller::of(req.headers());
                // Before the route's header rewrites, as every concern that reads it.
                let client = entry.client_address.then(|| {
                    client_ip(
                        conn.peer.ip(),
                        req.headers(),
                        &runtime.config.sections.trusted_proxies,
                    )
                });
                req.extensions_mut().insert(RequestContext {
                    connection: conn.clone(),
                    request_id: request_id.clone(),
                    caller,
                    client,
                });
            }
            let call = crate::stack::call(&entry.stack, req);
            (Step::Route { call }, AnsweredBy::Route(route))
        }
        Ok(Admitted::Answer(response)) => (Step::answer(response), AnsweredBy::Gateway),
        Ok(Admitted::Local(which)) => match token_endpoint {
            Some(endpoint) => {
                let client = client_ip(
                    conn.peer.ip(),
                    req.headers(),
                    &runtime.config.sections.trusted_proxies,
                );
                let budget = conn.listener.config.limits.request_body_timeout;
                let req = req.map(|incoming| Body::Client {
                    body: ClientBody::new(incoming, u64::MAX, started, budget),
                });
                let endpoint = endpoint.clone();
                // Boxed: the token endpoint's future is larger than a route's.
                let serve = Box::pin(async move { endpoint.serve(which, req, client).await });
                (Step::Local { serve }, AnsweredBy::Local)
            }
            None => (
                Step::answer(GatewayError::NoRoute.answer(
                    &request_id,
                    Caller::of(req.headers()),
                    None,
                )),
                AnsweredBy::Gateway,
            ),
        },
        // The caller's kind matters only for an error answer: read it then.
        Err(error) => (
            Step::answer(error.answer(&request_id, Caller::of(req.headers()), None)),
            AnsweredBy::Gateway,
        ),
    };
    Handling {
        step,
        finish: Some(Finish {
            record,
            runtime,
            shared: shared.clone(),
            answered_by,
        }),
    }
}

pin_project! {
    /// A request being served: its route's call (or the token endpoint's answer, or the
    /// gateway's own), then the answer completed by its [`RequestRecord`]. The output is
    /// hyper's service output; it is never an error.
    pub(crate) struct Handling<F> {
        #[pin]
        step: Step<F>,
        finish: Option<Finish>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<F> {
        Route { #[pin] call: F },
        Local { serve: Pin<Box<dyn Future<Output = Response<Body>> + Send>> },
        Answer { response: Option<Response<Body>> },
    }
}

impl<F> Step<F> {
    fn answer(response: Response<Body>) -> Step<F> {
        Step::Answer {
            response: Some(response),
        }
    }
}

/// Whose answer a request got, for its record's metrics.
enum AnsweredBy {
    Route(usize),
    /// The token endpoint.
    Local,
    /// The gateway, before any route (no route, a refused request).
    Gateway,
}

/// What completes the answer once there is one.
struct Finish {
    record: RequestRecord,
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    answered_by: AnsweredBy,
}

impl<F> Future for Handling<F>
where
    F: Future<Output = Response<Body>>,
{
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.step.project() {
            StepProj::Route { call } => ready!(call.poll(cx)),
            StepProj::Local { serve } => ready!(serve.as_mut().poll(cx)),
            StepProj::Answer { response } => response.take().expect("polled after completion"),
        };
        let finish = this.finish.take().expect("polled after completion");
        let runtime = &finish.runtime;
        let route = match finish.answered_by {
            AnsweredBy::Route(index) => runtime.routes.get(index).map(|entry| &entry.record),
            AnsweredBy::Local => Some(&runtime.local_record),
            AnsweredBy::Gateway => None,
        };
        Poll::Ready(Ok(finish.record.finish(
            response,
            route,
            &runtime.unmatched,
            &finish.shared.metrics,
        )))
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future `handle` returns for the arguments' types (never called).
    fn future_size<A, B, C, F>(_: impl Fn(&A, &B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's future is moved whole on its way to being polled (into hyper's
    /// HTTP/1.1 dispatcher, into the box of an HTTP/2 stream's task): it holds the route's
    /// call and what the answer needs, not the work before it. A bound with a little room
    /// from the size this was written with (1,632 bytes; 3,512 as an `async fn`).
    #[test]
    fn a_requests_future_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 1_800, "a request's future is {size} bytes");
    }
}
