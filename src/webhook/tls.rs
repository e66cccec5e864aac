//! The serving certificate: a PEM chain and key (a mounted `kubernetes.io/tls` Secret, whether
//! written by the chart, by cert-manager or by hand), re-read when the files change so that a
//! renewed certificate is served without a restart.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::WebhookError;

/// The crypto provider used for serving (the same one the Kubernetes client uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, WebhookError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WebhookError::ReadPem { path, source }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(cert))?;
    if chain.is_empty() {
        return Err(WebhookError::NoCertificate(cert.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(read_err(key))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(WebhookError::Tls)
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Serves the current certificate; [`ReloadingCert::reload_if_changed`] swaps it.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>, Option<SystemTime>)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads `cert` and `key`; fails when they are not usable.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, WebhookError> {
        let ck = load(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((Arc::new(ck), modified(cert), modified(key))),
        })
    }

    /// Re-reads the files when either modification time changed. Returns true when a new
    /// certificate is served; a file that is unusable (e.g. half written) keeps the old one.
    pub fn reload_if_changed(&self) -> Result<bool, WebhookError> {
        let (c, k) = (modified(&self.cert), modified(&self.key));
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if cur.1 == c && cur.2 == k {
                return Ok(false);
            }
        }
        let ck = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(ck), c, k);
        Ok(true)
    }

    /// Checks the files every `every` until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "serving certificate changed but is not usable; keeping the old one"
                ),
            }
        }
    }
}

impl ReloadingCert {
    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS server configuration (HTTP/1.1 and HTTP/2) that serves `cert`.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, WebhookError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
