//! Optional TLS for the gRPC API (rustls, through tonic): the server's certificate and key, an
//! optional client CA that turns on mutual TLS, and the matching client settings for
//! `nodetopo query` and the extender's agent streams. Files are read once, at start.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Errors reading TLS files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// Path of the PEM file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A client certificate was given without its key, or a key without its certificate.
    #[error("a client certificate and its key go together: give both or neither")]
    HalfIdentity,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The server side: a certificate chain and key (PEM), and the CA that client certificates must
/// chain to when mutual TLS is wanted.
#[derive(Clone)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `cert` and `key`, and `client_ca` when given (then every client must present a
    /// certificate it signed).
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        Ok(Self {
            identity: Identity::from_pem(read(cert)?, read(key)?),
            client_ca: client_ca.map(read).transpose()?.map(Certificate::from_pem),
        })
    }

    /// True when client certificates are required.
    pub fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The tonic configuration.
    pub(crate) fn config(&self) -> ServerTlsConfig {
        let cfg = ServerTlsConfig::new().identity(self.identity.clone());
        match &self.client_ca {
            Some(ca) => cfg.client_ca_root(ca.clone()),
            None => cfg,
        }
    }
}

/// The client side: the CA that signed the agent's certificate, an optional client certificate
/// and key for mutual TLS, and the name to check the server certificate against when it is not
/// the endpoint's host (e.g. when dialling a Pod IP).
#[derive(Clone, Default)]
pub struct ClientTls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Reads the files that are given. There are no built-in roots: the server certificate must
    /// chain to `ca`, so `ca` is needed in practice.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<String>,
    ) -> Result<Self, TlsError> {
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some(Identity::from_pem(read(c)?, read(k)?)),
            (None, None) => None,
            _ => return Err(TlsError::HalfIdentity),
        };
        Ok(Self {
            ca: ca.map(read).transpose()?.map(Certificate::from_pem),
            identity,
            server_name,
        })
    }

    /// The tonic configuration.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            cfg = cfg.ca_certificate(ca.clone());
        }
        if let Some(id) = &self.identity {
            cfg = cfg.identity(id.clone());
        }
        if let Some(name) = &self.server_name {
            cfg = cfg.domain_name(name.clone());
        }
        cfg
    }
}
