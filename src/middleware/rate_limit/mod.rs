//! Rate limits, quotas and concurrency limits.
//!
//! On the request path, the rate-limit layer (`layer.rs`) sits in each route's stack right
//! after auth — limits key on the identity auth establishes — and inside the rescue layer,
//! so that a 429 is rendered by `error.rs` and still passes the CORS and response-header
//! decorators. The concurrency layer (`concurrency.rs`) comes next.
//!
//! The parts:
//! - `limits.rs`: what a limit is (a GCRA rate, or a quota on a UTC calendar window);
//! - `policy.rs`: a route's `rate_limit` key and the `rate_limiting` section (plans, Redis);
//! - `key.rs`: whose bucket a request counts against;
//! - `local.rs`: the local backend (governor over a bounded key store);
//! - `redis.rs`: the Redis backend (one atomic script per decision);
//! - `services.rs`: the limiters of a runtime, carried across reloads;
//! - `layer.rs`: the layer, and the `RateLimit` / `X-RateLimit-*` headers;
//! - `concurrency.rs`: in-flight limits.

pub(crate) mod concurrency;
pub(crate) mod key;
pub(crate) mod layer;
pub(crate) mod limits;
pub(crate) mod local;
pub(crate) mod policy;
pub(crate) mod redis;
pub(crate) mod services;

pub(crate) use concurrency::{ConcurrencyLayer, ConcurrencyLimit, ConcurrencyPolicy};
pub(crate) use layer::{RateLimit, RateLimitLayer};
pub(crate) use policy::{RateLimitPolicy, RateLimiting};
pub(crate) use services::RateLimitServices;
