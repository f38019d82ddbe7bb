//! PEM files and the few X.509 facts Portico reads from certificates.
//!
//! Off the request path: config validation, the TLS listeners (`server/tls.rs`), the
//! upstream connector (`upstream/tls.rs`) and `portico certs` use it when certificates are
//! loaded or reloaded. PEM decoding is `rustls-pki-types`' own; the DER walk below reads only
//! what Portico needs from a certificate — `notAfter` (the expiry metric), the subject (the
//! client-certificate header) and the subject alternative names (SNI names, the header) —
//! so no general X.509 parser (and its dependency tree) is pulled in for three fields.
//! Signatures and chains are never checked here: that is rustls' job during handshakes.

use rustls::crypto::CryptoProvider;
use rustls::SupportedCipherSuite;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The one rustls crypto provider: `ring`. It builds with only a C compiler, quickly, on
/// any machine (aws-lc-rs needs cmake and a long C build), and its AES-GCM / ChaCha20 code
/// is assembly-optimised, so handshakes and bulk encryption are within a few percent of
/// aws-lc-rs for what a gateway does. Cipher suites are rustls' defaults for this provider:
/// TLS 1.3 AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; TLS 1.2 ECDHE (ECDSA or RSA) with
/// the same three AEADs — forward secrecy only, no CBC, no RSA key exchange, no SHA-1 MACs.
/// Key exchange groups: X25519, P-256, P-384. A listener's `tls.cipher_suites` narrows and
/// orders the suites ([`crypto_provider_with`]).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The cipher suites the `ring` provider implements, by IANA name, in rustls' default order
/// of preference (the order a listener without `cipher_suites` prefers). The names are the
/// IANA registry's (what OpenSSL's `-ciphersuites` and `ssl_conf_command Ciphersuites` take
/// for TLS 1.3); rustls' own identifiers spell the TLS 1.3 ones `TLS13_…`, which operators
/// never see elsewhere.
pub(crate) fn cipher_suites() -> [(&'static str, SupportedCipherSuite); 9] {
    use rustls::crypto::ring::cipher_suite as ring;
    [
        ("TLS_AES_256_GCM_SHA384", ring::TLS13_AES_256_GCM_SHA384),
        ("TLS_AES_128_GCM_SHA256", ring::TLS13_AES_128_GCM_SHA256),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            ring::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ring::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ring::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ring::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ring::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ring::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ring::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// The IANA name of a TLS 1.2 suite of [`cipher_suites`] given its OpenSSL name (what an
/// NGINX `ssl_ciphers` line holds), so a config problem can say what to write instead.
/// OpenSSL names the TLS 1.3 suites by their IANA names already.
pub(crate) fn iana_name_of_openssl(name: &str) -> Option<&'static str> {
    Some(match name {
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

/// The IANA name of a suite of [`cipher_suites`], for messages.
pub(crate) fn cipher_suite_name(suite: SupportedCipherSuite) -> &'static str {
    cipher_suites()
        .into_iter()
        .find(|(_, known)| known.suite() == suite.suite())
        .map_or("unknown", |(name, _)| name)
}

/// The crypto provider of a listener that chose its own cipher suites: [`crypto_provider`]
/// with only `suites`, in that order of preference. Key exchange groups and signature
/// algorithms stay as they are.
pub(crate) fn crypto_provider_with(suites: &[SupportedCipherSuite]) -> Arc<CryptoProvider> {
    let mut provider = CryptoProvider::clone(&crypto_provider());
    provider.cipher_suites = suites.to_vec();
    Arc::new(provider)
}

/// Check that `key` belongs to the first certificate of `chain`, and pair them.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::sign::CertifiedKey, rustls::Error> {
    rustls::sign::CertifiedKey::from_der(chain, key, &crypto_provider())
}

/// A root store of the given CA certificates; every one must be usable as a trust anchor.
pub fn root_store(
    cas: Vec<CertificateDer<'static>>,
) -> Result<rustls::RootCertStore, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca)?;
    }
    Ok(roots)
}

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no block of the expected kind.
    #[error("{} contains no {what} PEM block", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// A certificate in the file cannot be read.
    #[error("{} holds a certificate that cannot be read: {source}", path.display())]
    Der {
        /// The file.
        path: PathBuf,
        /// Where the certificate's structure broke.
        #[source]
        source: DerError,
    },
}

/// Read a file whole (certificate files are small).
pub fn read_file(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file's contents, in order; at least one. Each one is
/// also walked once, so a block that is not a certificate at all is refused here rather than
/// in a handshake.
pub fn parse_certificates(
    pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    for cert in &certs {
        inspect(cert).map_err(|source| PemError::Der {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of a PEM file's contents.
pub fn parse_private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
            path: path.to_path_buf(),
            what: "PRIVATE KEY",
        },
        source => PemError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Every certificate in a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    parse_certificates(&read_file(path)?, path)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    parse_private_key(&read_file(path)?, path)
}

/// A certificate that could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// The data ends inside a value.
    #[error("truncated DER")]
    Truncated,
    /// Another value than the certificate's structure has there.
    #[error("unexpected DER tag {found:#04x} where {expected} was expected")]
    UnexpectedTag {
        /// What the structure has at this place.
        expected: &'static str,
        /// The tag found instead.
        found: u8,
    },
    /// A length form DER does not allow.
    #[error("unsupported DER length encoding")]
    Length,
    /// A validity time that is not a time.
    #[error("invalid time {0:?}")]
    Time(String),
}

/// What Portico reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertFacts {
    /// `notAfter` as a Unix timestamp (seconds).
    pub not_after: i64,
    /// The subject in RFC 4514 form (`CN=client,O=Acme`), ASCII only: anything else is
    /// escaped as `\XX` UTF-8 bytes, so it is always a valid header value.
    pub subject: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names (SPIFFE ids and the like).
    pub uris: Vec<String>,
    /// IP address subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Email subject alternative names.
    pub emails: Vec<String>,
}

impl CertFacts {
    /// A short name for logs and metric labels: the first DNS name, else the subject.
    pub fn display_name(&self) -> &str {
        self.dns_names.first().map_or(&self.subject, String::as_str)
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over a run of DER TLVs.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(data: &'a [u8]) -> Der<'a> {
        Der { rest: data }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next TLV as (tag, contents). Single-byte tags only: X.509 uses no others.
    fn any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.rest.split_first().ok_or(DerError::Truncated)?;
        let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(DerError::Length);
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return Err(DerError::Truncated);
        }
        let (contents, after) = rest.split_at(len);
        self.rest = after;
        Ok((tag, contents))
    }

    fn take(&mut self, tag: u8, expected: &'static str) -> Result<&'a [u8], DerError> {
        match self.any()? {
            (found, contents) if found == tag => Ok(contents),
            (found, _) => Err(DerError::UnexpectedTag { expected, found }),
        }
    }
}

/// Walk a DER certificate for [`CertFacts`].
pub fn inspect(der: &[u8]) -> Result<CertFacts, DerError> {
    let certificate = Der::new(der).take(SEQUENCE, "Certificate")?;
    let tbs = Der::new(certificate).take(SEQUENCE, "TBSCertificate")?;
    let mut fields = Der::new(tbs);
    if fields.peek_tag() == Some(0xa0) {
        fields.any()?; // [0] version
    }
    fields.take(0x02, "serialNumber")?;
    fields.take(SEQUENCE, "signature")?;
    fields.take(SEQUENCE, "issuer")?;
    let mut validity = Der::new(fields.take(SEQUENCE, "validity")?);
    validity.any()?; // notBefore
    let (tag, text) = validity.any()?;
    let not_after = parse_time(tag, text)?;
    let subject = render_name(fields.take(SEQUENCE, "subject")?)?;
    fields.take(SEQUENCE, "subjectPublicKeyInfo")?;
    let mut facts = CertFacts {
        not_after,
        subject,
        ..CertFacts::default()
    };
    while !fields.is_empty() {
        let (tag, contents) = fields.any()?;
        if tag != 0xa3 {
            continue; // issuerUniqueID / subjectUniqueID
        }
        let mut extensions = Der::new(Der::new(contents).take(SEQUENCE, "extensions")?);
        while !extensions.is_empty() {
            let mut extension = Der::new(extensions.take(SEQUENCE, "Extension")?);
            let oid = extension.take(OID, "extnID")?;
            if extension.peek_tag() == Some(0x01) {
                extension.any()?; // critical
            }
            let value = extension.take(OCTET_STRING, "extnValue")?;
            if oid == OID_SUBJECT_ALT_NAME {
                read_alt_names(value, &mut facts)?;
            }
        }
    }
    Ok(facts)
}

fn read_alt_names(value: &[u8], facts: &mut CertFacts) -> Result<(), DerError> {
    let mut names = Der::new(Der::new(value).take(SEQUENCE, "GeneralNames")?);
    while !names.is_empty() {
        let (tag, contents) = names.any()?;
        let text = || String::from_utf8_lossy(contents).into_owned();
        match tag {
            0x81 => facts.emails.push(text()),
            0x82 => facts.dns_names.push(text().to_ascii_lowercase()),
            0x86 => facts.uris.push(text()),
            0x87 => match contents.len() {
                4 => {
                    let octets: [u8; 4] = contents.try_into().map_err(|_| DerError::Truncated)?;
                    facts.ips.push(IpAddr::from(octets));
                }
                16 => {
                    let octets: [u8; 16] = contents.try_into().map_err(|_| DerError::Truncated)?;
                    facts.ips.push(IpAddr::from(octets));
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(())
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950–2049, RFC 5280) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`, as a Unix timestamp.
fn parse_time(tag: u8, text: &[u8]) -> Result<i64, DerError> {
    let bad = || DerError::Time(String::from_utf8_lossy(text).into_owned());
    let digits = match (tag, text.len()) {
        (UTC_TIME, 13) | (GENERALIZED_TIME, 15) => &text[..text.len() - 1],
        _ => return Err(bad()),
    };
    if text.last() != Some(&b'Z') || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    let (year, rest) = if tag == UTC_TIME {
        let yy = number(0..2);
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    } else {
        (number(0..4), 4)
    };
    let month = number(rest..rest + 2);
    let day = number(rest + 2..rest + 4);
    let (hour, minute, second) = (
        number(rest + 4..rest + 6),
        number(rest + 6..rest + 8),
        number(rest + 8..rest + 10),
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad());
    }
    // A leap second (60) is allowed by the format.
    if second > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A distinguished name in RFC 4514 form: RDNs last-to-first, multi-valued ones joined
/// with `+`.
fn render_name(name: &[u8]) -> Result<String, DerError> {
    let mut rdns = Vec::new();
    let mut reader = Der::new(name);
    while !reader.is_empty() {
        let mut set = Der::new(reader.take(SET, "RelativeDistinguishedName")?);
        let mut parts = Vec::new();
        while !set.is_empty() {
            let mut pair = Der::new(set.take(SEQUENCE, "AttributeTypeAndValue")?);
            let oid = pair.take(OID, "AttributeType")?;
            let (tag, value) = pair.any()?;
            let mut part = attribute_name(oid);
            part.push('=');
            match decode_string(tag, value) {
                Some(text) => escape_value(&text, &mut part),
                None => {
                    part.push('#');
                    for byte in value {
                        let _ = write!(part, "{byte:02x}");
                    }
                }
            }
            parts.push(part);
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

fn attribute_name(oid: &[u8]) -> String {
    let short = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return dotted_oid(oid),
    };
    short.to_string()
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for byte in oid {
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn decode_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, VisibleString, NumericString
        0x0c | 0x13 | 0x16 | 0x1a | 0x12 => std::str::from_utf8(value).ok().map(str::to_string),
        // TeletexString: in practice Latin-1.
        0x14 => Some(value.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UTF-16BE.
        0x1e if value.len().is_multiple_of(2) => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE.
        0x1c if value.len().is_multiple_of(4) => value
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping, plus `\XX` for every byte that is not printable ASCII.
fn escape_value(text: &str, out: &mut String) {
    let last = text.len().saturating_sub(1);
    for (i, ch) in text.char_indices() {
        let special = matches!(ch, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(ch, '#' | ' '))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
            out.push(ch);
        } else if ch.is_ascii_graphic() || ch == ' ' {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\{byte:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    #[test]
    fn cipher_suite_names_cover_the_provider_in_its_order() {
        let named: Vec<_> = cipher_suites().iter().map(|(_, s)| s.suite()).collect();
        let provided: Vec<_> = crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(named, provided);
        for (name, suite) in cipher_suites() {
            assert_eq!(cipher_suite_name(suite), name);
            // rustls' identifier, less the `13` it adds to TLS 1.3 names, is the IANA name.
            assert_eq!(
                format!("{:?}", suite.suite()).replace("TLS13_", "TLS_"),
                name
            );
        }
        let named: Vec<&str> = cipher_suites().iter().map(|(name, _)| *name).collect();
        for openssl in [
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ] {
            let iana = iana_name_of_openssl(openssl).expect("mapped");
            assert!(named.contains(&iana), "{iana}");
        }
        let chosen = crypto_provider_with(&[cipher_suites()[1].1]);
        assert_eq!(chosen.cipher_suites.len(), 1);
        assert_eq!(chosen.kx_groups.len(), crypto_provider().kx_groups.len());
    }

    fn make(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn reads_not_after_from_rcgen_certificates() {
        for (year, month, day, expected) in [
            (2030, 6, 15, 1_907_712_000),
            // UTCTime's last year, then GeneralizedTime from 2050 on.
            (2049, 12, 31, 2_524_521_600),
            (2050, 1, 1, 2_524_608_000),
            (1999, 3, 1, 920_246_400),
        ] {
            let mut params = CertificateParams::new(vec!["a.example".into()]).expect("params");
            params.not_after = rcgen::date_time_ymd(year, month, day);
            let facts = inspect(&make(params)).expect("inspect");
            assert_eq!(facts.not_after, expected, "{year}-{month}-{day}");
        }
    }

    #[test]
    fn reads_subject_and_alt_names() {
        let mut params =
            CertificateParams::new(vec!["API.example.com".into(), "*.example.net".into()])
                .expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse().expect("ip")));
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/client".try_into().expect("uri"),
        ));
        params.subject_alt_names.push(SanType::Rfc822Name(
            "ops@example.com".try_into().expect("email"),
        ));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acme, Inc.");
        dn.push(DnType::CommonName, "client \u{e9}");
        params.distinguished_name = dn;
        let facts = inspect(&make(params)).expect("inspect");
        assert_eq!(facts.dns_names, ["api.example.com", "*.example.net"]);
        assert_eq!(
            facts.ips,
            [
                "127.0.0.1".parse::<IpAddr>().expect("ip"),
                "::1".parse().expect("ip")
            ]
        );
        assert_eq!(facts.uris, ["spiffe://example.org/client"]);
        assert_eq!(facts.emails, ["ops@example.com"]);
        assert_eq!(facts.subject, "CN=client \\C3\\A9,O=Acme\\, Inc.");
        assert_eq!(facts.display_name(), "api.example.com");
    }

    #[test]
    fn times_and_garbage() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Ok(0));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20000229235959Z"),
            Ok(951_868_799)
        );
        assert!(parse_time(UTC_TIME, b"7001010000Z").is_err());
        assert!(parse_time(UTC_TIME, b"701301000000Z").is_err());
        assert!(parse_time(GENERALIZED_TIME, b"2000022923595+0100").is_err());
        assert!(inspect(b"").is_err());
        assert!(inspect(&[0x30, 0x82, 0xff]).is_err());
        assert!(inspect(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert_eq!(
            dotted_oid(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
    }

    #[test]
    fn pem_errors_name_the_file() {
        let path = Path::new("x.pem");
        assert!(matches!(
            parse_certificates(b"", path),
            Err(PemError::Empty { .. })
        ));
        assert!(matches!(
            parse_private_key(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                path
            ),
            Err(PemError::Empty { .. })
        ));
        let bogus = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            parse_certificates(bogus, path),
            Err(PemError::Der { .. })
        ));
    }
}
