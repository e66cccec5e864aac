//! A fault proxy on loopback in front of the real kube-apiserver: it terminates TLS with a
//! certificate from the API server's CA (so an agent's kubeconfig only changes its `server`),
//! forwards every request to the real server over TLS, and answers writes to Nodes from a
//! schedule of faults instead, one fault per write, while the schedule lasts.
//!
//! Every Node write it sees is recorded with its arrival time and what it was answered, so a test
//! can check how a client spaced its retries.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};

/// One answer the proxy gives instead of forwarding a Node write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After: SECONDS`, the way kube-apiserver's
    /// max-in-flight and priority-and-fairness filters answer (plain-text body).
    TooManyRequests { retry_after_s: u32 },
    /// `409 Conflict` with the API server's Status body.
    Conflict,
    /// No answer for this long (past the client's timeout), then `504`.
    Hang(Duration),
}

/// What the proxy did with one Node write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Injected(Fault),
    Forwarded,
}

/// A Node write the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub answer: Answer,
}

#[derive(Default)]
struct Shared {
    plan: VecDeque<Fault>,
    seen: Vec<Seen>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, headers: &[(&str, String)], body: String) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed())
        .expect("a valid response")
}

fn injected(fault: Fault, path: &str) -> Response<Body> {
    match fault {
        Fault::TooManyRequests { retry_after_s } => full(
            StatusCode::TOO_MANY_REQUESTS,
            &[
                ("Retry-After", retry_after_s.to_string()),
                ("Content-Type", "text/plain; charset=utf-8".into()),
            ],
            "Too many requests, please try again later.\n".into(),
        ),
        Fault::Conflict => {
            let name = path.rsplit('/').next().unwrap_or_default();
            let name = name.split('?').next().unwrap_or_default();
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("Operation cannot be fulfilled on nodes \"{name}\": the object \
                    has been modified; please apply your changes to the latest version and try again"),
                "reason": "Conflict", "details": {"name": name, "kind": "nodes"}, "code": 409,
            });
            full(
                StatusCode::CONFLICT,
                &[("Content-Type", "application/json".into())],
                status.to_string(),
            )
        }
        Fault::Hang(_) => full(StatusCode::GATEWAY_TIMEOUT, &[], "hung\n".into()),
    }
}

fn is_node_write(req: &Request<Incoming>) -> bool {
    let m = req.method().as_str();
    req.uri().path().starts_with("/api/v1/nodes/") && !matches!(m, "GET" | "HEAD")
}

impl FaultProxy {
    /// Listens on a free loopback port with `cert`/`key` (PEM) and forwards to `upstream`
    /// (`https://127.0.0.1:PORT`), trusting `ca` for it.
    pub async fn start(cert: &Path, key: &Path, upstream: &str, ca: &Path) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("proxy certificate")
            .collect::<Result<_, _>>()
            .expect("proxy certificate PEM");
        let key = PrivateKeyDer::from_pem_file(key).expect("proxy key");
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("proxy TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).expect("CA") {
            roots.add(c.expect("CA PEM")).unwrap();
        }
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
        let upstream: SocketAddr = upstream
            .strip_prefix("https://")
            .expect("https upstream")
            .parse()
            .expect("upstream IP:PORT");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (acceptor, connector, shared) =
                        (acceptor.clone(), connector.clone(), shared.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = service_fn(move |req| {
                            handle(req, upstream, connector.clone(), shared.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            }
        });
        Self { url, shared, task }
    }

    /// Answers the next Node writes with `faults`, in order (after any still planned).
    pub fn plan(&self, faults: &[Fault]) {
        self.shared.lock().unwrap().plan.extend(faults);
    }

    /// Faults planned but not yet given.
    pub fn pending(&self) -> usize {
        self.shared.lock().unwrap().plan.len()
    }

    /// Every Node write seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// A copy of the kubeconfig at `from` (JSON, as the harness writes them) with its server
    /// replaced by this proxy, written to `to`.
    pub fn kubeconfig(&self, from: &Path, to: &Path) {
        let mut kc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
        kc["clusters"][0]["cluster"]["server"] = self.url.clone().into();
        std::fs::write(to, kc.to_string()).unwrap();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    shared: Arc<Mutex<Shared>>,
) -> Result<Response<Body>, hyper::Error> {
    if is_node_write(&req) {
        let fault = {
            let mut s = shared.lock().unwrap();
            let fault = s.plan.pop_front();
            s.seen.push(Seen {
                at: Instant::now(),
                method: req.method().to_string(),
                answer: fault.map_or(Answer::Forwarded, Answer::Injected),
            });
            fault
        };
        if let Some(f) = fault {
            if let Fault::Hang(d) = f {
                tokio::time::sleep(d).await;
            }
            return Ok(injected(f, req.uri().path()));
        }
    }
    Ok(forward(req, upstream, connector).await.unwrap_or_else(|e| {
        full(
            StatusCode::BAD_GATEWAY,
            &[],
            format!("fault proxy: upstream: {e}\n"),
        )
    }))
}

/// Sends `req` to the real server on a fresh TLS connection and streams its answer back.
async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
    connector: tokio_rustls::TlsConnector,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(upstream).await?;
    let name = ServerName::IpAddress(upstream.ip().into());
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await?;
    Ok(res.map(BodyExt::boxed))
}
