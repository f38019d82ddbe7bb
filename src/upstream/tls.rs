//! TLS to upstream endpoints: the step between the TCP connect and the HTTP handshake in
//! `pool.rs`'s `dial`, for clusters with `tls:`.
//!
//! Built once per cluster (when the runtime is built and the cluster's config changed): a
//! rustls `ClientConfig` that trusts either the cluster's `ca` bundle or, without one, the
//! Mozilla root set compiled in by `webpki-roots` — chosen over the OS store
//! (`rustls-native-certs`) as the leaner option: one data crate, no file reads or platform
//! code at start, and identical behaviour in a scratch container and on a laptop; a private
//! CA is named with `ca:` instead. There is deliberately no way to skip verification: a
//! backend whose certificate does not verify for the expected name is refused, and the
//! request gets 502 `upstream_tls_failed`.
//!
//! ALPN offers exactly what the cluster speaks: `h2` for `protocol: http2`, `http/1.1`
//! otherwise. The SNI (and the name verified) is the cluster's `server_name`, or else each
//! endpoint's host (a DNS name, or an IP address checked against the certificate's IP SANs).

use crate::config::model::{self, UpstreamProtocol};
use crate::pki::{self, PemError};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the CA bundle cannot be used")]
    Ca(#[source] rustls::Error),
    #[error("the TLS client configuration cannot be built")]
    Config(#[source] rustls::Error),
    #[error("{0:?} cannot be used as a TLS server name")]
    ServerName(String),
}

/// One cluster's TLS client.
pub(crate) struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    pub(crate) fn new(
        settings: &model::UpstreamTls,
        protocol: UpstreamProtocol,
    ) -> Result<UpstreamTls, UpstreamTlsError> {
        let roots = match &settings.ca {
            Some(path) => {
                pki::root_store(pki::read_certificates(path)?).map_err(UpstreamTlsError::Ca)?
            }
            None => {
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots
            }
        };
        let builder = ClientConfig::builder_with_provider(pki::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(UpstreamTlsError::Config)?
            .with_root_certificates(roots);
        let mut config = match &settings.client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(pki::read_certificates(cert)?, pki::read_private_key(key)?)
                .map_err(UpstreamTlsError::Config)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match protocol {
            UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        let server_name = match &settings.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| UpstreamTlsError::ServerName(name.clone()))?,
            ),
            None => None,
        };
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The name to send and verify for `endpoint`.
    pub(crate) fn server_name_for(
        &self,
        endpoint: &model::Endpoint,
    ) -> Result<ServerName<'static>, UpstreamTlsError> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(endpoint.host.clone())
                .map_err(|_| UpstreamTlsError::ServerName(endpoint.host.clone())),
        }
    }

    pub(crate) async fn connect(
        &self,
        name: ServerName<'static>,
        stream: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        self.connector.connect(name, stream).await
    }
}

/// An upstream connection: plaintext or TLS. One enum match per poll is all the plaintext
/// path pays.
pub(crate) enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(stream) => stream.is_write_vectored(),
            UpstreamIo::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
