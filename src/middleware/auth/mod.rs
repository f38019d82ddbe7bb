//! Authentication and authorisation: who may call a route, and what the upstream is told
//! about them.
//!
//! On the request path, the auth layer (`layer.rs`) sits in each route's stack after the
//! body limit (a refused body is refused before any credential is looked at) and before the
//! rate limits and transforms, so that nothing the route does for a caller happens before the
//! caller is known — and, since WebSocket and other upgrade requests go through the same
//! stack, an upgrade is no way around it. Deny by default: a route that declares a
//! requirement forwards only requests that meet it.
//!
//! The parts:
//! - `consumers.rs`: the third-party apps (`consumers` section or file) and their
//!   credentials, stored as digests;
//! - `providers.rs`: the identity providers (`auth_providers` section) and what they become
//!   in a runtime;
//! - `jwt.rs`, `jwks.rs`: JWT verification, and the key sets it verifies with;
//! - `introspection.rs`: opaque tokens an IdP vouches for (RFC 7662);
//! - `token_cache.rs`: credentials already verified;
//! - `oauth2.rs`, `signing.rs`: the gateway's own token endpoint and its key ring;
//! - `credentials.rs`: where a credential travels in a request;
//! - `policy.rs`: a route's `auth` key, checked;
//! - `identity.rs`: the authenticated caller, and the headers that tell the upstream;
//! - `failure.rs`: outcomes, and what a refused caller is told (RFC 6750).

pub(crate) mod consumers;
pub(crate) mod credentials;
pub(crate) mod failure;
pub(crate) mod identity;
pub(crate) mod introspection;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod layer;
pub(crate) mod oauth2;
pub(crate) mod policy;
pub(crate) mod providers;
pub(crate) mod signing;
pub(crate) mod token_cache;

pub(crate) use layer::{Auth, AuthLayer};
pub(crate) use policy::AuthPolicy;
