//! The webhook process: the Node reflector and the certificate reloader run beside the TLS
//! admission server and the plain HTTP server until the process is told to stop
//! ([`crate::serve`]).

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use thiserror::Error;

use super::{
    WebhookError,
    metrics::WebhookMetrics,
    mutate::MutationConfig,
    nodes::reflect_nodes,
    route::RouteConfig,
    server::{self, PodLabelsFuture, PodLookup, WebhookState},
    tls::{self, ReloadingCert},
};
use crate::serve::{BindError, Lifecycle, ServeError, bind};

/// The webhook's validated configuration.
#[derive(Debug)]
pub struct WebhookConfig {
    /// The HTTPS admission address (`POST /mutate`, `POST /route`).
    pub listen: SocketAddr,
    /// The plain HTTP address of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: SocketAddr,
    /// The served certificate, reloaded when its files change.
    pub cert: Arc<ReloadingCert>,
    /// How often the certificate files are checked.
    pub tls_reload: Duration,
    /// What a binding copies onto its Pod.
    pub mutation: MutationConfig,
    /// Which pods `POST /route` moves to the group profile.
    pub route: RouteConfig,
    /// How long a binding waits for its Pod's labels.
    pub pod_lookup_timeout: Duration,
    /// How long requests in flight get to finish on SIGTERM.
    pub grace: Duration,
}

/// Why the webhook could not start, or stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// No Kubernetes client.
    #[error("connecting to the Kubernetes API")]
    Kube(#[source] kube::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration")]
    Tls(#[source] WebhookError),
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A server failed or stopped on its own.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Reads a Pod's labels through the metadata API (`pods` `get`), within `timeout`.
fn pod_lookup(client: kube::Client, timeout: Duration) -> PodLookup {
    Arc::new(move |ns: String, name: String| {
        let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &ns);
        Box::pin(async move {
            let who = format!("{ns}/{name}");
            match tokio::time::timeout(timeout, api.get_metadata(&name)).await {
                Ok(Ok(p)) => Ok(p.metadata.labels.unwrap_or_default()),
                Ok(Err(e)) => Err(WebhookError::PodLookup(who, e)),
                Err(_) => Err(WebhookError::PodLookupTimeout(who, timeout)),
            }
        }) as PodLabelsFuture
    })
}

/// Runs the webhook until SIGTERM or Ctrl-C, then drains within the grace period.
pub async fn run(cfg: WebhookConfig) -> Result<(), RunError> {
    let client = crate::kube_client::client().await.map_err(RunError::Kube)?;
    let keep: BTreeSet<String> = cfg.mutation.node_keys();
    let pods = (!cfg.mutation.consumers().is_empty())
        .then(|| pod_lookup(client.clone(), cfg.pod_lookup_timeout));
    let (nodes, reflector) = reflect_nodes(client, keep);
    let metrics = WebhookMetrics::new();
    let (ready_nodes, counted) = (nodes.clone(), nodes.clone());
    let state = WebhookState {
        config: Arc::new(cfg.mutation),
        route: Arc::new(cfg.route),
        nodes: Arc::new(nodes),
        pods,
        metrics: metrics.clone(),
        ready: Arc::new(move || ready_nodes.is_ready()),
        node_count: Arc::new(move || counted.len()),
    };
    let mut lifecycle = Lifecycle::new();
    lifecycle.helper(reflector);
    lifecycle.helper(cfg.cert.clone().watch(cfg.tls_reload));

    let tls_cfg = tls::server_config(cfg.cert.clone()).map_err(RunError::Tls)?;
    let listener = bind("--listen", cfg.listen).await?;
    let http = bind("--metrics-listen", cfg.metrics_listen).await?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    let http_local = http.local_addr().unwrap_or(cfg.metrics_listen);
    // The first line on stdout is the admission address, so that callers can use port 0.
    println!("listening on {local}");
    println!("metrics on {http_local}");
    tracing::info!(%local, %http_local, "webhook serving");

    lifecycle.server(
        "metrics server",
        axum::serve(http, server::http_router(state.clone()))
            .with_graceful_shutdown(lifecycle.stopped())
            .into_future(),
    );
    lifecycle.server(
        "admission server",
        server::serve_tls(
            listener,
            tls_cfg,
            server::admission_router(state),
            lifecycle.stopped(),
        ),
    );
    lifecycle.run(cfg.grace).await?;
    Ok(())
}
