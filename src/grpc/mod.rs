//! gRPC at the edge: HTTP/JSON → gRPC transcoding from `.proto` files compiled at run time,
//! gRPC-Web for browsers, native gRPC passed through, and OpenAPI documents of it all.
//!
//! Where it sits: a cluster's `grpc` section names its descriptors (`descriptors.rs`, checked
//! and compiled while the config loads, off the async workers); a route's `grpc_transcode` /
//! `grpc_web` keys (`policy.rs`) switch on its gRPC layer (`transcode.rs`), the innermost
//! layer of the route's stack, just before the upstream:
//!
//! ```text
//! … → timeout → grpc layer ─┬─ application/grpc…      → passed through (trailers intact)
//!                           ├─ application/grpc-web…  → web.rs: gRPC-Web ⇄ gRPC
//!                           └─ anything else          → http_rule.rs: method + template → binding
//!                                                       request.rs: path, query, body → message
//!                                                       (stream.rs for client streams)
//!                                                       → upstream (HTTP/2) →
//!                                                       response.rs: message(s) → JSON,
//!                                                       status.rs: grpc-status → HTTP + JSON
//! ```
//! `framing.rs` reads and writes gRPC's length-prefixed messages; `metadata.rs` maps headers
//! to metadata and back; `openapi.rs` describes the bindings as OpenAPI 3.1.

pub(crate) mod descriptors;
mod framing;
pub(crate) mod http_rule;
mod metadata;
pub(crate) mod openapi;
pub(crate) mod policy;
pub(crate) mod request;
mod response;
pub(crate) mod status;
pub(crate) mod stream;
pub(crate) mod transcode;
mod web;

pub(crate) use descriptors::{GrpcApi, GrpcClusterFile};
pub(crate) use policy::GrpcPolicy;
pub(crate) use transcode::{Grpc, GrpcLayer};
