//! What unit tests of layers put below the layer under test.

use crate::body::Body;
use crate::error::GatewayError;
use http::{Request, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Answers every request with `outcome()` at once, and counts the requests it sees.
#[derive(Clone)]
pub(crate) struct Below {
    outcome: fn() -> Result<Response<Body>, GatewayError>,
    calls: Arc<AtomicUsize>,
}

impl Below {
    /// Answers 200 with an empty body.
    pub(crate) fn ok() -> Below {
        Below::answering(|| Ok(Response::new(Body::empty())))
    }

    pub(crate) fn answering(outcome: fn() -> Result<Response<Body>, GatewayError>) -> Below {
        Below {
            outcome,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many requests reached it.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<Body>> for Below {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = std::future::Ready<Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready((self.outcome)())
    }
}

/// The problems a config with one route (its extra keys given as YAML flow-mapping entries,
/// e.g. `"cors: { allow_origins: [x] }"`) has, as `line:column: path: message` lines; empty
/// when it loads.
pub(crate) fn route_problems(route_keys: &str) -> Vec<String> {
    let text = format!(
        "listeners:\n  - {{ name: l, address: \"127.0.0.1:0\" }}\nclusters:\n  - {{ name: b, endpoints: [\"127.0.0.1:1\"] }}\n  - {{ name: c, endpoints: [\"127.0.0.1:2\"] }}\nroutes:\n  - {{ match: {{ path_prefix: /api, methods: [GET] }}, cluster: b, {route_keys} }}\n"
    );
    match crate::config::load_str(&text, "t.yaml") {
        Ok(_) => Vec::new(),
        Err(crate::ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => vec![other.to_string()],
    }
}
