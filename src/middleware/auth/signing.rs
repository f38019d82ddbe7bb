//! The gateway's own signing keys: the key ring of the OAuth2 token endpoint.
//!
//! Off the request path except for one lock-free load per issued or verified token. Keys are
//! files in a directory (`oauth2_server.signing_keys`), one PKCS#8 PEM per key, named
//! `<unix-milliseconds>-<kid>.pem` (mode 0600): they survive restarts, and instances that share
//! the directory share the keys. The ring's rules, all from the keys' creation times:
//! - a key is **published** (in `/.well-known/jwks.json`) from the moment it exists, and
//!   **signs** only `publish_ahead` later, so that every verifier caching the key set has seen
//!   it before the first token it signs arrives;
//! - the signer is the newest key old enough to sign (with a fresh directory, the only key
//!   signs at once);
//! - a key stays published until every token it signed has expired: until the key after it
//!   has signed for longer than the token lifetime; then its file is removed;
//! - when the signer is `rotate_every` old, a new key is made (published now, signing after
//!   `publish_ahead`), so rotation never invalidates an unexpired token.
//!
//! The ring is read again from the directory on every config reload and on a timer, so a key
//! added by `portico keys signing-key` or by another instance is picked up.

use super::jwks::KeySet;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

/// How often the ring looks at its directory and its rotation schedule.
const TICK: Duration = Duration::from_secs(5);

/// The algorithms the gateway signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256 (the default).
    Es256,
    /// Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::Es256 => Algorithm::ES256,
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }

    /// `ES256` or `EdDSA`.
    pub fn parse(text: &str) -> Option<SigningAlgorithm> {
        match text {
            "ES256" => Some(SigningAlgorithm::Es256),
            "EdDSA" => Some(SigningAlgorithm::EdDsa),
            _ => None,
        }
    }
}

/// Why a signing key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The directory or a key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A key file is not a key of a supported kind.
    #[error("{}: not a PKCS#8 P-256 or Ed25519 private key", .0.display())]
    BadKey(PathBuf),
    /// The random source failed.
    #[error("the operating system's random source failed")]
    Random,
}

/// The ring's schedule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RingSettings {
    pub(crate) dir: PathBuf,
    pub(crate) algorithm: SigningAlgorithm,
    pub(crate) token_lifetime: Duration,
    /// `None`: keys are only ever added by hand.
    pub(crate) rotate_every: Option<Duration>,
    pub(crate) publish_ahead: Duration,
}

/// One key of the ring.
struct SigningKey {
    kid: String,
    /// Milliseconds since the epoch (so that keys made within one second still have an
    /// order).
    created: u64,
    algorithm: Algorithm,
    encoding: EncodingKey,
    public_jwk: Value,
    path: PathBuf,
}

/// The keys as last read, and what follows from them.
pub(crate) struct Ring {
    keys: Vec<Arc<SigningKey>>,
    /// `/.well-known/jwks.json`, made once per change.
    pub(crate) jwks: bytes::Bytes,
    /// The published keys, for verifying the gateway's own tokens.
    pub(crate) verify: KeySet,
    signer: Option<Arc<SigningKey>>,
}

impl Ring {
    fn new(mut keys: Vec<Arc<SigningKey>>, settings: &RingSettings, now: u64) -> Ring {
        keys.sort_by(|a, b| (a.created, &a.kid).cmp(&(b.created, &b.kid)));
        let ahead = millis(settings.publish_ahead);
        let signer = keys
            .iter()
            .rev()
            .find(|key| key.created.saturating_add(ahead) <= now)
            .or_else(|| keys.first())
            .cloned();
        let published: Vec<&Arc<SigningKey>> = keys
            .iter()
            .filter(|key| !retired(&keys, key, settings, now))
            .collect();
        let document = json!({
            "keys": published.iter().map(|key| key.public_jwk.clone()).collect::<Vec<_>>()
        });
        let jwks = bytes::Bytes::from(document.to_string());
        let verify = KeySet::parse(&jwks).unwrap_or_else(|_| KeySet::empty());
        Ring {
            keys,
            jwks,
            verify,
            signer,
        }
    }

    /// Sign `claims` with the current signer: `None` without a key.
    pub(crate) fn sign(&self, claims: &Value) -> Option<String> {
        let key = self.signer.as_ref()?;
        let mut header = jsonwebtoken::Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        // RFC 9068: an access token.
        header.typ = Some(String::from("at+jwt"));
        jsonwebtoken::encode(&header, claims, &key.encoding).ok()
    }

    #[cfg(test)]
    fn published_kids(&self) -> Vec<String> {
        let document: Value = serde_json::from_slice(&self.jwks).unwrap_or_default();
        document["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A key is retired once the key after it has been signing for longer than a token lives
/// (plus the activation delay): nothing it signed can still be valid.
fn retired(keys: &[Arc<SigningKey>], key: &SigningKey, settings: &RingSettings, now: u64) -> bool {
    let ahead = millis(settings.publish_ahead);
    let lifetime = millis(settings.token_lifetime);
    keys.iter()
        .filter(|other| (other.created, &other.kid) > (key.created, &key.kid))
        .filter(|other| other.created.saturating_add(ahead) <= now)
        .any(|successor| {
            successor
                .created
                .saturating_add(ahead)
                .saturating_add(lifetime)
                // A minute of grace for clocks and in-flight requests.
                .saturating_add(60_000)
                < now
        })
}

/// The key ring of one token endpoint: a runtime resource, carried across reloads.
pub(crate) struct SigningKeys {
    settings: RingSettings,
    ring: arc_swap::ArcSwap<Ring>,
    /// One refresh at a time.
    refreshing: Mutex<()>,
    started: AtomicBool,
}

impl SigningKeys {
    /// Read the directory (making it, and a first key, if there is none).
    pub(crate) fn open(settings: &RingSettings) -> Result<SigningKeys, SigningKeyError> {
        let keys = SigningKeys {
            settings: settings.clone(),
            ring: arc_swap::ArcSwap::from_pointee(Ring::new(Vec::new(), settings, 0)),
            refreshing: Mutex::new(()),
            started: AtomicBool::new(false),
        };
        keys.refresh()?;
        Ok(keys)
    }

    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Ring>> {
        self.ring.load()
    }

    /// Read the directory again, make a key if rotation is due, remove retired key files.
    /// Blocking file I/O: run it off the async workers.
    pub(crate) fn refresh(&self) -> Result<(), SigningKeyError> {
        let _one = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = now_millis();
        let mut keys = read_dir(&self.settings.dir)?;
        let newest = keys.iter().map(|key| key.created).max();
        let due = match (newest, self.settings.rotate_every) {
            (None, _) => true,
            // The newest key is `rotate_every` old: its successor is made now and signs
            // `publish_ahead` later, so each key signs for `rotate_every`.
            (Some(created), Some(every)) => now >= created.saturating_add(millis(every)),
            (Some(_), None) => false,
        };
        if due {
            let path = write_new_key(&self.settings.dir, self.settings.algorithm, now)?;
            tracing::info!(path = %path.display(), "made a new signing key");
            keys = read_dir(&self.settings.dir)?;
        }
        let ring = Ring::new(keys, &self.settings, now);
        for key in &ring.keys {
            if retired(&ring.keys, key, &self.settings, now) {
                // Best effort: a file that cannot be removed is only no longer published.
                if std::fs::remove_file(&key.path).is_ok() {
                    tracing::info!(kid = %key.kid, "removed a retired signing key");
                }
            }
        }
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// Refresh on a timer for as long as the ring lives (needs the Tokio runtime).
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<SigningKeys> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let Some(keys) = weak.upgrade() else {
                    return;
                };
                let result = tokio::task::spawn_blocking(move || keys.refresh()).await;
                if let Ok(Err(error)) = result {
                    tracing::warn!(error = %error, "cannot refresh the signing keys; the keys read before stay in use");
                }
            }
        });
    }
}

/// Make a new signing key in `dir` (created if missing) and return its file. What
/// `portico keys signing-key` does; a running gateway picks the key up on its next refresh.
pub fn new_signing_key(
    dir: &Path,
    algorithm: SigningAlgorithm,
) -> Result<PathBuf, SigningKeyError> {
    write_new_key(dir, algorithm, now_millis())
}

fn write_new_key(
    dir: &Path,
    algorithm: SigningAlgorithm,
    now: u64,
) -> Result<PathBuf, SigningKeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SigningKeyError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let rng = SystemRandom::new();
    let pkcs8 = match algorithm {
        SigningAlgorithm::Es256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        }
        SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
    }
    .map_err(|_| SigningKeyError::Random)?;
    let mut kid_bytes = [0u8; 9];
    ring::rand::SecureRandom::fill(&rng, &mut kid_bytes).map_err(|_| SigningKeyError::Random)?;
    let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kid_bytes);
    let path = dir.join(format!("{now}-{kid}.pem"));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    // Written whole under a temporary name, then renamed: another instance reading the
    // directory never sees half a key.
    let temporary = dir.join(format!(".{now}-{kid}.tmp"));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io(&temporary))?;
        file.write_all(pem.as_bytes()).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
    }
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    Ok(path)
}

/// Every key in `dir`; files that are not keys of the ring's naming are ignored, a key file
/// that does not parse is an error.
fn read_dir(dir: &Path) -> Result<Vec<Arc<SigningKey>>, SigningKeyError> {
    let io = |source| SigningKeyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(error)),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((created, kid)) = name
            .strip_suffix(".pem")
            .and_then(|stem| stem.split_once('-'))
            .and_then(|(created, kid)| Some((created.parse::<u64>().ok()?, kid.to_string())))
        else {
            continue;
        };
        keys.push(Arc::new(load_key(&path, created, kid)?));
    }
    Ok(keys)
}

fn load_key(path: &Path, created: u64, kid: String) -> Result<SigningKey, SigningKeyError> {
    let bad = || SigningKeyError::BadKey(path.to_path_buf());
    let der = match crate::pki::read_private_key(path) {
        Ok(PrivateKeyDer::Pkcs8(der)) => der.secret_pkcs8_der().to_vec(),
        _ => return Err(bad()),
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let rng = SystemRandom::new();
    if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng) {
        // An uncompressed point: 0x04, then x and y.
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..).ok_or_else(bad)?.split_at(32);
        return Ok(SigningKey {
            public_jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y),
                               "kid": kid, "alg": "ES256", "use": "sig"}),
            kid,
            created,
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&der),
            path: path.to_path_buf(),
        });
    }
    if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
        return Ok(SigningKey {
            public_jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref()),
                               "kid": kid, "alg": "EdDSA", "use": "sig"}),
            kid,
            created,
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&der),
            path: path.to_path_buf(),
        });
    }
    Err(bad())
}

/// Milliseconds since the epoch.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> RingSettings {
        RingSettings {
            dir: dir.to_path_buf(),
            algorithm: SigningAlgorithm::Es256,
            token_lifetime: Duration::from_secs(600),
            rotate_every: None,
            publish_ahead: Duration::from_secs(3600),
        }
    }

    fn key_at(dir: &Path, created: u64, algorithm: SigningAlgorithm) -> Arc<SigningKey> {
        let path = write_new_key(dir, algorithm, created).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let kid = name
            .trim_end_matches(".pem")
            .split_once('-')
            .unwrap()
            .1
            .to_string();
        Arc::new(load_key(&path, created, kid).unwrap())
    }

    #[test]
    fn a_new_key_is_published_first_signs_later_and_the_old_one_retires_after_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let old = key_at(dir.path(), 1_000_000_000, SigningAlgorithm::Es256);
        let new = key_at(dir.path(), 2_000_000_000, SigningAlgorithm::EdDsa);
        let keys = vec![old.clone(), new.clone()];
        let signer = |now| {
            Ring::new(keys.clone(), &settings, now)
                .signer
                .unwrap()
                .kid
                .clone()
        };

        // Just made: published, but the old key still signs.
        let ring = Ring::new(keys.clone(), &settings, 2_000_010_000);
        assert_eq!(ring.published_kids(), [old.kid.clone(), new.kid.clone()]);
        assert_eq!(signer(2_000_010_000), old.kid);
        // An hour later (publish_ahead) the new key signs; the old one is still published
        // for the tokens it signed.
        assert_eq!(signer(2_003_600_000), new.kid);
        let ring = Ring::new(keys.clone(), &settings, 2_003_600_000 + 600_000);
        assert_eq!(ring.published_kids().len(), 2);
        // Once those tokens have expired (plus a minute), the old key retires.
        let ring = Ring::new(keys.clone(), &settings, 2_003_600_000 + 600_000 + 61_000);
        assert_eq!(ring.published_kids(), std::slice::from_ref(&new.kid));
    }

    #[test]
    fn keys_sign_tokens_that_their_published_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
            let key = key_at(dir.path(), 5, algorithm);
            let ring = Ring::new(vec![key.clone()], &settings(dir.path()), 6);
            let token = ring
                .sign(&json!({"sub": "x", "exp": 9_999_999_999u64}))
                .unwrap();
            let keys = ring
                .verify
                .candidates(Some(&key.kid), algorithm.jwt())
                .unwrap();
            let mut validation = jsonwebtoken::Validation::new(algorithm.jwt());
            validation.validate_aud = false;
            let claims = jsonwebtoken::decode::<Value>(&token, keys[0], &validation).unwrap();
            assert_eq!(claims.claims["sub"], "x");
        }
    }

    #[test]
    fn an_empty_directory_gets_a_key_and_rotation_adds_the_next_ahead_of_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(&dir.path().join("keys"));
        let keys = SigningKeys::open(&settings).unwrap();
        assert!(
            keys.current().sign(&json!({"sub": "a"})).is_some(),
            "signs at once"
        );
        assert_eq!(keys.current().published_kids().len(), 1);
        // Not due: nothing new.
        settings.rotate_every = Some(Duration::from_secs(30 * 24 * 3600));
        let keys = SigningKeys::open(&settings).unwrap();
        assert_eq!(keys.current().published_kids().len(), 1);
        // Due: the newest key is older than rotate_every, so its successor is made.
        let other = tempfile::tempdir().unwrap();
        settings.dir = other.path().to_path_buf();
        write_new_key(
            &settings.dir,
            SigningAlgorithm::Es256,
            now_millis() - 100_000,
        )
        .unwrap();
        settings.rotate_every = Some(Duration::from_secs(50));
        let keys = SigningKeys::open(&settings).unwrap();
        assert_eq!(keys.current().published_kids().len(), 2);
    }
}
