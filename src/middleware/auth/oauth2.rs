//! The gateway's own OAuth2 authorization server, for third-party apps: the client
//! credentials grant (RFC 6749 §4.4) at `POST /oauth2/token`, the key set at
//! `GET /.well-known/jwks.json`, and a minimal `GET /.well-known/openid-configuration`.
//!
//! On the request path for those three paths only, which admission matches before the
//! routes (`admission.rs`, `Admitted::Local`) on the provider's listeners. A consumer
//! authenticates with its OAuth2 client id and secret — `client_secret_basic` or
//! `client_secret_post` — and gets a short-lived JWT signed with the ring's current key
//! (`signing.rs`), with `sub` and `client_id` naming the consumer and `scope` its grant (or
//! the part of it the request asked for). The same provider verifies those tokens on routes,
//! resolving `client_id` to the consumer, so the consumer's plan and grant apply and
//! disabling it revokes its tokens at once.
//!
//! Errors are RFC 6749 §5.2 JSON (`invalid_request`, `invalid_client`, `invalid_grant`,
//! `unsupported_grant_type`, `invalid_scope`). Brute force is slowed: after
//! `max_failed_attempts` failures for one client id, or from one client address, within
//! `lockout`, further attempts are refused with 429 `slow_down` and `Retry-After` until the
//! window ends — without checking the secret, so the answer says nothing about it.

use super::consumers::{ClientLookup, ConsumerStore};
use super::credentials::percent_decode;
use super::credentials::CredentialSource;
use super::jwt::{JwtConfig, JwtKeys};
use super::signing::{RingSettings, SigningAlgorithm, SigningKeys};
use super::token_cache::unix_now;
use crate::body::Body;
use crate::config::check::Checker;
use crate::config::source::KeyPath;
use crate::metrics::{Metrics, TOKEN_REQUESTS};
use crate::outbound::parse_url;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The largest token request body read.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Clients and addresses tracked for failed attempts, each.
const MAX_TRACKED: usize = 100_000;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The paths the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OAuth2Path {
    Token,
    Jwks,
    Discovery,
}

/// `auth_providers[].oauth2_server`, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OAuth2ServerConfig {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) token_path: String,
    /// Listeners that serve the endpoints; empty: all.
    pub(crate) listeners: Vec<String>,
    pub(crate) ring: RingSettings,
    pub(crate) max_failed_attempts: u32,
    pub(crate) lockout: Duration,
    /// How the provider verifies the tokens it issues.
    pub(crate) verify: JwtConfig,
}

impl OAuth2ServerConfig {
    pub(crate) fn describe(&self) -> String {
        format!(
            "tokens this gateway issues at {} (client credentials), issuer {}",
            self.token_path, self.issuer
        )
    }

    /// Which of the server's paths `path` is.
    pub(crate) fn path(&self, path: &str) -> Option<OAuth2Path> {
        match path {
            "/.well-known/jwks.json" => Some(OAuth2Path::Jwks),
            "/.well-known/openid-configuration" => Some(OAuth2Path::Discovery),
            _ if path == self.token_path => Some(OAuth2Path::Token),
            _ => None,
        }
    }
}

/// `oauth2_server:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OAuth2ServerFile {
    issuer: Option<String>,
    audience: Option<String>,
    token_path: Option<String>,
    listeners: Option<Vec<String>>,
    algorithm: Option<String>,
    signing_keys: Option<String>,
    token_lifetime: Option<String>,
    rotate_every: Option<String>,
    publish_ahead: Option<String>,
    max_failed_attempts: Option<u32>,
    lockout: Option<String>,
}

/// Check `oauth2_server:` at `path`.
pub(crate) fn check_oauth2_server(
    file: &OAuth2ServerFile,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<OAuth2ServerConfig> {
    let mut ok = true;
    let issuer = match file.issuer.as_deref().map(parse_url) {
        Some(Ok(_)) => file.issuer.clone().unwrap_or_default(),
        Some(Err(message)) => {
            checker.report(&path.key("issuer"), message);
            ok = false;
            String::new()
        }
        None => {
            checker.report(
                &path.key("issuer"),
                "required: the gateway's public base URL (https://api.example.com), the `iss` of \
                 its tokens",
            );
            ok = false;
            String::new()
        }
    };
    let issuer = issuer.trim_end_matches('/').to_string();
    let audience = file.audience.clone().unwrap_or_else(|| issuer.clone());
    let token_path = file
        .token_path
        .clone()
        .unwrap_or_else(|| String::from("/oauth2/token"));
    if !token_path.starts_with('/')
        || token_path.contains(['?', '#', ' '])
        || token_path.starts_with("/.well-known/")
    {
        checker.report(
            &path.key("token_path"),
            format!("{token_path:?} must be a path like /oauth2/token"),
        );
        ok = false;
    }
    let algorithm = match file.algorithm.as_deref() {
        None => Some(SigningAlgorithm::Es256),
        Some(text) => {
            let parsed = SigningAlgorithm::parse(text);
            if parsed.is_none() {
                checker.report(
                    &path.key("algorithm"),
                    format!("{text:?}: expected ES256 or EdDSA"),
                );
            }
            parsed
        }
    };
    let dir = match file.signing_keys.as_deref() {
        Some(text) if !text.is_empty() => Some(checker.file_path(text)),
        _ => {
            checker.report(
                &path.key("signing_keys"),
                "required: a directory for the signing keys (made, with a first key, if missing)",
            );
            None
        }
    };
    let lifetime = checker.duration(
        &path.key("token_lifetime"),
        file.token_lifetime.as_deref(),
        DEFAULT_TOKEN_LIFETIME,
        false,
    );
    if lifetime.is_some_and(|lifetime| lifetime > MAX_TOKEN_LIFETIME) {
        checker.report(
            &path.key("token_lifetime"),
            "at most 24h: access tokens are short-lived",
        );
        ok = false;
    }
    let rotate_every = checker.duration(
        &path.key("rotate_every"),
        file.rotate_every.as_deref(),
        Duration::from_secs(30 * 24 * 3600),
        true,
    );
    let publish_ahead = checker.duration(
        &path.key("publish_ahead"),
        file.publish_ahead.as_deref(),
        Duration::from_secs(3600),
        true,
    );
    let lockout = checker.duration(
        &path.key("lockout"),
        file.lockout.as_deref(),
        Duration::from_secs(60),
        false,
    );
    let max_failed_attempts = checker.count(
        &path.key("max_failed_attempts"),
        file.max_failed_attempts,
        5,
        (1, 1000),
    );
    for (index, listener) in file.listeners.iter().flatten().enumerate() {
        ok &= checker
            .listener_name(&path.key("listeners").index(index), listener)
            .is_some();
    }
    let (
        Some(algorithm),
        Some(dir),
        Some(lifetime),
        Some(rotate_every),
        Some(publish_ahead),
        Some(lockout),
        Some(max_failed_attempts),
    ) = (
        algorithm,
        dir,
        lifetime,
        rotate_every,
        publish_ahead,
        lockout,
        max_failed_attempts,
    )
    else {
        return None;
    };
    let ring = RingSettings {
        dir,
        algorithm,
        token_lifetime: lifetime,
        rotate_every: (!rotate_every.is_zero()).then_some(rotate_every),
        publish_ahead,
    };
    let verify = JwtConfig {
        issuer: issuer.clone(),
        audiences: vec![audience.clone()],
        // The ring may hold keys of either algorithm (one can be added by hand); each key is
        // used only with its own.
        algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
        keys: JwtKeys::Gateway(ring.clone()),
        leeway: Duration::from_secs(30),
        required_claims: vec![String::from("client_id")],
        token_from: vec![CredentialSource::bearer()],
        consumer_claims: vec![String::from("client_id")],
        // A token names its consumer; disabling the consumer revokes its tokens.
        require_consumer: true,
        max_token_bytes: 8 * 1024,
        cache_entries: 10_000,
    };
    ok.then_some(OAuth2ServerConfig {
        issuer,
        audience,
        token_path,
        listeners: file.listeners.clone().unwrap_or_default(),
        ring,
        max_failed_attempts,
        lockout,
        verify,
    })
}

/// Failed attempts per key (a client id, a client address), in fixed windows.
struct FailedAttempts {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
}

impl FailedAttempts {
    /// How long `key` is locked out for, if it is.
    fn locked(&self, key: &str) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, started) = entries.get(key)?;
        let ends = *started + self.window;
        let now = tokio::time::Instant::now();
        (*count >= self.max && ends > now).then(|| ends - now)
    }

    fn failed(&self, key: &str) {
        let now = tokio::time::Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_TRACKED && !entries.contains_key(key) {
            entries.retain(|_, (_, started)| *started + self.window > now);
            if entries.len() >= MAX_TRACKED {
                // Full of live entries (a flood of distinct keys): the per-address count
                // still applies to this caller.
                return;
            }
        }
        let entry = entries.entry(key.to_string()).or_insert((0, now));
        if entry.1 + self.window <= now {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    fn succeeded(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The token endpoint of one runtime.
pub(crate) struct TokenEndpoint {
    config: OAuth2ServerConfig,
    keys: Arc<SigningKeys>,
    consumers: Arc<ConsumerStore>,
    failed_clients: FailedAttempts,
    failed_addresses: FailedAttempts,
    issued: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    slowed: Arc<AtomicU64>,
}

/// An RFC 6749 §5.2 error.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }
}

impl TokenEndpoint {
    pub(crate) fn new(
        config: &OAuth2ServerConfig,
        keys: Arc<SigningKeys>,
        consumers: Arc<ConsumerStore>,
        metrics: &Metrics,
    ) -> TokenEndpoint {
        let counter = |outcome: &str| metrics.counter(&TOKEN_REQUESTS, &[("outcome", outcome)]);
        let attempts = || FailedAttempts {
            max: config.max_failed_attempts,
            window: config.lockout,
            entries: Mutex::new(HashMap::new()),
        };
        TokenEndpoint {
            config: config.clone(),
            keys,
            consumers,
            failed_clients: attempts(),
            failed_addresses: attempts(),
            issued: counter("issued"),
            refused: counter("refused"),
            slowed: counter("slowed"),
        }
    }

    /// Whether this listener serves the endpoints.
    pub(crate) fn on_listener(&self, listener: &str) -> bool {
        self.config.listeners.is_empty() || self.config.listeners.iter().any(|l| l == listener)
    }

    pub(crate) fn path(&self, path: &str) -> Option<OAuth2Path> {
        self.config.path(path)
    }

    /// Answer a request to one of the server's paths.
    pub(crate) async fn serve(
        &self,
        which: OAuth2Path,
        req: Request<Body>,
        client: IpAddr,
    ) -> Response<Body> {
        let method = req.method().clone();
        let allowed = match which {
            OAuth2Path::Token => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        };
        if !allowed {
            let allow = if which == OAuth2Path::Token {
                "POST"
            } else {
                "GET, HEAD"
            };
            let mut response = oauth_error(&OAuthError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                format!("use {allow}"),
            ));
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            return response;
        }
        match which {
            OAuth2Path::Jwks => {
                let mut response = json_response(StatusCode::OK, self.keys.current().jwks.clone());
                // Verifiers may cache the key set for a while; new keys are published an
                // hour (publish_ahead) before they sign.
                let max_age = self.config.ring.publish_ahead.as_secs().min(3600) / 2;
                if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
                    response.headers_mut().insert(CACHE_CONTROL, value);
                }
                response
            }
            OAuth2Path::Discovery => {
                let issuer = &self.config.issuer;
                let document = json!({
                    "issuer": issuer,
                    "token_endpoint": format!("{issuer}{}", self.config.token_path),
                    "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "response_types_supported": ["token"],
                    "token_endpoint_auth_signing_alg_values_supported": [format!("{:?}", self.config.ring.algorithm.jwt())],
                });
                json_response(StatusCode::OK, Bytes::from(document.to_string()))
            }
            OAuth2Path::Token => match self.token(req, client).await {
                Ok(body) => {
                    self.issued.fetch_add(1, Ordering::Relaxed);
                    let mut response = json_response(StatusCode::OK, body);
                    no_store(&mut response);
                    response
                }
                Err((error, retry_after)) => {
                    let counter = if retry_after.is_some() {
                        &self.slowed
                    } else {
                        &self.refused
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(error = error.error, reason = %error.description, "token request refused");
                    let mut response = oauth_error(&error);
                    if let Some(wait) = retry_after {
                        let seconds = wait.as_secs().max(1).to_string();
                        if let Ok(value) = HeaderValue::from_str(&seconds) {
                            response.headers_mut().insert(RETRY_AFTER, value);
                        }
                    }
                    response
                }
            },
        }
    }

    /// The client credentials grant.
    async fn token(
        &self,
        req: Request<Body>,
        client: IpAddr,
    ) -> Result<Bytes, (OAuthError, Option<Duration>)> {
        let refuse = |status, error, description: &str| {
            Err((OAuthError::new(status, error, description), None))
        };
        let form_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form_type {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
        let basic = match req.headers().get(AUTHORIZATION) {
            None => None,
            Some(value) => match basic_credentials(value) {
                Some(pair) => Some(pair),
                None => {
                    return refuse(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "malformed Basic credentials",
                    )
                }
            },
        };
        let body = match http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request body is too large or incomplete",
                )
            }
        };
        let Some(form) = parse_form(&body) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body is not a valid form, or repeats a parameter",
            );
        };
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            Some(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                )
            }
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type is required",
                )
            }
        }
        let posted = (form.get("client_id"), form.get("client_secret"));
        let (client_id, secret) = match (basic, posted) {
            (Some(_), (_, Some(_))) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method, not two",
                )
            }
            (Some((id, secret)), _) => (id, secret),
            (None, (Some(id), Some(secret))) => (id.clone(), secret.clone()),
            (None, _) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication is required",
                )
            }
        };
        let address = client.to_string();
        for (tracker, key) in [
            (&self.failed_clients, client_id.as_str()),
            (&self.failed_addresses, address.as_str()),
        ] {
            if let Some(wait) = tracker.locked(key) {
                let error = OAuthError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "slow_down",
                    "too many failed attempts; try again later",
                );
                return Err((error, Some(wait)));
            }
        }
        let directory = self.consumers.current();
        let consumer = match directory.lookup_client(&client_id) {
            ClientLookup::Enabled(consumer) => Some(consumer.clone()),
            _ => None,
        };
        // The secret is hashed and compared whether or not the client exists, so that the
        // time taken does not tell one from the other.
        let expected = consumer.as_ref().and_then(|c| c.client_secret);
        let matches = match expected {
            Some(digest) => digest.matches(secret.as_bytes()),
            None => {
                let _ = super::consumers::Digest::of(secret.as_bytes());
                false
            }
        };
        let Some(consumer) = consumer.filter(|_| matches) else {
            self.failed_clients.failed(&client_id);
            self.failed_addresses.failed(&address);
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client or wrong secret",
            );
        };
        self.failed_clients.succeeded(&client_id);
        let scopes: Vec<&str> = match form.get("scope") {
            None => consumer.scopes.iter().map(|s| &**s).collect(),
            Some(requested) => {
                let requested: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
                if let Some(extra) = requested
                    .iter()
                    .find(|s| !consumer.scopes.iter().any(|g| &**g == **s))
                {
                    let description = format!("the scope {extra} is not granted to this client");
                    return Err((
                        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", description),
                        None,
                    ));
                }
                requested
            }
        };
        let now = unix_now();
        let lifetime = self.config.ring.token_lifetime.as_secs();
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti).map_err(
            |_| {
                (
                    OAuthError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "no random source",
                    ),
                    None,
                )
            },
        )?;
        let scope = scopes.join(" ");
        let claims = json!({
            "iss": self.config.issuer,
            "aud": self.config.audience,
            "sub": &*consumer.id,
            "client_id": consumer.client_id.as_deref().unwrap_or(&consumer.id),
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        });
        let Some(token) = self.keys.current().sign(&claims) else {
            return Err((
                OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "no signing key",
                ),
                None,
            ));
        };
        let mut body = json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
        });
        if !scope.is_empty() {
            body["scope"] = Value::from(scope);
        }
        Ok(Bytes::from(body.to_string()))
    }
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((
        percent_decode(id)?.into_owned(),
        percent_decode(secret)?.into_owned(),
    ))
}

/// An `application/x-www-form-urlencoded` body; `None` if it is not one, or repeats a
/// parameter (RFC 6749 §3.2: parameters must not be included more than once).
fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut form = HashMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?.into_owned();
        let value = percent_decode(value)?.into_owned();
        if form.insert(name, value).is_some() {
            return None;
        }
    }
    Some(form)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn no_store(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

fn oauth_error(error: &OAuthError) -> Response<Body> {
    let body = json!({"error": error.error, "error_description": error.description});
    let mut response = json_response(error.status, Bytes::from(body.to_string()));
    no_store(&mut response);
    if error.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oauth2\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_basic_credentials_are_decoded_as_rfc_6749_says() {
        let form = parse_form(b"grant_type=client_credentials&scope=a+b%3Ac").unwrap();
        assert_eq!(form["scope"], "a b:c");
        assert!(
            parse_form(b"scope=a&scope=b").is_none(),
            "repeated parameter"
        );
        let value = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%3Aclient:s%26cret")
        ))
        .unwrap();
        assert_eq!(
            basic_credentials(&value),
            Some(("my:client".to_string(), "s&cret".to_string()))
        );
        assert!(basic_credentials(&HeaderValue::from_static("Bearer x")).is_none());
    }

    #[tokio::test]
    async fn failed_attempts_lock_a_key_out_for_the_window() {
        let attempts = FailedAttempts {
            max: 2,
            window: Duration::from_secs(60),
            entries: Mutex::new(HashMap::new()),
        };
        attempts.failed("c");
        assert!(attempts.locked("c").is_none());
        attempts.failed("c");
        assert!(attempts.locked("c").is_some());
        assert!(attempts.locked("d").is_none());
        attempts.succeeded("c");
        assert!(attempts.locked("c").is_none());
    }
}
