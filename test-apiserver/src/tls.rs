//! TLS for the test server: kubectl sends bearer tokens only over https, so the server can serve
//! TLS with a fixed test-only certificate chain (a throwaway CA and a leaf for 127.0.0.1, ::1 and
//! localhost, generated for this test server; never trust this CA outside tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::server::TlsStream;

use super::error::ApiServerError;

/// The test CA certificate (PEM); put it in a kubeconfig's `certificate-authority-data`.
pub const TEST_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBsjCCAVmgAwIBAgIUC3gU4W1yGwVQFkDfG6kvWw2nk+cwCgYIKoZIzj0EAwIw\n\
JjEkMCIGA1UEAwwbbWVzaGNyeXB0LXRlc3QtYXBpc2VydmVyLWNhMCAXDTI2MTEy\n\
ODIwNTM0NloYDzIxMjYxMTA0MjA1MzQ2WjAmMSQwIgYDVQQDDBttZXNoY3J5cHQt\n\
dGVzdC1hcGlzZXJ2ZXItY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASjRFfY\n\
s5LTB/Uz8YwMz2QWdXsKe5KnRul4o0h1gTPz7zMoJBetn8ltSGX9TmbPZt/dg3ZM\n\
LDjmWu6glfrobNv2o2MwYTAdBgNVHQ4EFgQUzmQoye9mQUgQf5QVSPtkUGggGnAw\n\
HwYDVR0jBBgwFoAUzmQoye9mQUgQf5QVSPtkUGggGnAwDwYDVR0TAQH/BAUwAwEB\n\
/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZIzj0EAwIDRwAwRAIgaBsFYG59qbTXHPaq\n\
JAmMuslahRgrszGp8qb9uYqRZ4ICIEYzGlTb7y+boSJlnbQvDgHQatiwEXn+dzQt\n\
b/XzO4Bv\n\
-----END CERTIFICATE-----\n\
";

const SERVER_CERT_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB8zCCAZigAwIBAgIUdwxND15Nr9U54qW1qpKwaQNPzNYwCgYIKoZIzj0EAwIw\n\
JjEkMCIGA1UEAwwbbWVzaGNyeXB0LXRlc3QtYXBpc2VydmVyLWNhMCAXDTI2MTEy\n\
ODIwNTM0NloYDzIxMjYxMTA0MjA1MzQ2WjAjMSEwHwYDVQQDDBhtZXNoY3J5cHQt\n\
dGVzdC1hcGlzZXJ2ZXIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQVG2YweC8A\n\
aZ6GXOs3CylIdNNV0dtZlB0uM4bXjnEUsPag6mTczYG0MSa1ZfSOyj+pK6lBNaH7\n\
tMbPI0Xy7U3so4GkMIGhMCwGA1UdEQQlMCOHBH8AAAGHEAAAAAAAAAAAAAAAAAAA\n\
AAGCCWxvY2FsaG9zdDAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNV\n\
HSUEDDAKBggrBgEFBQcDATAdBgNVHQ4EFgQUE773lBFEm50NiuFbrv0VPvmr1UEw\n\
HwYDVR0jBBgwFoAUzmQoye9mQUgQf5QVSPtkUGggGnAwCgYIKoZIzj0EAwIDSQAw\n\
RgIhALL6Sv2OB9d9OWXQiPJYzktHSvpeQep4qb65SG1ziKiIAiEAh1riq5G4rUAA\n\
/28OW44JHnmg1abTNNeI+j3NFVTsjI8=\n\
-----END CERTIFICATE-----\n\
";

const SERVER_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2MIZCp8YifiHiK5G\n\
SuGEI9P3ttNh5SWdHbfY8WhVnNahRANCAAQVG2YweC8AaZ6GXOs3CylIdNNV0dtZ\n\
lB0uM4bXjnEUsPag6mTczYG0MSa1ZfSOyj+pK6lBNaH7tMbPI0Xy7U3s\n\
-----END PRIVATE KEY-----\n\
";

fn server_config() -> Result<Arc<rustls::ServerConfig>, ApiServerError> {
    use pki_types::pem::PemObject;
    let tls_err = |e: String| ApiServerError::Io(std::io::Error::other(e));
    let chain = vec![
        pki_types::CertificateDer::from_pem_slice(SERVER_CERT_PEM.as_bytes())
            .map_err(|e| tls_err(format!("server certificate: {e}")))?,
        pki_types::CertificateDer::from_pem_slice(TEST_CA_PEM.as_bytes())
            .map_err(|e| tls_err(format!("CA certificate: {e}")))?,
    ];
    let key = pki_types::PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes())
        .map_err(|e| tls_err(format!("server key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that completes TLS handshakes in the background and yields finished streams.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(listener: TcpListener) -> Result<Self, ApiServerError> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server_config()?);
        let (tx, rx) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
