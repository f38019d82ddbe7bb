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
use std::sync::Arc;
use tokio::time::Instant;

/// Serve one request. Never fails: every error becomes an answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ClientConnection>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
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

    let mut req = req;
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
    let (response, route) = match admitted {
        Ok(Admitted::Route { route, host }) => {
            let entry = &runtime.routes[route];
            let upgrade = is_upgrade_request(&req);
            if upgrade {
                let on_upgrade = hyper::upgrade::on(&mut req);
                req.extensions_mut().insert(DownstreamUpgrade(on_upgrade));
            }
            set_forwarding_headers(
                &mut req,
                &conn,
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
            let response = crate::stack::call(&entry.stack, req).await;
            (response, Some(route))
        }
        Ok(Admitted::Answer(response)) => (response, None),
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
                let response = endpoint.serve(which, req, client).await;
                return record.finish(
                    response,
                    Some(&runtime.local_record),
                    &runtime.unmatched,
                    &shared.metrics,
                );
            }
            None => (
                GatewayError::NoRoute.answer(&request_id, Caller::of(req.headers()), None),
                None,
            ),
        },
        // The caller's kind matters only for an error answer: read it then.
        Err(error) => (
            error.answer(&request_id, Caller::of(req.headers()), None),
            None,
        ),
    };
    finish(&runtime, &shared, record, response, route)
}

fn finish(
    runtime: &Runtime,
    shared: &Shared,
    record: RequestRecord,
    response: Response<Body>,
    route: Option<usize>,
) -> Response<ResponseBody> {
    let route = route.and_then(|index| runtime.routes.get(index));
    record.finish(
        response,
        route.map(|entry| &entry.record),
        &runtime.unmatched,
        &shared.metrics,
    )
}
