//! Identity providers: the `auth_providers` section, and what each provider becomes in a
//! runtime.
//!
//! Off the request path when checked and built; on it when a route's auth layer asks a
//! provider about a credential. A provider is named once at the top of the file and used by
//! any number of routes (`auth.providers`). Kinds:
//! - `api_key`: a key in a header or a query parameter, looked up among the consumers by its
//!   digest (`consumers.rs`);
//! - `jwt`: a signed token verified with the IdP's keys or a shared secret (`jwt.rs`, keys
//!   from `jwks.rs`);
//! - `oauth2_server`: the gateway issues tokens itself (client credentials, `oauth2.rs`,
//!   keys from `signing.rs`) and verifies them.
//!
//! A provider answers at once ([`Check::Done`]) when it can — an API key always can — so a
//! route whose credentials are decided without waiting pays no allocation for the wait.

use super::consumers::ConsumerStore;
use super::credentials::{CredentialSource, Found};
use super::failure::{AuthOutcome, Scheme};
use super::identity::Identity;
use super::introspection::{
    check_introspection, IntrospectionConfig, IntrospectionFile, Introspector,
};
use super::jwks::JwksCache;
use super::jwt::{check_jwt, JwtConfig, JwtFile, JwtKeys, JwtVerifier, SharedKeys, Verdict};
use super::oauth2::{check_oauth2_server, OAuth2ServerConfig, OAuth2ServerFile, TokenEndpoint};
use super::signing::{SigningKeyError, SigningKeys};
use crate::concerns::Sections;
use crate::config::check::{header_op_name, Checker, Section};
use crate::config::source::{KeyPath, Seg};
use crate::config::REDACTED;
use crate::metrics::Metrics;
use crate::outbound::OutboundTlsError;
use crate::resources::ResourceCarry;
use http::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The kinds of provider, as a problem names them.
const KINDS: &str = "`api_key`, `jwt`, `oauth2_server` or `introspection`";

/// The longest API key read (longer ones are refused unread).
const MAX_API_KEY_BYTES: usize = 512;

/// The `auth_providers` section, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AuthProviders {
    pub(crate) providers: Vec<ProviderConfig>,
}

impl AuthProviders {
    pub(crate) fn find(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| &*p.name == name)
    }
}

/// One provider, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProviderConfig {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ProviderKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ProviderKind {
    ApiKey { sources: Vec<CredentialSource> },
    Jwt(Box<JwtConfig>),
    OAuth2Server(Box<OAuth2ServerConfig>),
    Introspection(Box<IntrospectionConfig>),
}

impl ProviderConfig {
    /// For `portico explain`: `keys (API key in header x-api-key)`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            ProviderKind::ApiKey { sources } => {
                let places: Vec<String> = sources.iter().map(CredentialSource::describe).collect();
                format!("{} (API key: {})", self.name, places.join(" or "))
            }
            ProviderKind::Jwt(jwt) => format!("{} ({})", self.name, jwt.describe()),
            ProviderKind::OAuth2Server(server) => format!("{} ({})", self.name, server.describe()),
            ProviderKind::Introspection(introspection) => {
                format!("{} ({})", self.name, introspection.describe())
            }
        }
    }
}

/// A provider as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderFile {
    /// Required, unique: what routes' `auth.providers` name.
    name: String,
    api_key: Option<ApiKeyFile>,
    jwt: Option<JwtFile>,
    oauth2_server: Option<OAuth2ServerFile>,
    introspection: Option<IntrospectionFile>,
}

/// `api_key:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyFile {
    /// Header the key is sent in. Default `x-api-key` (when `query` is not given).
    header: Option<String>,
    /// An auth scheme the header value starts with (`Authorization: ApiKey <key>`).
    scheme: Option<String>,
    /// Query parameter the key is sent in (looked at after the header).
    query: Option<String>,
}

impl Section for AuthProviders {
    const KEY: &'static str = "auth_providers";
    type File = Vec<ProviderFile>;

    /// Sizes and secrets are text even where YAML reads a number.
    fn wants_text(path: &[Seg]) -> bool {
        matches!(
            path,
            [Seg::Index(_), Seg::Key(kind), Seg::Key(key)]
                if (kind == "jwt" || kind == "introspection")
                    && matches!(key.as_str(), "max_token_size" | "secret" | "client_id" | "client_secret")
        )
    }

    fn redact_dump(value: &mut Value) {
        let Value::Array(providers) = value else {
            return;
        };
        for provider in providers {
            for (kind, key) in [("jwt", "secret"), ("introspection", "client_secret")] {
                if let Some(secret) = provider
                    .get_mut(kind)
                    .and_then(|section| section.get_mut(key))
                    .filter(|secret| !secret.is_null())
                {
                    *secret = Value::String(REDACTED.to_string());
                }
            }
        }
    }

    fn check(file: &Vec<ProviderFile>, path: &KeyPath, checker: &mut Checker<'_>) -> Option<Self> {
        let mut providers = Vec::with_capacity(file.len());
        let mut ok = true;
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut servers = 0;
        for (index, provider) in file.iter().enumerate() {
            let at = path.index(index);
            let name_ok = !provider.name.is_empty()
                && provider
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !name_ok {
                let message = format!(
                    "{:?} is not a provider name: letters, digits, `-`, `_` and `.`",
                    provider.name
                );
                checker.report(&at.key("name"), message);
                ok = false;
            } else if let Some(first) = names.insert(&provider.name, index) {
                let message = format!(
                    "duplicate provider name `{}` (also {path}[{first}])",
                    provider.name
                );
                checker.report(&at.key("name"), message);
                ok = false;
            }
            let kinds = [
                provider.api_key.is_some(),
                provider.jwt.is_some(),
                provider.oauth2_server.is_some(),
                provider.introspection.is_some(),
            ];
            let kind = match (
                &provider.api_key,
                &provider.jwt,
                &provider.oauth2_server,
                &provider.introspection,
            ) {
                _ if kinds.iter().filter(|k| **k).count() > 1 => {
                    checker.report(&at, format!("a provider has one kind: {KINDS}"));
                    None
                }
                (Some(api_key), ..) => check_api_key(api_key, &at.key("api_key"), checker),
                (_, Some(jwt), ..) => check_jwt(jwt, &at.key("jwt"), checker)
                    .map(|jwt| ProviderKind::Jwt(Box::new(jwt))),
                (.., Some(introspection)) => {
                    check_introspection(introspection, &at.key("introspection"), checker)
                        .map(|config| ProviderKind::Introspection(Box::new(config)))
                }
                (_, _, Some(server), _) => {
                    let at = at.key("oauth2_server");
                    if servers > 0 {
                        checker.report(&at, "only one provider can be the gateway's OAuth2 server");
                        None
                    } else {
                        servers += 1;
                        check_oauth2_server(server, &at, checker)
                            .map(|server| ProviderKind::OAuth2Server(Box::new(server)))
                    }
                }
                (None, None, None, None) => {
                    checker.report(&at, format!("a provider needs its kind: {KINDS}"));
                    None
                }
            };
            match kind {
                Some(kind) => providers.push(ProviderConfig {
                    name: Arc::from(provider.name.as_str()),
                    kind,
                }),
                None => ok = false,
            }
        }
        ok.then_some(AuthProviders { providers })
    }
}

fn check_api_key(
    file: &ApiKeyFile,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<ProviderKind> {
    let mut sources = Vec::new();
    let mut ok = true;
    let header = file
        .header
        .as_deref()
        .or(file.query.is_none().then_some("x-api-key"));
    if let Some(header) = header {
        match header_op_name(header, true) {
            Ok(name) => sources.push(CredentialSource::Header {
                name,
                scheme: file.scheme.as_deref().map(Box::from),
            }),
            Err(message) => {
                checker.report(&path.key("header"), message);
                ok = false;
            }
        }
    } else if file.scheme.is_some() {
        checker.report(
            &path.key("scheme"),
            "a scheme is read from a header: set `header` too",
        );
        ok = false;
    }
    if let Some(scheme) = &file.scheme {
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            checker.report(
                &path.key("scheme"),
                format!("{scheme:?} is not an auth scheme"),
            );
            ok = false;
        }
    }
    if let Some(query) = &file.query {
        if query.is_empty() || query.contains(['&', '=', '#', ' ']) {
            checker.report(
                &path.key("query"),
                format!("{query:?} is not a query parameter name"),
            );
            ok = false;
        } else {
            sources.push(CredentialSource::Query(query.as_str().into()));
        }
    }
    ok.then_some(ProviderKind::ApiKey { sources })
}

/// What a provider said about a credential.
pub(crate) enum Check {
    /// Decided.
    Done(Result<Arc<Identity>, AuthOutcome>),
    /// The provider must wait (for a key set, an introspection endpoint) before it can say.
    Wait,
}

/// A provider in a runtime.
pub(crate) struct Provider {
    name: Arc<str>,
    sources: Vec<CredentialSource>,
    kind: RuntimeKind,
}

enum RuntimeKind {
    ApiKey { consumers: Arc<ConsumerStore> },
    Jwt(Box<JwtVerifier>),
    Introspection(Box<Introspector>),
}

impl Provider {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The challenge for a request that should present this provider's credential.
    pub(crate) fn scheme(&self) -> Scheme {
        match &self.kind {
            RuntimeKind::ApiKey { .. } => {
                let (place, name) = self
                    .sources
                    .first()
                    .map_or(("header", "x-api-key"), CredentialSource::place);
                Scheme::ApiKey {
                    place,
                    name: name.into(),
                }
            }
            RuntimeKind::Jwt(_) | RuntimeKind::Introspection(_) => Scheme::Bearer,
        }
    }

    fn limit(&self) -> usize {
        match &self.kind {
            RuntimeKind::ApiKey { .. } => MAX_API_KEY_BYTES,
            RuntimeKind::Jwt(verifier) => verifier.max_token_bytes(),
            RuntimeKind::Introspection(introspector) => introspector.max_token_bytes(),
        }
    }

    pub(crate) fn sources(&self) -> &[CredentialSource] {
        &self.sources
    }

    /// The first of this provider's credentials in `req`, and the source it was found in.
    pub(crate) fn find<'r, B>(
        &self,
        req: &'r Request<B>,
    ) -> Option<(Found<'r>, &CredentialSource)> {
        let limit = self.limit();
        self.sources
            .iter()
            .find_map(|source| match source.find(req, limit) {
                Found::Nothing => None,
                found => Some((found, source)),
            })
    }

    /// Decide about `credential` now, if the provider can.
    pub(crate) fn check_now(&self, credential: &str) -> Check {
        match &self.kind {
            RuntimeKind::ApiKey { consumers } => {
                let directory = consumers.current();
                Check::Done(match directory.by_api_key(credential.as_bytes()) {
                    Some(consumer) => Ok(Arc::new(Identity::of_consumer(consumer.clone()))),
                    None => Err(AuthOutcome::UnknownCredential),
                })
            }
            RuntimeKind::Jwt(verifier) => match verifier.verify_now(credential) {
                Verdict::Done(result) => Check::Done(result),
                Verdict::NeedsKeys => Check::Wait,
            },
            RuntimeKind::Introspection(introspector) => match introspector.cached(credential) {
                Some(answer) => Check::Done(answer),
                None => Check::Wait,
            },
        }
    }

    /// Decide about `credential`, waiting for what the provider needs.
    pub(crate) async fn check(&self, credential: &str) -> Result<Arc<Identity>, AuthOutcome> {
        match &self.kind {
            RuntimeKind::Jwt(verifier) => verifier.verify(credential).await,
            RuntimeKind::Introspection(introspector) => introspector.introspect(credential).await,
            RuntimeKind::ApiKey { .. } => match self.check_now(credential) {
                Check::Done(result) => result,
                Check::Wait => Err(AuthOutcome::ProviderUnavailable),
            },
        }
    }
}

/// The auth state of one runtime: the consumers, and every provider ready to use.
pub(crate) struct AuthServices {
    pub(crate) consumers: Arc<ConsumerStore>,
    providers: HashMap<Arc<str>, Arc<Provider>>,
    /// Remote key sets, whose refreshers start with the runtime.
    pub(crate) key_sets: Vec<Arc<JwksCache>>,
    /// The gateway's token endpoint, when a provider is its OAuth2 server.
    pub(crate) token_endpoint: Option<Arc<TokenEndpoint>>,
    /// The token endpoint's key ring, refreshed on a timer with the runtime.
    pub(crate) signing: Vec<Arc<SigningKeys>>,
    pub(crate) metrics: Metrics,
}

/// Why the auth state could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthBuildError {
    #[error("cannot set up TLS for the identity provider {provider}")]
    Tls {
        provider: String,
        #[source]
        source: OutboundTlsError,
    },
    #[error("cannot use the signing keys of the OAuth2 server {provider}")]
    SigningKeys {
        provider: String,
        #[source]
        source: SigningKeyError,
    },
}

impl AuthServices {
    /// Build the providers of `sections`, carrying over the key sets of providers whose
    /// key source did not change.
    pub(crate) fn build(
        sections: &Sections,
        carry: &mut ResourceCarry<'_>,
        metrics: &Metrics,
    ) -> Result<AuthServices, AuthBuildError> {
        let consumers = Arc::new(ConsumerStore::new(&sections.consumers));
        let mut providers = HashMap::new();
        let mut key_sets = Vec::new();
        let mut signing = Vec::new();
        let mut token_endpoint = None;
        for config in &sections.auth_providers.providers {
            let (kind, sources) = match &config.kind {
                ProviderKind::ApiKey { sources } => (
                    RuntimeKind::ApiKey {
                        consumers: consumers.clone(),
                    },
                    sources.clone(),
                ),
                ProviderKind::Jwt(jwt) => {
                    let remote = match &jwt.keys {
                        JwtKeys::Remote(remote) => {
                            let cache = carry
                                .obtain("jwks", &config.name, remote, || {
                                    JwksCache::new(&config.name, remote, metrics)
                                })
                                .map_err(|source| AuthBuildError::Tls {
                                    provider: config.name.to_string(),
                                    source,
                                })?;
                            key_sets.push(cache.clone());
                            SharedKeys::Remote(cache)
                        }
                        _ => SharedKeys::None,
                    };
                    let verifier = JwtVerifier::new(jwt, remote, consumers.clone());
                    (RuntimeKind::Jwt(Box::new(verifier)), jwt.token_from.clone())
                }
                ProviderKind::Introspection(introspection) => {
                    let introspector = Introspector::new(introspection, consumers.clone())
                        .map_err(|source| AuthBuildError::Tls {
                            provider: config.name.to_string(),
                            source,
                        })?;
                    (
                        RuntimeKind::Introspection(Box::new(introspector)),
                        introspection.token_from.clone(),
                    )
                }
                ProviderKind::OAuth2Server(server) => {
                    let signing_error = |source| AuthBuildError::SigningKeys {
                        provider: config.name.to_string(),
                        source,
                    };
                    let keys = carry
                        .obtain("signing_keys", &config.name, &server.ring, || {
                            SigningKeys::open(&server.ring)
                        })
                        .map_err(signing_error)?;
                    // Carried keys are read again: a reload picks up keys added by hand.
                    keys.refresh().map_err(signing_error)?;
                    token_endpoint = Some(Arc::new(TokenEndpoint::new(
                        server,
                        keys.clone(),
                        consumers.clone(),
                        metrics,
                    )));
                    signing.push(keys.clone());
                    let verifier = JwtVerifier::new(
                        &server.verify,
                        SharedKeys::Gateway(keys),
                        consumers.clone(),
                    );
                    (
                        RuntimeKind::Jwt(Box::new(verifier)),
                        server.verify.token_from.clone(),
                    )
                }
            };
            providers.insert(
                config.name.clone(),
                Arc::new(Provider {
                    name: config.name.clone(),
                    sources,
                    kind,
                }),
            );
        }
        Ok(AuthServices {
            consumers,
            providers,
            key_sets,
            signing,
            token_endpoint,
            metrics: metrics.clone(),
        })
    }

    pub(crate) fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name)
    }

    /// No consumers and no providers (unit tests of layers).
    #[cfg(test)]
    pub(crate) fn empty() -> AuthServices {
        AuthServices {
            consumers: Arc::new(ConsumerStore::new(&Default::default())),
            providers: HashMap::new(),
            key_sets: Vec::new(),
            signing: Vec::new(),
            token_endpoint: None,
            metrics: Metrics::default(),
        }
    }
}
