//! Introspection providers: opaque tokens an external IdP vouches for (RFC 7662).
//!
//! On the request path for routes that take them. A token not in the cache is sent to the
//! IdP's introspection endpoint (`POST`, form `token=…&token_type_hint=access_token`, the
//! gateway authenticating with its own client id and secret, HTTP Basic); the answer's
//! `active` decides. An active token's claims (`scope`, `client_id`, `sub`, `exp`…) make the
//! identity as a JWT's would — with the provider's `issuer` and `audiences` checked when
//! configured — and the answer is cached, bounded, for at most `cache_ttl` and never past the
//! token's `exp`; an inactive answer is cached for `cache_ttl` too.
//!
//! Failure modes: the endpoint down, slow (past `timeout`), answering non-2xx or something
//! that is not an introspection response → 503 `auth_provider_unavailable`, not 401: the
//! caller's token may well be good. The endpoint may be found by OIDC discovery
//! (`introspection_endpoint` in the issuer's configuration), looked up once and again after a
//! failure.

use super::consumers::ConsumerStore;
use super::credentials::CredentialSource;
use super::failure::AuthOutcome;
use super::identity::{identity_from_claims, Identity};
use super::jwks::discovery_document;
use super::jwt::Secret;
use super::token_cache::{unix_now, TokenCache};
use crate::config::check::Checker;
use crate::config::source::KeyPath;
use crate::outbound::{parse_url, Outbound};
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The largest introspection answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where the introspection endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Url(Uri),
    /// `introspection_endpoint` of the issuer's OpenID configuration.
    Discovery {
        issuer: String,
    },
}

/// `auth_providers[].introspection`, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IntrospectionConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) timeout: Duration,
    pub(crate) cache_ttl: Duration,
    pub(crate) cache_entries: usize,
    /// Checked when set: the answer's `iss` must be this.
    pub(crate) issuer: Option<String>,
    /// Checked when not empty: the answer's `aud` must name one.
    pub(crate) audiences: Vec<String>,
    pub(crate) token_from: Vec<CredentialSource>,
    pub(crate) consumer_claims: Vec<String>,
    pub(crate) require_consumer: bool,
    pub(crate) max_token_bytes: usize,
}

impl IntrospectionConfig {
    pub(crate) fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Url(url) => format!("opaque tokens introspected at {url}"),
            Endpoint::Discovery { issuer } => {
                format!("opaque tokens introspected at {issuer}'s introspection endpoint")
            }
        }
    }
}

/// `introspection:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntrospectionFile {
    endpoint: Option<String>,
    discovery: Option<bool>,
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    client_id: Option<String>,
    client_secret: Option<String>,
    ca: Option<String>,
    timeout: Option<String>,
    cache_ttl: Option<String>,
    cache_size: Option<usize>,
    token_from: Option<Vec<super::jwt::TokenFromFile>>,
    consumer_claims: Option<Vec<String>>,
    require_consumer: Option<bool>,
    max_token_size: Option<String>,
}

pub(crate) fn check_introspection(
    file: &IntrospectionFile,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<IntrospectionConfig> {
    let mut ok = true;
    let endpoint = match (&file.endpoint, file.discovery == Some(true), &file.issuer) {
        (Some(url), false, _) => match parse_url(url) {
            Ok(url) => Some(Endpoint::Url(url)),
            Err(message) => {
                checker.report(&path.key("endpoint"), message);
                None
            }
        },
        (None, true, Some(issuer)) => match parse_url(issuer) {
            Ok(_) => Some(Endpoint::Discovery {
                issuer: issuer.clone(),
            }),
            Err(message) => {
                checker.report(&path.key("issuer"), message);
                None
            }
        },
        (None, true, None) => {
            checker.report(&path.key("issuer"), "discovery needs the issuer's URL");
            None
        }
        (Some(_), true, _) => {
            checker.report(path, "give `endpoint` or `discovery: true`, not both");
            None
        }
        (None, false, _) => {
            checker.report(
                &path.key("endpoint"),
                "required: the IdP's introspection endpoint (or `discovery: true` with `issuer`)",
            );
            None
        }
    };
    let mut required = |key: &str, value: &Option<String>, checker: &mut Checker<'_>| match value {
        Some(text) if !text.is_empty() => text.clone(),
        _ => {
            checker.report(
                &path.key(key),
                format!("required: the gateway's own {key} at the IdP"),
            );
            ok = false;
            String::new()
        }
    };
    let client_id = required("client_id", &file.client_id, checker);
    let client_secret = required("client_secret", &file.client_secret, checker);
    let ca = match &file.ca {
        Some(text) => {
            let ca = checker.ca_bundle(&path.key("ca"), text);
            ok &= ca.is_some();
            ca
        }
        None => None,
    };
    let timeout = checker.duration(
        &path.key("timeout"),
        file.timeout.as_deref(),
        Duration::from_secs(2),
        false,
    );
    let cache_ttl = checker.duration(
        &path.key("cache_ttl"),
        file.cache_ttl.as_deref(),
        Duration::from_secs(60),
        true,
    );
    let cache_entries = checker.count(
        &path.key("cache_size"),
        file.cache_size,
        10_000,
        (0, 10_000_000),
    );
    let token_from =
        super::jwt::check_token_from(file.token_from.as_deref(), &path.key("token_from"), checker);
    let max_token_bytes = checker.size_in_range(
        &path.key("max_token_size"),
        file.max_token_size.as_deref(),
        8 * 1024,
        (16, 64 * 1024),
    );
    let (
        Some(endpoint),
        Some(timeout),
        Some(cache_ttl),
        Some(cache_entries),
        Some(token_from),
        Some(max_token_bytes),
    ) = (
        endpoint,
        timeout,
        cache_ttl,
        cache_entries,
        token_from,
        max_token_bytes,
    )
    else {
        return None;
    };
    ok.then(|| IntrospectionConfig {
        endpoint,
        client_id,
        client_secret: Secret(Arc::from(client_secret.as_bytes())),
        ca,
        timeout,
        cache_ttl,
        cache_entries,
        issuer: file.issuer.clone(),
        audiences: file.audiences.clone().unwrap_or_default(),
        token_from,
        consumer_claims: file
            .consumer_claims
            .clone()
            .unwrap_or_else(|| vec![String::from("client_id")]),
        require_consumer: file.require_consumer.unwrap_or(false),
        max_token_bytes,
    })
}

/// An introspection provider in a runtime.
pub(crate) struct Introspector {
    config: IntrospectionConfig,
    outbound: Outbound,
    /// `Authorization: Basic …` for the gateway's own credentials.
    authorization: HeaderValue,
    /// The endpoint, once known (discovery finds it).
    endpoint: Mutex<Option<Uri>>,
    cache: TokenCache,
    /// Inactive tokens, until their cached answer expires.
    inactive: TokenCache,
    consumers: Arc<ConsumerStore>,
}

impl Introspector {
    pub(crate) fn new(
        config: &IntrospectionConfig,
        consumers: Arc<ConsumerStore>,
    ) -> Result<Introspector, crate::outbound::OutboundTlsError> {
        // RFC 6749 §2.3.1: each part form-urlencoded before the Basic encoding.
        let encode = form_encode;
        let secret = String::from_utf8_lossy(&config.client_secret.0).into_owned();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(&config.client_id),
            encode(&secret)
        ));
        let mut authorization = HeaderValue::from_str(&format!("Basic {basic}"))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        authorization.set_sensitive(true);
        Ok(Introspector {
            outbound: Outbound::new(config.ca.as_deref())?,
            authorization,
            endpoint: Mutex::new(match &config.endpoint {
                Endpoint::Url(url) => Some(url.clone()),
                Endpoint::Discovery { .. } => None,
            }),
            cache: TokenCache::new(config.cache_entries),
            inactive: TokenCache::new(config.cache_entries),
            consumers,
            config: config.clone(),
        })
    }

    pub(crate) fn max_token_bytes(&self) -> usize {
        self.config.max_token_bytes
    }

    /// The cached answer for `token`, if there is one.
    pub(crate) fn cached(&self, token: &str) -> Option<Result<Arc<Identity>, AuthOutcome>> {
        let now = unix_now();
        let directory = self.consumers.current();
        let id = Arc::as_ptr(&*directory) as usize;
        if let Some(Ok(identity)) = self.cache.get(token, now, id) {
            return Some(Ok(identity));
        }
        if let Some(Ok(_)) = self.inactive.get(token, now, id) {
            return Some(Err(AuthOutcome::Inactive));
        }
        None
    }

    /// Ask the IdP about `token`.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Arc<Identity>, AuthOutcome> {
        if let Some(answer) = self.cached(token) {
            return answer;
        }
        let endpoint = self
            .endpoint()
            .await
            .ok_or(AuthOutcome::ProviderUnavailable)?;
        let mut form = String::from("token=");
        form.push_str(&form_encode(token));
        form.push_str("&token_type_hint=access_token");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.authorization.clone());
        let answer = self
            .outbound
            .post_form(
                &endpoint,
                headers,
                form,
                self.config.timeout,
                MAX_ANSWER_BYTES,
            )
            .await;
        let response = match answer {
            Ok(response) if response.status.is_success() => response,
            Ok(response) => {
                tracing::warn!(status = %response.status, "the introspection endpoint refused the gateway's request");
                return Err(AuthOutcome::ProviderUnavailable);
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot reach the introspection endpoint");
                if matches!(self.config.endpoint, Endpoint::Discovery { .. }) {
                    *self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                return Err(AuthOutcome::ProviderUnavailable);
            }
        };
        let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&response.body) else {
            tracing::warn!("the introspection endpoint answered something that is not JSON");
            return Err(AuthOutcome::ProviderUnavailable);
        };
        self.decide(token, claims)
    }

    /// An introspection answer (RFC 7662 §2.2), checked and cached.
    fn decide(
        &self,
        token: &str,
        claims: Map<String, Value>,
    ) -> Result<Arc<Identity>, AuthOutcome> {
        let now = unix_now();
        let ttl = self.config.cache_ttl.as_secs();
        let directory = self.consumers.current();
        let id = Arc::as_ptr(&*directory) as usize;
        let refuse = |outcome| {
            self.inactive
                .insert(token, Arc::new(Identity::nobody()), now + ttl, id, now);
            Err(outcome)
        };
        match claims.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return refuse(AuthOutcome::Inactive),
            _ => {
                tracing::warn!("the introspection answer has no boolean `active`");
                return Err(AuthOutcome::ProviderUnavailable);
            }
        }
        let expires = claims.get("exp").and_then(Value::as_u64);
        if expires.is_some_and(|exp| exp < now) {
            return refuse(AuthOutcome::Expired);
        }
        if let Some(issuer) = &self.config.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
                return refuse(AuthOutcome::Issuer);
            }
        }
        if !self.config.audiences.is_empty() {
            let named = |aud: &str| self.config.audiences.iter().any(|a| a == aud);
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => named(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(named),
                _ => false,
            };
            if !ok {
                return refuse(AuthOutcome::Audience);
            }
        }
        let identity = Arc::new(identity_from_claims(
            claims,
            &self.config.consumer_claims,
            self.config.require_consumer,
            &directory,
        )?);
        let until = expires.map_or(now + ttl, |exp| exp.min(now + ttl));
        self.cache.insert(token, identity.clone(), until, id, now);
        Ok(identity)
    }

    async fn endpoint(&self) -> Option<Uri> {
        if let Some(url) = self
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(url);
        }
        let Endpoint::Discovery { issuer } = &self.config.endpoint else {
            return None;
        };
        let document = match discovery_document(&self.outbound, issuer, self.config.timeout).await {
            Ok(document) => document,
            Err(error) => {
                tracing::warn!(error = %error, "cannot discover the introspection endpoint");
                return None;
            }
        };
        let url = document
            .get("introspection_endpoint")
            .and_then(Value::as_str)
            .and_then(|text| parse_url(text).ok())?;
        *self.endpoint.lock().unwrap_or_else(PoisonError::into_inner) = Some(url.clone());
        Some(url)
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
