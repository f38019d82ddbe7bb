//! End-to-end tests: the real gateway on 127.0.0.1:0 in front of real backends, driven by
//! a real HTTP client. One test binary (faster to build and link than one per file).

// A test harness: its helpers are shared between its modules, and a failed test is meant to
// panic.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod common;

mod admission;
mod cli;
mod demo;
mod fuzz;
mod grpc_native;
mod grpc_openapi;
mod grpc_peers;
mod grpc_streaming;
mod grpc_transcode;
mod headers;
mod hostile_connections;
mod hostile_requests;
mod lifecycle;
mod limits;
mod protocols;
mod reload;
mod routing;
mod seam;
mod streaming;
mod tls;
mod upstream_errors;
