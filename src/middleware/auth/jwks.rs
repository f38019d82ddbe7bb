//! Key sets (JWKS): the public keys a JWT provider verifies signatures with, and the cache
//! that keeps a remote key set fresh.
//!
//! Off the request path, except when a token names a key the cache does not have. A
//! [`KeySet`] is parsed once per fetch: each usable signing key ready to verify with
//! (`jsonwebtoken`'s `DecodingKey`), indexed by `kid`. Keys the gateway must never use are
//! left out: symmetric (`oct`) keys — HMAC is only ever verified with a secret configured
//! here, so that a public key can never be used as an HMAC secret — and keys published for
//! encryption. A key is used only with the algorithm its JWK declares (`alg`), or, when it
//! declares none, with the algorithms of its type and curve.
//!
//! A [`JwksCache`] holds a remote key set (a `jwks_url`, or the `jwks_uri` that OIDC
//! discovery finds): fetched when the gateway starts, refreshed in the background as the
//! IdP's `Cache-Control: max-age` says (within `jwks_min_age`..`jwks_max_age`), and fetched
//! again when a token names an unknown `kid` — one fetch however many requests wait for it
//! (single flight), and at most one per `jwks_refetch_interval`, so a flood of forged kids
//! cannot make the gateway hammer the IdP. A failed fetch is retried with back-off and the
//! keys fetched before stay in use (stale-if-error). The cache is a runtime resource: it
//! survives config reloads that leave its provider unchanged.
//!
//! Failure modes: the IdP down at start → requests that need its keys wait for the first
//! fetch up to `fetch_timeout`, then get 503 `auth_provider_unavailable`; down later →
//! the last keys keep working; a key set that does not parse → treated as a failed fetch.

use super::failure::AuthOutcome;
use crate::metrics::{Metrics, JWKS_REFRESHES};
use crate::outbound::{parse_url, Outbound};
use arc_swap::ArcSwapOption;
use http::header::CACHE_CONTROL;
use http::{HeaderMap, Uri};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The largest key set read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The longest a failed fetch waits before the next try.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What kind of key a JWK is: decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    fn fits(self, algorithm: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyType::Rsa => matches!(algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyType::P256 => algorithm == ES256,
            KeyType::P384 => algorithm == ES384,
            KeyType::Ed25519 => algorithm == EdDSA,
        }
    }
}

struct VerifyKey {
    /// The only algorithm the key may be used with, if its JWK says.
    algorithm: Option<Algorithm>,
    key_type: KeyType,
    key: DecodingKey,
}

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// No key with the token's `kid` (or, without a `kid`, none for its algorithm).
    Unknown,
    /// The key was published for another algorithm or is of another type.
    WrongAlgorithm,
}

impl NoKey {
    pub(crate) fn outcome(self) -> AuthOutcome {
        match self {
            NoKey::Unknown => AuthOutcome::KidNotFound,
            NoKey::WrongAlgorithm => AuthOutcome::Algorithm,
        }
    }
}

/// A parsed key set.
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
    by_kid: HashMap<String, usize>,
}

impl KeySet {
    /// Parse a JWKS document (`{"keys": [...]}`). Keys that cannot or must not be used are
    /// skipped; a document that is not a key set at all is an error.
    pub(crate) fn parse(json: &[u8]) -> Result<KeySet, String> {
        let document: Value =
            serde_json::from_slice(json).map_err(|error| format!("not JSON: {error}"))?;
        let Some(Value::Array(entries)) = document.get("keys") else {
            return Err(String::from("not a JWK set: no `keys` array"));
        };
        let mut set = KeySet {
            keys: Vec::new(),
            by_kid: HashMap::new(),
        };
        for entry in entries {
            // One key the gateway cannot read (an unknown type or curve) does not spoil the
            // others.
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            if matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) {
                continue;
            }
            let key_type = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyType::Rsa,
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => KeyType::P256,
                    EllipticCurve::P384 => KeyType::P384,
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                    KeyType::Ed25519
                }
                // Symmetric keys are never taken from a key set.
                _ => continue,
            };
            let algorithm = match jwk.common.key_algorithm {
                None => None,
                Some(declared) => match declared.to_string().parse::<Algorithm>() {
                    Ok(algorithm) if key_type.fits(algorithm) => Some(algorithm),
                    // Published for encryption, HMAC or another key type: unusable.
                    _ => continue,
                },
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let index = set.keys.len();
            set.keys.push(VerifyKey {
                algorithm,
                key_type,
                key,
            });
            if let Some(kid) = jwk.common.key_id {
                set.by_kid.entry(kid).or_insert(index);
            }
        }
        Ok(set)
    }

    /// The keys that may verify a token with this `kid` and `algorithm`, best first.
    pub(crate) fn candidates(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Vec<&DecodingKey>, NoKey> {
        let usable = |key: &VerifyKey| {
            key.key_type.fits(algorithm) && key.algorithm.is_none_or(|a| a == algorithm)
        };
        match kid {
            Some(kid) => {
                let key = self
                    .by_kid
                    .get(kid)
                    .and_then(|index| self.keys.get(*index))
                    .ok_or(NoKey::Unknown)?;
                if usable(key) {
                    Ok(vec![&key.key])
                } else {
                    Err(NoKey::WrongAlgorithm)
                }
            }
            None => {
                let keys: Vec<&DecodingKey> = self
                    .keys
                    .iter()
                    .filter(|key| usable(key))
                    .map(|key| &key.key)
                    .take(4)
                    .collect();
                if keys.is_empty() {
                    Err(NoKey::Unknown)
                } else {
                    Ok(keys)
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// A set without keys.
    pub(crate) fn empty() -> KeySet {
        KeySet {
            keys: Vec::new(),
            by_kid: HashMap::new(),
        }
    }
}

/// Where a remote key set is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteSource {
    Url(Uri),
    /// `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery {
        issuer: String,
    },
}

/// A remote key set's settings, checked: also the key its cache is carried across reloads
/// by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteKeys {
    pub(crate) source: RemoteSource,
    /// A CA bundle to trust for the IdP instead of the Mozilla roots.
    pub(crate) ca: Option<PathBuf>,
    pub(crate) min_age: Duration,
    pub(crate) max_age: Duration,
    pub(crate) refetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
}

struct FetchState {
    fetching: bool,
    last_attempt: Option<Instant>,
    next_refresh: Instant,
    failures: u32,
    /// The key set's URL, once known (discovery finds it).
    jwks_uri: Option<Uri>,
}

/// A remote key set, kept fresh.
pub(crate) struct JwksCache {
    provider: Arc<str>,
    settings: RemoteKeys,
    outbound: Outbound,
    keys: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
    /// Bumped after every fetch, successful or not: what waiting requests watch.
    fetched: watch::Sender<u64>,
    started: AtomicBool,
    successes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl JwksCache {
    pub(crate) fn new(
        provider: &str,
        settings: &RemoteKeys,
        metrics: &Metrics,
    ) -> Result<JwksCache, crate::outbound::OutboundTlsError> {
        let counter = |outcome: &str| {
            metrics.counter(
                &JWKS_REFRESHES,
                &[("provider", provider), ("outcome", outcome)],
            )
        };
        let jwks_uri = match &settings.source {
            RemoteSource::Url(url) => Some(url.clone()),
            RemoteSource::Discovery { .. } => None,
        };
        Ok(JwksCache {
            provider: provider.into(),
            outbound: Outbound::new(settings.ca.as_deref())?,
            settings: settings.clone(),
            keys: ArcSwapOption::empty(),
            state: Mutex::new(FetchState {
                fetching: false,
                last_attempt: None,
                next_refresh: Instant::now(),
                failures: 0,
                jwks_uri,
            }),
            fetched: watch::channel(0).0,
            started: AtomicBool::new(false),
            successes: counter("success"),
            failures: counter("failure"),
        })
    }

    /// Start the background refresher (once; it ends when the cache is dropped). Needs a
    /// Tokio runtime.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(refresh_forever(weak));
    }

    /// The keys now; `None` until a fetch has succeeded.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request that found no key for its `kid` may wait for a fetch: one is under
    /// way, or the last began at least `jwks_refetch_interval` ago.
    pub(crate) fn may_refetch(&self) -> bool {
        let state = self.state();
        state.fetching
            || state
                .last_attempt
                .is_none_or(|last| last.elapsed() >= self.settings.refetch_interval)
    }

    /// Fetch again (unless the rate limit says no) and wait for that fetch, or join the one
    /// under way; bounded by the fetch timeout.
    pub(crate) async fn refetch(self: &Arc<Self>) {
        let mut fetched = {
            let mut state = self.state();
            let allowed = state
                .last_attempt
                .is_none_or(|last| last.elapsed() >= self.settings.refetch_interval);
            if !state.fetching && !allowed {
                return;
            }
            let waiting = self.fetched.subscribe();
            if !state.fetching {
                state.fetching = true;
                state.last_attempt = Some(Instant::now());
                // Its own task: the fetch completes for everyone even if this request goes.
                tokio::spawn(self.clone().fetch());
            }
            waiting
        };
        let patience = self.settings.fetch_timeout + Duration::from_millis(100);
        let _ = tokio::time::timeout(patience, fetched.changed()).await;
    }

    /// One fetch (discovery first when the key set's URL is not known yet); the state's
    /// `fetching` flag is set by whoever started it.
    async fn fetch(self: Arc<Self>) {
        let result = self.fetch_keys().await;
        let now = Instant::now();
        let mut state = self.state();
        state.fetching = false;
        match result {
            Ok((keys, max_age)) => {
                let count = keys.len();
                self.keys.store(Some(Arc::new(keys)));
                state.failures = 0;
                state.next_refresh = now + max_age;
                self.successes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(provider = %self.provider, keys = count, "key set fetched");
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << state.failures.min(6)).min(MAX_BACKOFF);
                state.next_refresh = now + backoff.min(self.settings.max_age);
                if matches!(self.settings.source, RemoteSource::Discovery { .. }) {
                    // The IdP may have moved its keys: ask discovery again next time.
                    state.jwks_uri = None;
                }
                self.failures.fetch_add(1, Ordering::Relaxed);
                let stale = self.keys.load().is_some();
                tracing::warn!(
                    provider = %self.provider,
                    error = %error,
                    keeping_previous_keys = stale,
                    retry_in = ?backoff,
                    "cannot fetch the key set"
                );
            }
        }
        drop(state);
        self.fetched.send_modify(|generation| *generation += 1);
    }

    async fn fetch_keys(&self) -> Result<(KeySet, Duration), String> {
        let known = self.state().jwks_uri.clone();
        let url = match known {
            Some(url) => url,
            None => {
                let url = self.discover().await?;
                self.state().jwks_uri = Some(url.clone());
                url
            }
        };
        let response = self
            .outbound
            .get(&url, self.settings.fetch_timeout, MAX_JWKS_BYTES)
            .await
            .map_err(|error| error.to_string())?;
        if !response.status.is_success() {
            return Err(format!("the key set URL answered {}", response.status));
        }
        let keys = KeySet::parse(&response.body)?;
        Ok((keys, self.max_age(&response.headers)))
    }

    /// OIDC discovery: the `jwks_uri` of the issuer's configuration document, which must name
    /// the same issuer (OpenID Connect Discovery 1.0 §4.3).
    async fn discover(&self) -> Result<Uri, String> {
        let RemoteSource::Discovery { issuer } = &self.settings.source else {
            return Err(String::from("no key set URL"));
        };
        let document =
            discovery_document(&self.outbound, issuer, self.settings.fetch_timeout).await?;
        let Some(Value::String(jwks_uri)) = document.get("jwks_uri") else {
            return Err(String::from("the discovery document has no jwks_uri"));
        };
        parse_url(jwks_uri)
    }

    /// How long the fetched keys are good for: `max-age` within the configured bounds;
    /// `no-cache` / `no-store` count as the minimum, no header as the maximum.
    fn max_age(&self, headers: &HeaderMap) -> Duration {
        let (min, max) = (self.settings.min_age, self.settings.max_age);
        let Some(value) = headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
            return max;
        };
        let mut age = None;
        for directive in value.split(',').map(str::trim) {
            if directive.eq_ignore_ascii_case("no-cache")
                || directive.eq_ignore_ascii_case("no-store")
            {
                return min;
            }
            if let Some(seconds) = directive
                .split_once('=')
                .filter(|(name, _)| name.trim().eq_ignore_ascii_case("max-age"))
                .and_then(|(_, seconds)| seconds.trim().trim_matches('"').parse::<u64>().ok())
            {
                age = Some(Duration::from_secs(seconds));
            }
        }
        age.map_or(max, |age| age.clamp(min, max))
    }
}

/// Fetch `{issuer}/.well-known/openid-configuration` and check that it names `issuer`.
pub(crate) async fn discovery_document(
    outbound: &Outbound,
    issuer: &str,
    timeout: Duration,
) -> Result<serde_json::Map<String, Value>, String> {
    let url = parse_url(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))?;
    let response = outbound
        .get(&url, timeout, MAX_JWKS_BYTES)
        .await
        .map_err(|error| error.to_string())?;
    if !response.status.is_success() {
        return Err(format!(
            "the discovery document answered {}",
            response.status
        ));
    }
    let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(&response.body) else {
        return Err(String::from("the discovery document is not a JSON object"));
    };
    if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(format!(
            "the discovery document is for another issuer than {issuer:?}"
        ));
    }
    Ok(document)
}

/// Fetch when due, for as long as the cache lives.
async fn refresh_forever(cache: Weak<JwksCache>) {
    enum Next {
        /// A fetch was started: wait for it.
        Fetching(watch::Receiver<u64>),
        Sleep(Instant),
    }
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let next = {
            let mut state = strong.state();
            let now = Instant::now();
            if !state.fetching && state.next_refresh <= now {
                state.fetching = true;
                state.last_attempt = Some(now);
                let fetched = strong.fetched.subscribe();
                tokio::spawn(strong.clone().fetch());
                Next::Fetching(fetched)
            } else if state.fetching {
                // Someone else's fetch: look again soon.
                Next::Sleep(now + Duration::from_millis(200))
            } else {
                Next::Sleep(state.next_refresh)
            }
        };
        // Hold no strong reference while waiting, so that a dropped cache ends this task.
        drop(strong);
        match next {
            Next::Fetching(mut fetched) => {
                let _ = fetched.changed().await;
            }
            Next::Sleep(until) => tokio::time::sleep_until(until).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An RSA key (kid "r"), a P-256 key declared ES256 ("e"), a P-256 key declared RS256
    // (unusable), an HMAC key (never taken) and a key for encryption (skipped).
    const SET: &str = r#"{"keys": [
        {"kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
        {"kty": "EC", "kid": "e", "alg": "ES256", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "EC", "kid": "mislabelled", "alg": "RS256", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
        {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty": "XYZ", "kid": "future"}
    ]}"#;

    #[test]
    fn only_usable_signing_keys_are_kept_and_each_only_for_its_algorithm() {
        let set = KeySet::parse(SET.as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.candidates(Some("r"), Algorithm::RS256).unwrap().len(),
            1
        );
        assert_eq!(
            set.candidates(Some("r"), Algorithm::PS384).unwrap().len(),
            1
        );
        assert_eq!(
            set.candidates(Some("r"), Algorithm::ES256).err(),
            Some(NoKey::WrongAlgorithm)
        );
        assert_eq!(
            set.candidates(Some("e"), Algorithm::ES256).unwrap().len(),
            1
        );
        assert_eq!(
            set.candidates(Some("e"), Algorithm::ES384).err(),
            Some(NoKey::WrongAlgorithm)
        );
        for gone in ["h", "enc", "mislabelled", "future", "nobody"] {
            assert_eq!(
                set.candidates(Some(gone), Algorithm::HS256).err(),
                Some(NoKey::Unknown),
                "{gone}"
            );
        }
        // Without a kid, the keys that fit the algorithm.
        assert_eq!(set.candidates(None, Algorithm::ES256).unwrap().len(), 1);
        assert_eq!(
            set.candidates(None, Algorithm::EdDSA).err(),
            Some(NoKey::Unknown)
        );
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"{\"keys\": 3}").is_err());
    }

    fn cache(min: u64, max: u64) -> JwksCache {
        let settings = RemoteKeys {
            source: RemoteSource::Url("http://127.0.0.1:1/jwks".parse().unwrap()),
            ca: None,
            min_age: Duration::from_secs(min),
            max_age: Duration::from_secs(max),
            refetch_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(1),
        };
        JwksCache::new("p", &settings, &Metrics::default()).unwrap()
    }

    #[test]
    fn cache_control_is_honoured_within_bounds() {
        let cache = cache(60, 3600);
        let age = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, value.parse().unwrap());
            cache.max_age(&headers)
        };
        assert_eq!(age("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(age("max-age=5"), Duration::from_secs(60));
        assert_eq!(age("max-age=86400"), Duration::from_secs(3600));
        assert_eq!(age("no-store"), Duration::from_secs(60));
        assert_eq!(age("private"), Duration::from_secs(3600));
        assert_eq!(cache.max_age(&HeaderMap::new()), Duration::from_secs(3600));
    }
}
