//! TLS termination: certificates by SNI, ALPN, client certificates, cipher suites, handshake
//! timeout and live certificate reload.
//!
//! On the request path this is the first step of a connection on a listener with `tls:`:
//! the accept loop hands the raw socket to the connection's own task, which calls
//! [`TlsListener::handshake`] before anything else (never in the accept loop, so a slow
//! handshake delays nobody else). The decrypted stream then goes to the connection guard and
//! hyper exactly like a plaintext socket; the facts of the handshake (SNI, ALPN, version,
//! the verified client certificate) travel with the connection as [`TlsInfo`].
//!
//! A handshake:
//! 1. peeks at the first byte: anything but a TLS handshake record is `not_tls` (plaintext
//!    HTTP gets a JSON 400 from the caller, then the connection closes);
//! 2. reads the ClientHello, notes its server name, and when `unknown_sni: refuse` is set
//!    and no certificate covers the name, counts it as `unknown_sni` (rustls then refuses
//!    with an alert, because the resolver finds nothing);
//! 3. continues with the *current* `ServerConfig`, loaded from an `ArcSwap` once per
//!    handshake, so a certificate reload applies to new handshakes only and existing
//!    connections keep the session they have.
//!
//! All of it runs under the listener's handshake timeout. Every outcome is counted in
//! `portico_tls_handshakes_total` and logged at debug level, without secrets.
//!
//! Certificates reload when their files change (checked every `runtime.watch_interval`)
//! and on SIGHUP ([`CertificateReloader`]); a file that does not load is refused with a log
//! line and a metric, and the previous certificates keep serving.

use crate::config::model::{ClientAuthMode, ListenerTls, TlsVersion, UnknownSni};
use crate::metrics::{CertificateExpiry, HandshakeOutcome, TlsMetrics};
use crate::pki::{self, PemError};
use arc_swap::ArcSwap;
use http::HeaderValue;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a listener's certificates could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    /// A file could not be read or holds no usable PEM data.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A private key does not belong to its certificate.
    #[error("{key} cannot be used with {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client CA bundle holds something that cannot be a trust anchor.
    #[error("the client CA bundle cannot be used")]
    ClientCa(#[source] rustls::Error),
    /// Client certificate verification could not be set up.
    #[error("cannot set up client certificate verification")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the resulting configuration.
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
    /// The task that reads the files stopped before it finished.
    #[error("the certificate loader stopped")]
    Loader(#[source] tokio::task::JoinError),
}

/// What a handshake established, kept with the connection.
#[derive(Debug, Clone)]
pub(crate) struct TlsInfo {
    /// The server name the client asked for (lowercase).
    pub(crate) sni: Option<Box<str>>,
    /// The ALPN protocol agreed (`h2`, `http/1.1`), if any.
    pub(crate) alpn: Option<Box<[u8]>>,
    pub(crate) tls13: bool,
    /// The client presented a certificate that verified against the listener's CA.
    pub(crate) client_verified: bool,
    /// `Subject="…";DNS=…;URI=…;IP=…;Email=…` of that certificate, computed only when the
    /// listener forwards it upstream.
    pub(crate) client_identity: Option<HeaderValue>,
}

/// How a handshake attempt ended, for the connection task.
pub(crate) enum Handshake {
    Done(Box<TlsStream<TcpStream>>, TlsInfo),
    /// The client sent plaintext HTTP: the socket is returned untouched, for a 400 answer.
    PlainHttp(TcpStream),
    /// Counted and logged already; drop the connection.
    Failed,
}

/// Chooses the certificate for a ClientHello: exact name, then the wildcard of the name's
/// parent (`*.example.com` covers `a.example.com`, not `a.b.example.com`, as in RFC 6125),
/// then — unless unknown names are refused — the first certificate. A client that sends no
/// SNI at all (it connected by IP address) always gets the first certificate.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    refuse_unknown: bool,
}

impl SniResolver {
    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.');
        if let Some(found) = self.exact.get(name) {
            return Some(found);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    fn knows(&self, name: &str) -> bool {
        self.lookup(&name.to_ascii_lowercase()).is_some()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        // rustls hands over the name already lowercased.
        match self.lookup(name) {
            Some(found) => Some(found.clone()),
            None if self.refuse_unknown => None,
            None => Some(self.default.clone()),
        }
    }
}

/// One build of a listener's TLS settings.
struct Loaded {
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    expiry: Vec<CertificateExpiry>,
}

/// The bytes of every file a listener's TLS settings name, in a fixed order: what the
/// file watch compares, and what a build parses.
struct Files {
    /// (cert, key) per certificate.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    client_ca: Option<Vec<u8>>,
}

impl Files {
    fn read(settings: &ListenerTls) -> Result<Files, PemError> {
        let mut pairs = Vec::with_capacity(settings.certificates.len());
        for source in &settings.certificates {
            pairs.push((pki::read_file(&source.cert)?, pki::read_file(&source.key)?));
        }
        let client_ca = match (&settings.client_auth.ca, settings.client_auth.mode) {
            (Some(ca), mode) if mode != ClientAuthMode::None => Some(pki::read_file(ca)?),
            _ => None,
        };
        Ok(Files { pairs, client_ca })
    }

    /// A cheap, collision-free summary: every file's length and contents.
    fn fingerprint(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let parts = self
            .pairs
            .iter()
            .flat_map(|(cert, key)| [cert, key])
            .chain(self.client_ca.iter());
        for part in parts {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

fn build(settings: &ListenerTls, files: &Files) -> Result<Loaded, TlsLoadError> {
    let provider = match &settings.cipher_suites {
        Some(suites) => pki::crypto_provider_with(suites),
        None => pki::crypto_provider(),
    };
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    let mut expiry = Vec::with_capacity(settings.certificates.len());
    for (index, (source, (cert_pem, key_pem))) in
        settings.certificates.iter().zip(&files.pairs).enumerate()
    {
        let chain = pki::parse_certificates(cert_pem, &source.cert)?;
        let key = pki::parse_private_key(key_pem, &source.key)?;
        let facts = pki::inspect(&chain[0]).map_err(|source_error| PemError::Der {
            path: source.cert.clone(),
            source: source_error,
        })?;
        let certified = Arc::new(pki::certified_key(chain, key).map_err(|error| {
            TlsLoadError::KeyMismatch {
                cert: source.cert.display().to_string(),
                key: source.key.display().to_string(),
                source: error,
            }
        })?);
        let names = if source.server_names.is_empty() {
            &facts.dns_names
        } else {
            &source.server_names
        };
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_string()),
                None => exact.entry(name.clone()),
            }
            .or_insert_with(|| certified.clone());
        }
        expiry.push(CertificateExpiry {
            index,
            name: facts.display_name().to_string(),
            not_after: facts.not_after,
        });
        default.get_or_insert(certified);
    }
    let Some(default) = default else {
        // Validation requires at least one certificate; an empty list cannot reach here.
        return Err(TlsLoadError::Config(rustls::Error::General(
            "no certificates configured".into(),
        )));
    };
    let resolver = Arc::new(SniResolver {
        exact,
        wildcard,
        default,
        refuse_unknown: settings.unknown_sni == UnknownSni::Refuse,
    });

    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(TlsLoadError::Config)?;
    let builder = match (&files.client_ca, &settings.client_auth.ca) {
        (Some(pem), Some(path)) => {
            let cas = pki::parse_certificates(pem, path)?;
            let roots = pki::root_store(cas).map_err(TlsLoadError::ClientCa)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_auth.mode {
                ClientAuthMode::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder
                .with_client_cert_verifier(verifier.build().map_err(TlsLoadError::ClientVerifier)?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    // An operator who lists suites states an order of preference; without this rustls would
    // follow the client's (so a client preferring AES-256 would get it over a listed AES-128
    // first). The defaults keep the client's order: a client without AES hardware may
    // rightly prefer ChaCha20.
    config.ignore_client_order = settings.cipher_suites.is_some();
    // HTTP/2 first: hyper-util's auto builder serves whichever the client picked.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        resolver,
        expiry,
    })
}

/// What a reload did to one listener (an error means the new files were refused and the
/// previous certificates keep serving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadOutcome {
    /// The files are byte-for-byte what was loaded last; nothing rebuilt.
    Unchanged,
    /// New certificates are in use for new handshakes.
    Swapped,
}

/// A TLS listener's live state: the current rustls config, swapped on reload.
pub(crate) struct TlsListener {
    name: Arc<str>,
    settings: ListenerTls,
    current: ArcSwap<ServerConfig>,
    resolver: ArcSwap<SniResolver>,
    /// Fingerprint of the files at the last load attempt (successful or not), so a broken
    /// file is reported once, not at every check.
    seen: Mutex<Vec<u8>>,
    metrics: Arc<TlsMetrics>,
}

impl TlsListener {
    /// Load the certificates; an error here stops the gateway from starting.
    pub(crate) fn new(
        name: &str,
        settings: &ListenerTls,
        metrics: Arc<TlsMetrics>,
    ) -> Result<TlsListener, TlsLoadError> {
        let files = Files::read(settings)?;
        let loaded = build(settings, &files)?;
        metrics.reloaded(loaded.expiry);
        Ok(TlsListener {
            name: name.into(),
            settings: settings.clone(),
            current: ArcSwap::new(loaded.config),
            resolver: ArcSwap::new(loaded.resolver),
            seen: Mutex::new(files.fingerprint()),
            metrics,
        })
    }

    /// Re-read the files and swap in new certificates. With `force`, rebuild even when the
    /// files look unchanged (SIGHUP).
    pub(crate) async fn reload(
        self: &Arc<Self>,
        force: bool,
    ) -> Result<ReloadOutcome, TlsLoadError> {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || this.reload_blocking(force))
            .await
            .map_err(TlsLoadError::Loader)?;
        match &result {
            Ok(ReloadOutcome::Swapped) => {
                tracing::info!(listener = %self.name, "TLS certificates reloaded");
            }
            Ok(_) => {}
            Err(error) => {
                self.metrics.reload_refused();
                tracing::error!(
                    listener = %self.name,
                    error = %error,
                    cause = ?std::error::Error::source(error).map(|s| s.to_string()),
                    "new TLS certificates refused; the previous ones keep serving"
                );
            }
        }
        result
    }

    fn reload_blocking(&self, force: bool) -> Result<ReloadOutcome, TlsLoadError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = match Files::read(&self.settings) {
            Ok(files) => files,
            Err(error) => {
                // Remember the failure so it is reported once until something changes.
                let marker = format!("unreadable: {error}").into_bytes();
                if !force && *seen == marker {
                    return Ok(ReloadOutcome::Unchanged);
                }
                *seen = marker;
                return Err(error.into());
            }
        };
        let fingerprint = files.fingerprint();
        if !force && *seen == fingerprint {
            return Ok(ReloadOutcome::Unchanged);
        }
        *seen = fingerprint;
        let loaded = build(&self.settings, &files)?;
        self.current.store(loaded.config);
        self.resolver.store(loaded.resolver);
        self.metrics.reloaded(loaded.expiry);
        Ok(ReloadOutcome::Swapped)
    }

    /// Run a handshake on an accepted socket, within the handshake timeout.
    pub(crate) async fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Handshake {
        let timeout = self.settings.handshake_timeout;
        let result = tokio::time::timeout(timeout, self.handshake_inner(stream)).await;
        let outcome = match result {
            Ok(Ok((stream, info))) => {
                self.metrics.handshake(HandshakeOutcome::Success);
                self.metrics.negotiated(info.tls13);
                tracing::debug!(
                    listener = %self.name,
                    peer = %peer,
                    sni = info.sni.as_deref().unwrap_or(""),
                    tls13 = info.tls13,
                    alpn = %String::from_utf8_lossy(info.alpn.as_deref().unwrap_or(b"")),
                    client_certificate = info.client_verified,
                    "TLS handshake complete"
                );
                return Handshake::Done(stream, info);
            }
            Ok(Err(Failure::PlainHttp(stream))) => {
                self.metrics.handshake(HandshakeOutcome::NotTls);
                tracing::info!(listener = %self.name, peer = %peer, "plain HTTP on a TLS listener; answering 400");
                return Handshake::PlainHttp(stream);
            }
            Ok(Err(Failure::Refused(outcome, error))) => {
                tracing::debug!(
                    listener = %self.name,
                    peer = %peer,
                    outcome = outcome.label(),
                    error = %error,
                    "TLS handshake failed"
                );
                outcome
            }
            Err(_) => {
                tracing::debug!(listener = %self.name, peer = %peer, timeout = ?timeout, "TLS handshake timed out");
                HandshakeOutcome::Timeout
            }
        };
        self.metrics.handshake(outcome);
        Handshake::Failed
    }

    async fn handshake_inner(
        &self,
        stream: TcpStream,
    ) -> Result<(Box<TlsStream<TcpStream>>, TlsInfo), Failure> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => {
                return Err(Failure::Refused(
                    HandshakeOutcome::Closed,
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(_) if first[0] == TLS_HANDSHAKE_RECORD => {}
            Ok(_) if first[0].is_ascii_uppercase() => return Err(Failure::PlainHttp(stream)),
            Ok(_) => {
                return Err(Failure::Refused(
                    HandshakeOutcome::NotTls,
                    std::io::Error::other("the first byte is not a TLS handshake record"),
                ))
            }
            Err(error) => return Err(Failure::Refused(HandshakeOutcome::Closed, error)),
        }
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
            .await
            .map_err(|error| Failure::Refused(classify(&error), error))?;
        let sni = start
            .client_hello()
            .server_name()
            .map(|name| name.to_ascii_lowercase().into_boxed_str());
        let unknown = match &sni {
            Some(name) => {
                self.settings.unknown_sni == UnknownSni::Refuse && !self.resolver.load().knows(name)
            }
            None => false,
        };
        let stream = start
            .into_stream(self.current.load_full())
            .await
            .map_err(|error| {
                let outcome = if unknown {
                    HandshakeOutcome::UnknownSni
                } else {
                    classify(&error)
                };
                Failure::Refused(outcome, error)
            })?;
        let connection = stream.get_ref().1;
        let peer_certificate = connection.peer_certificates().and_then(|c| c.first());
        let forwards = self.settings.client_auth.forward_header.is_some();
        let info = TlsInfo {
            sni,
            alpn: connection.alpn_protocol().map(Box::from),
            tls13: connection.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
            client_verified: peer_certificate.is_some(),
            client_identity: peer_certificate
                .filter(|_| forwards)
                .and_then(|der| pki::inspect(der).ok())
                .and_then(|facts| client_identity(&facts)),
        };
        Ok((Box::new(stream), info))
    }
}

enum Failure {
    PlainHttp(TcpStream),
    Refused(HandshakeOutcome, std::io::Error),
}

/// Map a handshake error (tokio-rustls wraps rustls errors in `io::Error`) to its class.
fn classify(error: &std::io::Error) -> HandshakeOutcome {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::NoCertificatesPresented) => HandshakeOutcome::NoClientCert,
        Some(rustls::Error::InvalidCertificate(_)) => HandshakeOutcome::BadClientCert,
        Some(rustls::Error::PeerIncompatible(_)) => HandshakeOutcome::Incompatible,
        Some(rustls::Error::AlertReceived(_)) => HandshakeOutcome::ClientAlert,
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. },
        ) => HandshakeOutcome::BadMessage,
        Some(_) => HandshakeOutcome::Other,
        None => match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => HandshakeOutcome::Closed,
            _ => HandshakeOutcome::Other,
        },
    }
}

/// The forwarded client identity, in the spirit of Envoy's `x-forwarded-client-cert`:
/// `Subject="CN=client,O=Acme";DNS=a.example.com;URI=spiffe://…;IP=10.0.0.1;Email=…`.
fn client_identity(facts: &pki::CertFacts) -> Option<HeaderValue> {
    let mut out = String::with_capacity(128);
    out.push_str("Subject=\"");
    for ch in facts.subject.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    let texts = [
        ("DNS", &facts.dns_names),
        ("URI", &facts.uris),
        ("Email", &facts.emails),
    ];
    for (label, values) in texts {
        for value in values {
            // SAN strings are IA5 (ASCII); drop anything that could break the header's
            // `;`-separated shape.
            let clean: String = value
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != ';' && *c != '"')
                .collect();
            let _ = write!(out, ";{label}={clean}");
        }
    }
    for ip in &facts.ips {
        let _ = write!(out, ";IP={ip}");
    }
    HeaderValue::from_str(&out).ok()
}

/// The result of the latest certificate check across all TLS listeners.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CertReloadStatus {
    /// Checks so far (file-watch ticks that found a change, SIGHUPs, direct calls).
    pub checks: u64,
    /// Listener configs swapped in so far.
    pub swaps: u64,
    /// Loads refused so far.
    pub failures: u64,
    /// The last refusal, if the latest check had one.
    pub last_error: Option<String>,
}

/// Reloads every TLS listener's certificates; shared by the file watch, SIGHUP and tests.
#[derive(Clone)]
pub struct CertificateReloader {
    listeners: Arc<Vec<Arc<TlsListener>>>,
    status: Arc<watch::Sender<CertReloadStatus>>,
    /// One check at a time.
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl CertificateReloader {
    pub(crate) fn new(listeners: Vec<Arc<TlsListener>>) -> CertificateReloader {
        CertificateReloader {
            listeners: Arc::new(listeners),
            status: Arc::new(watch::channel(CertReloadStatus::default()).0),
            busy: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The status of the latest check, updated after each one.
    pub fn subscribe(&self) -> watch::Receiver<CertReloadStatus> {
        self.status.subscribe()
    }

    /// Check every listener's files; with `force`, rebuild even unchanged ones (SIGHUP).
    /// Returns how many listeners got new certificates.
    pub async fn reload(&self, force: bool) -> Result<usize, TlsLoadError> {
        let _one_at_a_time = self.busy.lock().await;
        let mut swapped = 0;
        let mut failed = None;
        let mut refused = 0;
        let mut changed = false;
        for listener in self.listeners.iter() {
            match listener.reload(force).await {
                Ok(ReloadOutcome::Swapped) => {
                    swapped += 1;
                    changed = true;
                }
                Ok(ReloadOutcome::Unchanged) => {}
                Err(error) => {
                    refused += 1;
                    changed = true;
                    failed.get_or_insert(error);
                }
            }
        }
        if changed || force {
            self.status.send_modify(|status| {
                status.checks += 1;
                status.swaps += swapped as u64;
                status.failures += refused;
                status.last_error = failed.as_ref().map(|e| {
                    let cause = std::error::Error::source(e)
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default();
                    format!("{e}{cause}")
                });
            });
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(swapped),
        }
    }

    /// Watch the files every `interval` (when set) and reload on SIGHUP, until `stop`.
    pub(crate) fn spawn_watchers(&self, interval: Option<Duration>, stop: watch::Receiver<bool>) {
        if self.listeners.is_empty() {
            return;
        }
        let on_hangup = self.clone();
        crate::lifecycle::on_each_hangup("certificates", stop.clone(), move || {
            let reloader = on_hangup.clone();
            async move {
                let _ = reloader.reload(true).await;
            }
        });
        if let Some(interval) = interval {
            let reloader = self.clone();
            crate::lifecycle::on_each_tick(interval, stop, move || {
                let reloader = reloader.clone();
                async move {
                    let _ = reloader.reload(false).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn certified(names: &[&str]) -> Arc<CertifiedKey> {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key");
        Arc::new(pki::certified_key(vec![cert.der().clone()], key_der).expect("certified"))
    }

    #[test]
    fn sni_lookup_exact_then_one_level_wildcard() {
        let a = certified(&["a.example.com"]);
        let wild = certified(&["*.example.com"]);
        let resolver = SniResolver {
            exact: HashMap::from([("a.example.com".to_string(), a.clone())]),
            wildcard: HashMap::from([("example.com".to_string(), wild.clone())]),
            default: a.clone(),
            refuse_unknown: true,
        };
        assert!(Arc::ptr_eq(
            resolver.lookup("a.example.com").expect("a"),
            &a
        ));
        assert!(Arc::ptr_eq(
            resolver.lookup("b.example.com").expect("b"),
            &wild
        ));
        assert!(resolver.lookup("x.b.example.com").is_none());
        assert!(resolver.lookup("example.com").is_none());
        assert!(resolver.knows("B.Example.com"));
    }

    #[test]
    fn client_identity_header_shape() {
        let facts = pki::CertFacts {
            not_after: 0,
            subject: "CN=client,O=Acme \"x\"".into(),
            dns_names: vec!["client.example.com".into()],
            uris: vec!["spiffe://example.org/a;b".into()],
            ips: vec!["10.0.0.1".parse().expect("ip")],
            emails: vec![],
        };
        let value = client_identity(&facts).expect("valid header");
        assert_eq!(
            value,
            "Subject=\"CN=client,O=Acme \\\"x\\\"\";DNS=client.example.com;URI=spiffe://example.org/ab;IP=10.0.0.1"
        );
    }
}
