//! Route matching: from a request's host, path, method, headers and query to the index of the
//! route that serves it. Pure functions over immutable data: no I/O, no tower, no async.
//!
//! Where it sits on the request path (see `gateway.rs`): after the request id and the access
//! log / metrics layers, before the selected route's prebuilt middleware stack. The gateway
//! first normalises the path with [`normalize_path`] (answering 400 on [`PathError`]); the
//! normalised path is the one matched *and* the one forwarded, so a backend never sees a path
//! that resolves outside the route it was matched against. It then asks [`Router::find`]:
//! `Matched(i)` runs route `i`'s stack, `MethodNotAllowed` becomes a 405 with an `Allow`
//! header, `NotFound` a 404.
//!
//! A [`Router`] is built once per configuration from the validated routes and never mutated:
//! on every reload the caller builds a new one alongside the new route stacks and swaps the
//! whole runtime atomically, so a lookup never sees a half-updated table. Matching does not
//! allocate; see `router.rs` for the index and the precedence rules.
//!
//! - `normalize.rs`: request-path canonicalisation (dot segments, escapes, traversal tricks);
//! - `template.rs`: `google.api.http`-style path templates, shared with gRPC transcoding;
//! - `router.rs`: the indexed route table, `find` for the hot path and `explain` for the CLI.

mod normalize;
mod router;
mod template;

pub(crate) use normalize::{normalize_path, PathError};
pub(crate) use router::{Lookup, Outcome, RequestView, Router};
pub(crate) use template::{Element, PathTemplate};
