//! End-to-end tests: the real gateway on 127.0.0.1:0 in front of real backends, driven by
//! a real HTTP client. One test binary (faster to build and link than one per file).

// A test harness: its helpers are shared between its modules, and a failed test is meant to
// panic.
#![allow(unreachable_pub, clippy::unwrap_used)]

mod common;

mod admission;
mod auth_jwt;
mod auth_keys;
mod auth_oauth2;
mod balancing;
mod breaker;
mod canary;
mod cli;
mod compression;
mod cors;
mod demo;
mod discovery;
mod explain_edge;
mod fault;
mod fuzz;
mod grpc_native;
mod grpc_openapi;
mod grpc_peers;
mod grpc_refusals;
mod grpc_streaming;
mod grpc_transcode;
mod grpc_witnesses;
mod headers;
mod hostile_connections;
mod hostile_requests;
mod ip_rules;
mod lifecycle;
mod limits;
mod parking;
mod protocols;
mod rate_limit;
mod rate_limit_redis;
mod reload;
mod resilience;
mod rewrites;
mod routing;
mod seam;
mod streaming;
mod tls;
mod tls_ciphers;
mod upstream_errors;
