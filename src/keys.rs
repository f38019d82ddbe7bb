//! `portico keys`: make API keys and client secrets, and the digests the config stores.
//!
//! Off the request path entirely. A key is 256 bits from the operating system's random
//! source, base64url-encoded behind a readable prefix (`pk_…` for API keys, `sk_…` for client
//! secrets), so that a leaked key is recognisable in a scan. The config holds only its
//! SHA-256 digest (`sha256:<hex>`), which is what the gateway looks a presented key up by.
//!
//! It also adds signing keys to the OAuth2 token endpoint's key ring ([`new_signing_key`]):
//! the key is published at once and signs `publish_ahead` later.

use crate::middleware::auth::consumers::Digest;
pub use crate::middleware::auth::signing::{new_signing_key, SigningAlgorithm, SigningKeyError};
use base64::Engine as _;

/// What a credential is for: it picks the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An API key (`pk_…`).
    ApiKey,
    /// An OAuth2 client secret (`sk_…`).
    ClientSecret,
}

/// A new random credential and its digest.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Give this to the consumer; it is not stored anywhere.
    pub key: String,
    /// Put this in the config.
    pub digest: String,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError;

/// Make a new credential of `kind`.
pub fn new_key(kind: KeyKind) -> Result<NewKey, RandomError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| RandomError)?;
    let prefix = match kind {
        KeyKind::ApiKey => "pk_",
        KeyKind::ClientSecret => "sk_",
    };
    let key = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = digest(&key);
    Ok(NewKey { key, digest })
}

/// The digest of a credential as the config stores it: `sha256:<64 hex digits>`.
pub fn digest(credential: &str) -> String {
    Digest::of(credential.as_bytes()).to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_random_prefixed_and_match_their_digest() {
        let a = new_key(KeyKind::ApiKey).unwrap();
        let b = new_key(KeyKind::ApiKey).unwrap();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("pk_") && a.key.len() == 3 + 43);
        assert_eq!(a.digest, digest(&a.key));
        assert!(new_key(KeyKind::ClientSecret)
            .unwrap()
            .key
            .starts_with("sk_"));
        // The digest of a known input, computed independently (sha256sum).
        assert_eq!(
            digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
