//! Portico: an API gateway and edge reverse proxy for open platforms.
//!
//! # Request path
//! ```text
//! TCP accept (server/)                      per-listener connection limit
//!  └ TLS handshake (server/tls.rs)           TLS listeners: SNI cert, ALPN, mTLS, timeout
//!  └ connection guard (server/conn_guard.rs) header-read + idle budgets, parser errors as JSON
//!     └ hyper: HTTP/1.1, HTTP/2, h2c        head size / header count limits
//!        └ gateway::handle (gateway.rs)      request id, admission + routing, forwarding
//!           │                                headers, request context, completion
//!           └ route stack (stack.rs)         CORS → response headers → compression →
//!              │                             rescue → IP rules → body limit → auth → rate
//!              │                             limit → concurrency limit → direct answers →
//!              │                             faults → request transforms → timeout →
//!              │                             request decompression → gRPC → mirror
//!              └ upstream (upstream/)        the route's retries, circuit breaker,
//!                                            balancer pick among usable
//!                                            endpoints + failover, pooled connection, TLS,
//!                                            tunnel for upgrades; health checks and outlier
//!                                            detection keep the endpoints' state
//! ```
//!
//! # The seam policies plug into
//! - **One stack per route**, built when a config loads, one concrete type for all routes
//!   (`stack.rs`): a policy a route does not use is a layer switched off.
//! - **Every answer flows back through the stack.** Layers fail with typed errors; the rescue
//!   layer (`middleware/rescue.rs`) renders them through the one table in `error.rs` — JSON, or
//!   `grpc-status` for gRPC callers — just inside the route's response decorators, so those
//!   decorate errors too.
//! - **A request context** (`context.rs`: connection, TLS facts, request id, route, caller
//!   kind) is in every request's extensions before its stack runs.
//! - **A concern owns its config**: its route keys, their checks, its typed config, what
//!   `explain` says and its layer, in its own module (`middleware/`); `concerns.rs` lists the
//!   concerns once.
//! - **State that outlives a config** (open upstream connections, the access log writer) is
//!   carried from one runtime to the next by `resources.rs`; reloads build on a background
//!   thread (`lifecycle.rs`), never on an async worker.
//!
//! # Module map
//! - [`config`]: the YAML file → positions → structure → validation → typed [`Config`];
//!   `concerns`: the list of concerns.
//! - `admission`, `forwarding`, `request_id`, `context`, `completion`: the steps of
//!   `gateway::handle`; `stack`, `middleware/`: the route stack.
//! - `routing/`: pure matching and path normalisation; no I/O.
//! - `upstream/`: clusters, balancing, connection pools, upstream TLS, upgrade tunnels.
//! - `grpc/`: descriptors compiled from `.proto` files, HTTP/JSON → gRPC transcoding,
//!   gRPC-Web, OpenAPI — the route stack's innermost layer on gRPC routes.
//! - `server/`: listeners, TLS termination and certificate reload, connection guard, drain;
//!   `admin/`: the admin listener; `reload`, `runtime`, `resources`, `lifecycle`: runtimes
//!   and their replacement.
//! - [`pki`]: PEM files, the crypto provider, the few X.509 facts read from certificates;
//!   [`dev_certs`]: `portico certs`.
//! - `metrics`, `access_log`: observability; `body`: the streaming body types.
//! - [`demo`], [`explain`], [`keys`]: the `portico demo` backends, `portico explain` and
//!   `portico keys`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod access_log;
mod admin;
mod admission;
mod body;
mod chance;
mod client_ip;
mod completion;
mod concerns;
pub mod config;
mod context;
pub mod demo;
pub mod dev_certs;
mod error;
pub mod explain;
mod forwarding;
mod gateway;
mod grpc;
pub mod keys;
mod lifecycle;
mod metrics;
mod middleware;
mod outbound;
pub mod pki;
mod reload;
mod request_id;
mod resources;
mod routing;
mod runtime;
mod server;
mod stack;
mod upstream;

pub use config::{Config, ConfigError, Problem};
pub use reload::{ReloadError, ReloadHandle, ReloadStatus};
pub use server::tls::{CertReloadStatus, CertificateReloader, TlsLoadError};
pub use server::{Gateway, StartError};

/// Raise the soft open-files limit to the hard limit: every client and upstream connection
/// is a file descriptor, and the usual soft default of 1024 is far below what a gateway
/// needs. Returns the limit in effect.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}
