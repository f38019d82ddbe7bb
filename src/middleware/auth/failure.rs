//! Why a request was not authenticated or not authorised: the precise reason, for the access
//! log and the metrics, and what the caller is told, which is deliberately less.
//!
//! On the request path, on refusals only: the auth layer fails with
//! [`GatewayError::Unauthenticated`](crate::error::GatewayError) (401) carrying an
//! [`AuthRefusal`], or with `InsufficientScope` / `AccessDenied` (403) or `AuthUnavailable`
//! (503); `error.rs` renders them with RFC 6750's `WWW-Authenticate` challenge. A caller
//! learns that a token expired (so that it fetches a new one) and otherwise only that its
//! credential is not valid: which check failed — signature, issuer, audience, unknown key —
//! is for the operator, in the access log's `auth` field and in `portico_auth_total`.

use http::HeaderValue;

/// The outcome of authenticating one request, as labelled in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AuthOutcome {
    /// Authenticated and authorised.
    Ok,
    /// No credential where the route's providers look for one.
    Missing,
    /// A credential larger than any the gateway accepts, refused before parsing.
    Oversized,
    /// Not a well-formed credential (a token that is not three base64url parts of JSON…).
    Malformed,
    /// An API key or client credential no enabled consumer has (unknown and disabled alike).
    UnknownCredential,
    /// The token's `exp` has passed (beyond the leeway).
    Expired,
    /// The token's `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` missing or not the provider's issuer.
    Issuer,
    /// `aud` missing or naming none of the provider's audiences.
    Audience,
    /// A claim the provider requires is missing or has the wrong type.
    MissingClaim,
    /// The signature does not verify.
    BadSignature,
    /// An algorithm the provider does not allow (`none`, HMAC without a secret, or an
    /// algorithm the key was not published for).
    Algorithm,
    /// No key with the token's `kid`, even after refreshing the key set.
    KidNotFound,
    /// A `crit` header parameter the gateway does not understand.
    UnsupportedCritical,
    /// The introspection endpoint says the token is not active.
    Inactive,
    /// The token names a consumer that is unknown or disabled where one is required.
    UnknownConsumer,
    /// Authenticated, but without the scopes the route requires.
    InsufficientScope,
    /// Authenticated, but a claim or the consumer is not one the route allows.
    Denied,
    /// The identity provider could not be asked (introspection down, no keys ever fetched).
    ProviderUnavailable,
    /// The route requires a verified client certificate and the connection has none.
    NoClientCertificate,
}

impl AuthOutcome {
    /// Every outcome, in the order the metrics list them.
    pub(crate) const ALL: [AuthOutcome; 20] = [
        AuthOutcome::Ok,
        AuthOutcome::Missing,
        AuthOutcome::Oversized,
        AuthOutcome::Malformed,
        AuthOutcome::UnknownCredential,
        AuthOutcome::Expired,
        AuthOutcome::NotYetValid,
        AuthOutcome::Issuer,
        AuthOutcome::Audience,
        AuthOutcome::MissingClaim,
        AuthOutcome::BadSignature,
        AuthOutcome::Algorithm,
        AuthOutcome::KidNotFound,
        AuthOutcome::UnsupportedCritical,
        AuthOutcome::Inactive,
        AuthOutcome::UnknownConsumer,
        AuthOutcome::InsufficientScope,
        AuthOutcome::Denied,
        AuthOutcome::ProviderUnavailable,
        AuthOutcome::NoClientCertificate,
    ];

    /// The label in the access log (`auth`) and in `portico_auth_total{outcome}`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            AuthOutcome::Ok => "ok",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Oversized => "oversized",
            AuthOutcome::Malformed => "malformed",
            AuthOutcome::UnknownCredential => "unknown_credential",
            AuthOutcome::Expired => "expired",
            AuthOutcome::NotYetValid => "not_yet_valid",
            AuthOutcome::Issuer => "issuer",
            AuthOutcome::Audience => "audience",
            AuthOutcome::MissingClaim => "missing_claim",
            AuthOutcome::BadSignature => "bad_signature",
            AuthOutcome::Algorithm => "algorithm",
            AuthOutcome::KidNotFound => "kid_not_found",
            AuthOutcome::UnsupportedCritical => "unsupported_crit",
            AuthOutcome::Inactive => "inactive",
            AuthOutcome::UnknownConsumer => "unknown_consumer",
            AuthOutcome::InsufficientScope => "insufficient_scope",
            AuthOutcome::Denied => "denied",
            AuthOutcome::ProviderUnavailable => "provider_unavailable",
            AuthOutcome::NoClientCertificate => "no_client_certificate",
        }
    }

    fn index(self) -> usize {
        AuthOutcome::ALL
            .iter()
            .position(|outcome| *outcome == self)
            .unwrap_or(0)
    }
}

/// The kind of credential a refused request was (or should have been) presenting: it picks
/// the challenge scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// A token: RFC 6750's `Bearer`.
    Bearer,
    /// An API key, and where the route looks for it (`header="x-api-key"`).
    ApiKey { place: &'static str, name: Box<str> },
}

/// A 401: why, and the challenges to answer with.
#[derive(Debug, Clone)]
pub(crate) struct AuthRefusal {
    pub(crate) outcome: AuthOutcome,
    /// One per kind of credential the route takes (a missing credential), or the one that
    /// was presented and refused.
    pub(crate) schemes: Vec<Scheme>,
}

impl AuthRefusal {
    /// What the caller is told.
    pub(crate) fn message(&self) -> &'static str {
        let token = self.schemes.first() == Some(&Scheme::Bearer);
        match self.outcome {
            AuthOutcome::Missing => "this route requires credentials",
            AuthOutcome::Expired => "the access token has expired",
            AuthOutcome::Oversized => "the credential is too large",
            AuthOutcome::NoClientCertificate => "this route requires a client certificate",
            _ if token => "the access token is not valid",
            _ => "the API key is not valid",
        }
    }

    /// The `WWW-Authenticate` values (RFC 6750 §3; an API key's challenge has the same
    /// shape). A missing credential gets the bare scheme: §3.1 says a request that had none
    /// should get no error code.
    pub(crate) fn challenges(&self) -> Vec<HeaderValue> {
        let mut out = Vec::with_capacity(self.schemes.len());
        for scheme in &self.schemes {
            let mut text = match scheme {
                Scheme::Bearer => String::from("Bearer"),
                Scheme::ApiKey { place, name } => format!("ApiKey {place}=\"{name}\""),
            };
            if self.outcome != AuthOutcome::Missing {
                let (error, separator) = match scheme {
                    Scheme::Bearer => ("invalid_token", " "),
                    Scheme::ApiKey { .. } => ("invalid_key", ", "),
                };
                text.push_str(separator);
                text.push_str(&format!(
                    "error=\"{error}\", error_description=\"{}\"",
                    self.message()
                ));
            }
            if let Ok(value) = HeaderValue::from_str(&text) {
                out.push(value);
            }
        }
        out
    }
}

/// `portico_auth_total{route, outcome}` for one route: a counter per outcome, made when the
/// route's stack is built.
pub(crate) struct AuthCounters {
    counters: Vec<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl AuthCounters {
    pub(crate) fn new(metrics: &crate::metrics::Metrics, route: &str) -> AuthCounters {
        AuthCounters {
            counters: AuthOutcome::ALL
                .iter()
                .map(|outcome| {
                    metrics.counter(
                        &crate::metrics::AUTH_OUTCOMES,
                        &[("route", route), ("outcome", outcome.label())],
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn count(&self, outcome: AuthOutcome) {
        if let Some(counter) = self.counters.get(outcome.index()) {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = AuthOutcome::ALL.iter().map(|o| o.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AuthOutcome::ALL.len());
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = AuthRefusal {
            outcome: AuthOutcome::Missing,
            schemes: vec![
                Scheme::Bearer,
                Scheme::ApiKey {
                    place: "header",
                    name: "x-api-key".into(),
                },
            ],
        };
        assert_eq!(
            missing.challenges(),
            vec!["Bearer", "ApiKey header=\"x-api-key\""]
        );
        let expired = AuthRefusal {
            outcome: AuthOutcome::Expired,
            schemes: vec![Scheme::Bearer],
        };
        assert_eq!(
            expired.challenges(),
            vec![
                "Bearer error=\"invalid_token\", error_description=\"the access token has expired\""
            ]
        );
        // Which check failed is not the caller's business.
        let forged = AuthRefusal {
            outcome: AuthOutcome::BadSignature,
            schemes: vec![Scheme::Bearer],
        };
        assert_eq!(forged.message(), "the access token is not valid");
    }
}
