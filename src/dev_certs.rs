//! `portico certs`: a local development CA and a server certificate, made with rcgen.
//!
//! Off the request path: the CLI (`portico certs`, `portico demo`) writes PEM files that a
//! listener's `tls:` section then names. The CA signs one server certificate for
//! `localhost`, `127.0.0.1` and `api.example.com`, valid from the start of last year to
//! two years ahead. Files: `ca.pem` (give it to clients: `curl --cacert certs/ca.pem`),
//! `server.pem` (leaf then CA) and `server-key.pem`, written with mode 0600. The CA's own
//! key is not kept: to issue more certificates, generate a new set. None of this is meant
//! for production, and private keys are never committed (`.gitignore`).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The names the development server certificate covers.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "api.example.com"];

/// Why the development certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    /// Key generation or signing failed.
    #[error("cannot generate the certificates")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// Where a set of development certificates lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    /// The CA certificate clients trust (`ca.pem`).
    pub ca: PathBuf,
    /// The server certificate chain (`server.pem`).
    pub cert: PathBuf,
    /// The server's private key (`server-key.pem`).
    pub key: PathBuf,
}

impl DevCerts {
    /// Where the files are in `dir`.
    pub fn in_dir(dir: &Path) -> DevCerts {
        DevCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    /// The set in `dir`, if all three files are there.
    pub fn existing(dir: &Path) -> Option<DevCerts> {
        let certs = DevCerts::in_dir(dir);
        (certs.ca.is_file() && certs.cert.is_file() && certs.key.is_file()).then_some(certs)
    }
}

/// Generate a CA and a server certificate into `dir` (created if missing), replacing any
/// previous set.
pub fn generate(dir: &Path) -> Result<DevCerts, DevCertsError> {
    let (ca_pem, cert_pem, key_pem) = generate_pem()?;
    std::fs::create_dir_all(dir).map_err(|source| DevCertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let certs = DevCerts::in_dir(dir);
    write(&certs.ca, ca_pem.as_bytes(), 0o644)?;
    write(&certs.cert, cert_pem.as_bytes(), 0o644)?;
    write(&certs.key, key_pem.as_bytes(), 0o600)?;
    Ok(certs)
}

/// (CA certificate, server chain, server key) as PEM text.
fn generate_pem() -> Result<(String, String, String), rcgen::Error> {
    let year = current_year();
    let not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    let not_after = rcgen::date_time_ymd(year + 2, 1, 1);

    let mut ca_params = CertificateParams::default();
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::OrganizationName, "Portico development");
    ca_name.push(DnType::CommonName, "Portico development CA");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let names: Vec<String> = SERVER_NAMES.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "localhost");
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok((
        ca.pem(),
        format!("{}{}", cert.pem(), ca.pem()),
        key.serialize_pem(),
    ))
}

fn current_year() -> i32 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Average Gregorian year; off by a day at most around New Year, which is harmless here.
    1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0)
}

fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevCertsError> {
    let error = |source| DevCertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path).map_err(error)?;
        // `mode` applies only to a new file; an old one keeps its bits unless set again.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(error)?;
        file.write_all(contents).map_err(error)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path).map_err(error)?;
        file.write_all(contents).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    #[test]
    fn generates_a_ca_and_a_server_certificate_it_signed() {
        let dir = std::env::temp_dir().join(format!("portico-dev-certs-{}", std::process::id()));
        let certs = generate(&dir).expect("generate");
        assert_eq!(DevCerts::existing(&dir), Some(certs.clone()));
        let chain = pki::read_certificates(&certs.cert).expect("chain");
        assert_eq!(chain.len(), 2);
        let facts = pki::inspect(&chain[0]).expect("leaf");
        assert_eq!(facts.dns_names, ["localhost", "api.example.com"]);
        assert_eq!(
            facts.ips,
            ["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
        );
        let key = pki::read_private_key(&certs.key).expect("key");
        pki::certified_key(chain.clone(), key).expect("key matches the leaf");
        // The leaf verifies against the CA, as a client would check it.
        let roots = pki::root_store(pki::read_certificates(&certs.ca).expect("ca")).expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            pki::crypto_provider(),
        )
        .build()
        .expect("verifier");
        let name = rustls_pki_types::ServerName::try_from("api.example.com").expect("name");
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &name,
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .expect("verifies");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&certs.key)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
