//! Requests the gateway makes on its own behalf: an identity provider's key set (JWKS), its
//! OpenID discovery document, token introspection.
//!
//! Off the request path's hot loop: called by the JWKS cache's refresher and, for an unknown
//! key or an introspection, by the one request that needs the answer (the others wait for
//! it). Each call is one HTTP/1.1 exchange on a new connection — these calls are rare, and a
//! fresh connection never carries state from the last one — bounded by a timeout for the
//! whole exchange and a limit on the response body. HTTPS verifies the server against the
//! Mozilla roots (`webpki-roots`, as upstream TLS does) or a configured CA bundle; there is
//! no way to skip verification.

use crate::pki;
use crate::upstream::tls::UpstreamIo;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why an outbound call failed. The message names the URL's host, never credentials.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutboundError {
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    #[error("cannot resolve or connect to {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {host} failed")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with {host} failed")]
    Http {
        host: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{host} did not answer within {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("{host} answered with more than {limit} bytes")]
    TooLarge { host: String, limit: usize },
    #[error("the request to {host} could not be built")]
    Request {
        host: String,
        #[source]
        source: http::Error,
    },
}

/// Why the TLS client for outbound calls could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutboundTlsError {
    #[error(transparent)]
    Pem(#[from] pki::PemError),
    #[error("the CA bundle cannot be used")]
    Ca(#[source] rustls::Error),
    #[error("the TLS client configuration cannot be built")]
    Config(#[source] rustls::Error),
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The client for outbound calls, with its TLS trust.
#[derive(Clone)]
pub(crate) struct Outbound {
    tls: TlsConnector,
}

impl Outbound {
    /// Trusting the CA bundle at `ca`, or the Mozilla roots without one.
    pub(crate) fn new(ca: Option<&Path>) -> Result<Outbound, OutboundTlsError> {
        let roots = match ca {
            Some(path) => {
                pki::root_store(pki::read_certificates(path)?).map_err(OutboundTlsError::Ca)?
            }
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots
            }
        };
        let mut config = rustls::ClientConfig::builder_with_provider(pki::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(OutboundTlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Outbound {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// `GET url`, accepting JSON.
    pub(crate) async fn get(
        &self,
        url: &Uri,
        timeout: Duration,
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        self.exchange(
            Method::GET,
            url,
            HeaderMap::new(),
            Bytes::new(),
            timeout,
            limit,
        )
        .await
    }

    /// `POST url` with a form body (`application/x-www-form-urlencoded`) and extra headers.
    pub(crate) async fn post_form(
        &self,
        url: &Uri,
        mut headers: HeaderMap,
        form: String,
        timeout: Duration,
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self.exchange(
            Method::POST,
            url,
            headers,
            Bytes::from(form),
            timeout,
            limit,
        )
        .await
    }

    async fn exchange(
        &self,
        method: Method,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        limit: usize,
    ) -> Result<Fetched, OutboundError> {
        let target = Target::of(url)?;
        let host = target.host.clone();
        let exchange = async {
            let stream = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|source| OutboundError::Connect {
                    host: host.clone(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            let io =
                if target.tls {
                    let name = ServerName::try_from(target.host.clone())
                        .map_err(|_| OutboundError::Url(url.to_string()))?;
                    let tls = self.tls.connect(name, stream).await.map_err(|source| {
                        OutboundError::Tls {
                            host: host.clone(),
                            source,
                        }
                    })?;
                    UpstreamIo::Tls(Box::new(tls))
                } else {
                    UpstreamIo::Plain(stream)
                };
            let http = |source| OutboundError::Http {
                host: host.clone(),
                source,
            };
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(http)?;
            tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(target.path_and_query.as_str())
                .header(HOST, target.authority.as_str())
                .header(ACCEPT, "application/json")
                .header(USER_AGENT, concat!("portico/", env!("CARGO_PKG_VERSION")))
                .body(Full::new(body))
                .map_err(|source| OutboundError::Request {
                    host: host.clone(),
                    source,
                })?;
            request.headers_mut().extend(headers);
            let response = sender.send_request(request).await.map_err(http)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| OutboundError::TooLarge {
                    host: host.clone(),
                    limit,
                })?
                .to_bytes();
            Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout { host, timeout }),
        }
    }
}

/// Where an outbound URL points.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
}

impl Target {
    fn of(url: &Uri) -> Result<Target, OutboundError> {
        let bad = || OutboundError::Url(url.to_string());
        let tls = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = url.authority().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            tls,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            path_and_query: url
                .path_and_query()
                .map_or_else(|| String::from("/"), |pq| pq.as_str().to_string()),
        })
    }
}

/// Check a URL written in the config: `http://` or `https://`, a host, no user info.
pub(crate) fn parse_url(text: &str) -> Result<Uri, String> {
    let url: Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    match url.scheme_str() {
        Some("https" | "http") => {}
        _ => return Err(format!("{text:?} must start with https:// (or http://)")),
    }
    let Some(authority) = url.authority() else {
        return Err(format!("{text:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} has user info; credentials do not belong in a URL"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_urls_need_a_scheme_and_a_host_and_no_user_info() {
        assert!(parse_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(parse_url("ftp://idp.example.com/").is_err());
        assert!(parse_url("idp.example.com/jwks").is_err());
        assert!(parse_url("https://user:pw@idp.example.com/").is_err());
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_huge_answer_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                // Never answers.
                held.push(stream);
            }
        });
        let outbound = Outbound::new(None).unwrap();
        let url: Uri = format!("http://{addr}/jwks").parse().unwrap();
        let error = outbound
            .get(&url, Duration::from_millis(100), 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, OutboundError::Timeout { .. }), "{error}");

        let big = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let big_addr = big.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut stream, _)) = big.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let body = "x".repeat(5000);
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n{body}");
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        let url: Uri = format!("http://{big_addr}/jwks").parse().unwrap();
        let error = outbound
            .get(&url, Duration::from_secs(5), 1024)
            .await
            .unwrap_err();
        assert!(matches!(error, OutboundError::TooLarge { .. }), "{error}");
    }
}
