//! Portico: an API gateway and edge reverse proxy for open platforms.
//!
//! # Request path
//! ```text
//! TCP accept (server/)                 per-listener connection limit
//!  └ TLS handshake (server/tls.rs)      TLS listeners: SNI cert, ALPN, mTLS, timeout
//!  └ connection guard (server/conn_guard.rs)   header-read + idle budgets, parser errors as JSON
//!     └ hyper: HTTP/1.1, HTTP/2, h2c   head size / header count limits
//!        └ gateway::handle (gateway.rs)        request id, admission, routing, forwarding headers
//!           └ route stack (middleware/)        body limit → transforms → timeout
//!              └ upstream (upstream/)          endpoint pick, pooled connection (TLS in
//!                                              upstream/tls.rs), tunnel for upgrades
//! ```
//! Everything the gateway answers itself is a typed [`error::GatewayError`], classified in
//! one table into a status and a JSON body.
//!
//! # Module map
//! - [`config`]: the YAML file (`file`), validation with positions, the typed model, reload.
//! - [`routing`]: pure matching and path normalisation; no I/O.
//! - [`gateway`]: the request path and the runtime built from a config.
//! - [`middleware`]: per-route tower layers and the route stack.
//! - [`upstream`]: clusters, connection pools, upgrade tunnels.
//! - [`server`]: listeners, TLS termination and certificate reload, connections, drain;
//!   [`admin`]: the admin listener.
//! - [`pki`]: PEM files, the crypto provider, the few X.509 facts read from certificates;
//!   [`dev_certs`]: `portico certs`.
//! - [`metrics`], [`access_log`]: observability; [`body`]: the streaming body types.
//! - [`demo`], [`explain`]: the `portico demo` backends and `portico explain`.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod config;
pub mod demo;
pub mod dev_certs;
pub mod error;
pub mod explain;
pub mod gateway;
pub mod metrics;
pub mod middleware;
pub mod pki;
pub mod routing;
pub mod server;
pub mod upstream;

pub use server::{Gateway, StartError};

/// Raise the soft open-files limit to the hard limit: every client and upstream connection
/// is a file descriptor, and the usual soft default of 1024 is far below what a gateway
/// needs.
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
