//! JWT providers: `auth_providers[].jwt`, checked, and the verifier a runtime builds from it.
//!
//! On the request path for routes that take tokens. Verification, in order:
//! 1. the cache of verified tokens: a token seen before is looked up by its signature and
//!    compared whole, so a repeated token costs a hash and a comparison, not a signature
//!    check; entries live until the token expires (bounded in number);
//! 2. the header, read by this module (not trusted to a library default): `alg` must be one
//!    the provider allows — never `none`, HMAC only with a configured secret, so that a public
//!    key can never be used as an HMAC secret (key confusion); a `crit` parameter is refused
//!    (none is understood); `jku`, `x5u`, `jwk` and `x5c` are ignored: the gateway never
//!    fetches or trusts a key a token brings;
//! 3. the key: by `kid` from the provider's key set, and only with the algorithm its JWK
//!    declares; an unknown `kid` waits for the key set to be fetched again (`jwks.rs`);
//! 4. signature and claims with `jsonwebtoken`: `exp`, `iss` and `aud` are required (the
//!    library alone requires only `exp`), `nbf` checked, with the provider's leeway; then the
//!    provider's own required claims;
//! 5. the identity: `sub`, the scopes (`scope` and `scp`), and the consumer named by
//!    `client_id` / `azp`, whose grant caps the token's scopes.
//!
//! Each refusal has its precise [`AuthOutcome`] for the access log and metrics.

use super::consumers::ConsumerStore;
use super::credentials::CredentialSource;
use super::failure::AuthOutcome;
use super::identity::{identity_from_claims, Identity};
use super::jwks::{JwksCache, KeySet, NoKey, RemoteKeys, RemoteSource};
use super::signing::{RingSettings, SigningKeys};
use super::token_cache::{unix_now, TokenCache};
use crate::config::check::{header_op_name, Checker};
use crate::config::source::KeyPath;
use crate::outbound::parse_url;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_MAX_TOKEN_BYTES: u64 = 8 * 1024;
const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// The asymmetric algorithms a provider allows when it does not say.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An HMAC secret: never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a provider's verification keys come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JwtKeys {
    /// HMAC (`HS256`/`HS384`/`HS512`) with this secret.
    Secret(Secret),
    /// A key set read from a file or written inline (its JSON text, checked).
    Static(String),
    /// A key set fetched from the IdP.
    Remote(RemoteKeys),
    /// The gateway's own signing keys (an `oauth2_server` provider).
    Gateway(RingSettings),
}

/// A JWT provider, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JwtConfig {
    pub(crate) issuer: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) keys: JwtKeys,
    pub(crate) leeway: Duration,
    /// Claims that must be present besides `exp`, `iss` and `aud`.
    pub(crate) required_claims: Vec<String>,
    pub(crate) token_from: Vec<CredentialSource>,
    /// Claims that name the consumer, tried in order.
    pub(crate) consumer_claims: Vec<String>,
    pub(crate) require_consumer: bool,
    pub(crate) max_token_bytes: usize,
    pub(crate) cache_entries: usize,
}

impl JwtConfig {
    pub(crate) fn describe(&self) -> String {
        let keys = match &self.keys {
            JwtKeys::Secret(_) => String::from("a shared secret"),
            JwtKeys::Static(_) => String::from("a configured key set"),
            JwtKeys::Gateway(_) => String::from("the gateway's own signing keys"),
            JwtKeys::Remote(remote) => match &remote.source {
                RemoteSource::Url(url) => format!("keys from {url}"),
                RemoteSource::Discovery { .. } => String::from("keys found by OIDC discovery"),
            },
        };
        let places: Vec<String> = self
            .token_from
            .iter()
            .map(CredentialSource::describe)
            .collect();
        let algorithms: Vec<String> = self.algorithms.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "JWT from {}: issuer {}, audience {}, {} with {keys}",
            places.join(" or "),
            self.issuer,
            self.audiences.join(" or "),
            algorithms.join("/"),
        )
    }
}

/// `jwt:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtFile {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    jwks_url: Option<String>,
    discovery: Option<bool>,
    jwks_file: Option<String>,
    jwks: Option<Value>,
    secret: Option<String>,
    ca: Option<String>,
    leeway: Option<String>,
    required_claims: Option<Vec<String>>,
    token_from: Option<Vec<TokenFromFile>>,
    consumer_claims: Option<Vec<String>>,
    require_consumer: Option<bool>,
    max_token_size: Option<String>,
    cache_size: Option<usize>,
    jwks_min_age: Option<String>,
    jwks_max_age: Option<String>,
    jwks_refetch_interval: Option<String>,
    fetch_timeout: Option<String>,
}

/// One `token_from` entry as written: exactly one of `header`, `cookie` and `query`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenFromFile {
    header: Option<String>,
    scheme: Option<String>,
    cookie: Option<String>,
    query: Option<String>,
}

/// Check `jwt:` at `path`.
pub(crate) fn check_jwt(
    file: &JwtFile,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<JwtConfig> {
    let mut ok = true;
    let fail = |checker: &mut Checker<'_>, key: &str, message: String| {
        checker.report(&path.key(key), message);
        false
    };
    let issuer = match file.issuer.as_deref() {
        Some(issuer) if !issuer.is_empty() => issuer.to_string(),
        _ => {
            ok &= fail(
                checker,
                "issuer",
                String::from(
                    "required: the `iss` every token must carry (the IdP's issuer identifier)",
                ),
            );
            String::new()
        }
    };
    let audiences = file.audiences.clone().unwrap_or_default();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        ok &= fail(
            checker,
            "audiences",
            String::from("required: at least one audience; a token's `aud` must name one of them"),
        );
    }
    // The key source: exactly one.
    let given: Vec<&str> = [
        ("jwks_url", file.jwks_url.is_some()),
        ("discovery", file.discovery == Some(true)),
        ("jwks_file", file.jwks_file.is_some()),
        ("jwks", file.jwks.is_some()),
        ("secret", file.secret.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if given.len() != 1 {
        let message = if given.is_empty() {
            String::from(
                "a JWT provider needs its keys: one of `jwks_url`, `discovery: true`, \
                 `jwks_file`, `jwks` or `secret`",
            )
        } else {
            format!("give only one key source, not {}", given.join(" and "))
        };
        checker.report(path, message);
        ok = false;
    }
    let hmac = file.secret.is_some();
    let algorithms = match &file.algorithms {
        None if hmac => vec![Algorithm::HS256],
        None => ASYMMETRIC.to_vec(),
        Some(names) => {
            let mut algorithms = Vec::new();
            for (index, name) in names.iter().enumerate() {
                let at = path.key("algorithms").index(index);
                match name.parse::<Algorithm>() {
                    Ok(algorithm) if is_hmac(algorithm) && !hmac => {
                        checker.report(
                            &at,
                            format!(
                                "{name} needs `secret`: HMAC is only verified with a secret \
                             configured here, never with a key from a key set"
                            ),
                        );
                        ok = false;
                    }
                    Ok(algorithm) if !is_hmac(algorithm) && hmac => {
                        checker.report(
                            &at,
                            format!(
                                "{name} is not an HMAC algorithm; a provider with `secret` takes \
                             HS256, HS384 or HS512"
                            ),
                        );
                        ok = false;
                    }
                    Ok(algorithm) => algorithms.push(algorithm),
                    Err(_) => {
                        checker.report(
                            &at,
                            format!(
                                "unknown algorithm {name:?} (`none` is never accepted): expected \
                             RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, or \
                             with `secret` HS256, HS384, HS512"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            if names.is_empty() {
                checker.report(&path.key("algorithms"), "list at least one algorithm");
                ok = false;
            }
            algorithms
        }
    };
    let duration = |checker: &mut Checker<'_>, key: &str, text: &Option<String>, default: u64| {
        checker.duration(
            &path.key(key),
            text.as_deref(),
            Duration::from_secs(default),
            false,
        )
    };
    let keys = if let Some(secret) = &file.secret {
        // RFC 7518 §3.2: an HMAC key at least as long as the hash.
        let needed = algorithms
            .iter()
            .map(|a| hash_bytes(*a))
            .max()
            .unwrap_or(32);
        if secret.len() < needed {
            checker.report(
                &path.key("secret"),
                format!(
                    "an HMAC secret must be at least {needed} bytes for the algorithms allowed \
                 (this one is {})",
                    secret.len()
                ),
            );
            ok = false;
        }
        Some(JwtKeys::Secret(Secret(Arc::from(secret.as_bytes()))))
    } else if let Some(text) = &file.jwks_file {
        let file_path = checker.file_path(text);
        match std::fs::read(&file_path) {
            Err(error) => {
                ok &= fail(
                    checker,
                    "jwks_file",
                    format!("cannot read {}: {error}", file_path.display()),
                );
                None
            }
            Ok(bytes) => static_keys(&bytes, &path.key("jwks_file"), checker).map(JwtKeys::Static),
        }
    } else if let Some(inline) = &file.jwks {
        let text = inline.to_string();
        static_keys(text.as_bytes(), &path.key("jwks"), checker).map(JwtKeys::Static)
    } else {
        let source = match (&file.jwks_url, file.discovery) {
            (Some(url), _) => match parse_url(url) {
                Ok(url) => Some(RemoteSource::Url(url)),
                Err(message) => {
                    ok &= fail(checker, "jwks_url", message);
                    None
                }
            },
            (None, Some(true)) => match parse_url(&issuer) {
                Ok(_) => Some(RemoteSource::Discovery {
                    issuer: issuer.clone(),
                }),
                Err(message) => {
                    ok &= fail(
                        checker,
                        "issuer",
                        format!("discovery needs the issuer to be a URL: {message}"),
                    );
                    None
                }
            },
            _ => None,
        };
        let ca = match &file.ca {
            Some(text) => checker.ca_bundle(&path.key("ca"), text),
            None => None,
        };
        if file.ca.is_some() && ca.is_none() {
            ok = false;
        }
        let min_age = duration(checker, "jwks_min_age", &file.jwks_min_age, 30);
        let max_age = duration(checker, "jwks_max_age", &file.jwks_max_age, 600);
        let refetch_interval = checker.duration(
            &path.key("jwks_refetch_interval"),
            file.jwks_refetch_interval.as_deref(),
            Duration::from_secs(10),
            true,
        );
        let fetch_timeout = duration(checker, "fetch_timeout", &file.fetch_timeout, 5);
        match (source, min_age, max_age, refetch_interval, fetch_timeout) {
            (
                Some(source),
                Some(min_age),
                Some(max_age),
                Some(refetch_interval),
                Some(fetch_timeout),
            ) => {
                if min_age > max_age {
                    ok &= fail(
                        checker,
                        "jwks_min_age",
                        String::from("cannot be more than jwks_max_age"),
                    );
                }
                Some(JwtKeys::Remote(RemoteKeys {
                    source,
                    ca,
                    min_age,
                    max_age,
                    refetch_interval,
                    fetch_timeout,
                }))
            }
            _ => None,
        }
    };
    if keys.is_none() && given.len() == 1 {
        ok = false;
    }
    let leeway = checker.duration(
        &path.key("leeway"),
        file.leeway.as_deref(),
        DEFAULT_LEEWAY,
        true,
    );
    if leeway.is_some_and(|leeway| leeway > MAX_LEEWAY) {
        ok &= fail(
            checker,
            "leeway",
            format!(
                "at most {}s: more would accept tokens long expired",
                MAX_LEEWAY.as_secs()
            ),
        );
    }
    let required_claims = file.required_claims.clone().unwrap_or_default();
    let token_from = check_token_from(file.token_from.as_deref(), &path.key("token_from"), checker);
    let max_token_bytes = checker.size_in_range(
        &path.key("max_token_size"),
        file.max_token_size.as_deref(),
        DEFAULT_MAX_TOKEN_BYTES,
        (256, 64 * 1024),
    );
    let cache_entries = checker.count(
        &path.key("cache_size"),
        file.cache_size,
        DEFAULT_CACHE_ENTRIES,
        (0, 10_000_000),
    );
    let consumer_claims = file
        .consumer_claims
        .clone()
        .unwrap_or_else(|| vec![String::from("client_id"), String::from("azp")]);
    let (Some(keys), Some(leeway), Some(token_from), Some(max_token_bytes), Some(cache_entries)) =
        (keys, leeway, token_from, max_token_bytes, cache_entries)
    else {
        return None;
    };
    ok.then_some(JwtConfig {
        issuer,
        audiences,
        algorithms,
        keys,
        leeway,
        required_claims,
        token_from,
        consumer_claims,
        require_consumer: file.require_consumer.unwrap_or(false),
        max_token_bytes,
        cache_entries,
    })
}

fn static_keys(bytes: &[u8], path: &KeyPath, checker: &mut Checker<'_>) -> Option<String> {
    match KeySet::parse(bytes) {
        Ok(set) if set.len() == 0 => {
            checker.report(path, "the key set has no usable signing key");
            None
        }
        Ok(_) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Err(message) => {
            checker.report(path, message);
            None
        }
    }
}

pub(crate) fn check_token_from(
    entries: Option<&[TokenFromFile]>,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<Vec<CredentialSource>> {
    let Some(entries) = entries else {
        return Some(vec![CredentialSource::bearer()]);
    };
    let mut sources = Vec::new();
    let mut ok = !entries.is_empty();
    if entries.is_empty() {
        checker.report(path, "list at least one place to read the token from");
    }
    for (index, entry) in entries.iter().enumerate() {
        let at = path.index(index);
        let source = match (&entry.header, &entry.cookie, &entry.query) {
            (Some(header), None, None) => match header_op_name(header, true) {
                Ok(name) => Some(CredentialSource::Header {
                    name,
                    scheme: entry.scheme.as_deref().map(Box::from),
                }),
                Err(message) => {
                    checker.report(&at.key("header"), message);
                    None
                }
            },
            (None, Some(cookie), None) if !cookie.is_empty() && entry.scheme.is_none() => {
                Some(CredentialSource::Cookie(cookie.as_str().into()))
            }
            (None, None, Some(query)) if !query.is_empty() && entry.scheme.is_none() => {
                Some(CredentialSource::Query(query.as_str().into()))
            }
            _ => {
                checker.report(
                    &at,
                    "give exactly one of `header` (with an optional `scheme`), `cookie` or `query`",
                );
                None
            }
        };
        match source {
            Some(source) => sources.push(source),
            None => ok = false,
        }
    }
    ok.then_some(sources)
}

fn is_hmac(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

fn hash_bytes(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// The header fields the gateway reads itself.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// A JWT provider in a runtime.
pub(crate) struct JwtVerifier {
    config: JwtConfig,
    keys: VerifierKeys,
    /// One validation per allowed algorithm (`jsonwebtoken` checks the header's `alg` and the
    /// key's family against it).
    validations: Vec<(Algorithm, Validation)>,
    consumers: Arc<ConsumerStore>,
    cache: TokenCache,
}

enum VerifierKeys {
    Secret(DecodingKey),
    Static(KeySet),
    Remote(Arc<JwksCache>),
    Gateway(Arc<SigningKeys>),
}

/// The shared key sources a verifier may be given (runtime resources).
pub(crate) enum SharedKeys {
    None,
    Remote(Arc<JwksCache>),
    Gateway(Arc<SigningKeys>),
}

/// What the verifier could say without waiting.
pub(crate) enum Verdict {
    Done(Result<Arc<Identity>, AuthOutcome>),
    /// The key set must be fetched (first use, or an unknown `kid`).
    NeedsKeys,
}

impl JwtVerifier {
    pub(crate) fn new(
        config: &JwtConfig,
        shared: SharedKeys,
        consumers: Arc<ConsumerStore>,
    ) -> JwtVerifier {
        let keys = match (&config.keys, shared) {
            (JwtKeys::Secret(secret), _) => {
                VerifierKeys::Secret(DecodingKey::from_secret(&secret.0))
            }
            // Checked when the config loaded; an empty set (which cannot happen) would
            // refuse every token.
            (JwtKeys::Static(text), _) => VerifierKeys::Static(
                KeySet::parse(text.as_bytes()).unwrap_or_else(|_| KeySet::empty()),
            ),
            (JwtKeys::Remote(_), SharedKeys::Remote(cache)) => VerifierKeys::Remote(cache),
            (JwtKeys::Gateway(_), SharedKeys::Gateway(keys)) => VerifierKeys::Gateway(keys),
            (JwtKeys::Remote(_) | JwtKeys::Gateway(_), _) => VerifierKeys::Static(KeySet::empty()),
        };
        let validations = config
            .algorithms
            .iter()
            .map(|algorithm| {
                let mut validation = Validation::new(*algorithm);
                validation.leeway = config.leeway.as_secs();
                validation.validate_nbf = true;
                validation.set_issuer(&[&config.issuer]);
                validation.set_audience(&config.audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                (*algorithm, validation)
            })
            .collect();
        JwtVerifier {
            cache: TokenCache::new(config.cache_entries),
            config: config.clone(),
            keys,
            validations,
            consumers,
        }
    }

    pub(crate) fn max_token_bytes(&self) -> usize {
        self.config.max_token_bytes
    }

    /// The remote key set, to start its refresher and to wait for it.
    pub(crate) fn remote(&self) -> Option<&Arc<JwksCache>> {
        match &self.keys {
            VerifierKeys::Remote(cache) => Some(cache),
            _ => None,
        }
    }

    /// Verify `token` with the keys at hand.
    pub(crate) fn verify_now(&self, token: &str) -> Verdict {
        let now = unix_now();
        let directory = self.consumers.current();
        let directory_id = Arc::as_ptr(&*directory) as usize;
        let leeway = self.config.leeway.as_secs();
        match self
            .cache
            .get(token, now.saturating_sub(leeway), directory_id)
        {
            Some(Ok(identity)) => return Verdict::Done(Ok(identity)),
            Some(Err(_)) => return Verdict::Done(Err(AuthOutcome::Expired)),
            None => {}
        }
        let (header, algorithm) = match read_header(token, &self.config.algorithms) {
            Ok(header) => header,
            Err(outcome) => return Verdict::Done(Err(outcome)),
        };
        let remote_keys;
        let ring;
        let keys: Vec<&DecodingKey> = match &self.keys {
            VerifierKeys::Secret(key) => vec![key],
            VerifierKeys::Static(set) => match set.candidates(header.kid.as_deref(), algorithm) {
                Ok(keys) => keys,
                Err(no_key) => return Verdict::Done(Err(no_key.outcome())),
            },
            VerifierKeys::Gateway(signing) => {
                ring = signing.current();
                match ring.verify.candidates(header.kid.as_deref(), algorithm) {
                    Ok(keys) => keys,
                    Err(no_key) => return Verdict::Done(Err(no_key.outcome())),
                }
            }
            VerifierKeys::Remote(cache) => {
                let Some(set) = cache.current() else {
                    return Verdict::NeedsKeys;
                };
                remote_keys = set;
                match remote_keys.candidates(header.kid.as_deref(), algorithm) {
                    Ok(keys) => keys,
                    Err(NoKey::Unknown) if cache.may_refetch() => return Verdict::NeedsKeys,
                    Err(no_key) => return Verdict::Done(Err(no_key.outcome())),
                }
            }
        };
        let Some(validation) = self
            .validations
            .iter()
            .find(|(allowed, _)| *allowed == algorithm)
            .map(|(_, validation)| validation)
        else {
            return Verdict::Done(Err(AuthOutcome::Algorithm));
        };
        let mut outcome = AuthOutcome::BadSignature;
        for key in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => {
                    return Verdict::Done(self.accept(
                        token,
                        data.claims,
                        &directory,
                        directory_id,
                        now,
                    ));
                }
                Err(error) => {
                    outcome = outcome_of(error.kind());
                    if outcome != AuthOutcome::BadSignature {
                        break;
                    }
                }
            }
        }
        Verdict::Done(Err(outcome))
    }

    /// Verify `token`, fetching the key set first if it must.
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<Identity>, AuthOutcome> {
        if let Verdict::Done(result) = self.verify_now(token) {
            return result;
        }
        let Some(cache) = self.remote() else {
            return Err(AuthOutcome::KidNotFound);
        };
        cache.refetch().await;
        match self.verify_now(token) {
            Verdict::Done(result) => result,
            // Still nothing: the key set could not be had at all, or still lacks the kid.
            Verdict::NeedsKeys if cache.current().is_none() => {
                Err(AuthOutcome::ProviderUnavailable)
            }
            Verdict::NeedsKeys => Err(AuthOutcome::KidNotFound),
        }
    }

    /// Claims that verified: the provider's own requirements, the identity, the cache.
    fn accept(
        &self,
        token: &str,
        claims: Map<String, Value>,
        directory: &super::consumers::ConsumerDirectory,
        directory_id: usize,
        now: u64,
    ) -> Result<Arc<Identity>, AuthOutcome> {
        for claim in &self.config.required_claims {
            if claims.get(claim).is_none_or(Value::is_null) {
                return Err(AuthOutcome::MissingClaim);
            }
        }
        let expires = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        let identity = Arc::new(identity_from_claims(
            claims,
            &self.config.consumer_claims,
            self.config.require_consumer,
            directory,
        )?);
        self.cache
            .insert(token, identity.clone(), expires, directory_id, now);
        Ok(identity)
    }
}

/// Read the header: three base64url parts, an allowed `alg`, no `crit`.
fn read_header(
    token: &str,
    allowed: &[Algorithm],
) -> Result<(TokenHeader, Algorithm), AuthOutcome> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthOutcome::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthOutcome::Malformed)?;
    let header: TokenHeader = serde_json::from_slice(&bytes).map_err(|_| AuthOutcome::Malformed)?;
    if header.crit.is_some() {
        return Err(AuthOutcome::UnsupportedCritical);
    }
    let algorithm = header
        .alg
        .parse::<Algorithm>()
        .map_err(|_| AuthOutcome::Algorithm)?;
    if !allowed.contains(&algorithm) {
        return Err(AuthOutcome::Algorithm);
    }
    Ok((header, algorithm))
}

fn outcome_of(kind: &ErrorKind) -> AuthOutcome {
    match kind {
        ErrorKind::ExpiredSignature => AuthOutcome::Expired,
        ErrorKind::ImmatureSignature => AuthOutcome::NotYetValid,
        ErrorKind::InvalidIssuer => AuthOutcome::Issuer,
        ErrorKind::InvalidAudience => AuthOutcome::Audience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthOutcome::Issuer,
            "aud" => AuthOutcome::Audience,
            _ => AuthOutcome::MissingClaim,
        },
        ErrorKind::InvalidSignature
        | ErrorKind::Crypto(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_) => AuthOutcome::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthOutcome::Algorithm,
        _ => AuthOutcome::Malformed,
    }
}
