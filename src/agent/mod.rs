//! The node agent: a probe loop that keeps the last good topology current, and the publishers
//! that read it (gRPC, node labels, metrics).
//!
//! The probe runs on the blocking pool (NVML and sysfs block), one probe at a time, every
//! interval. Its result is merged into the previous state ([`merge::merge`]) and published on a
//! `watch` channel; the revision moves only when the content changes ([`step::next_state`]).
#![forbid(unsafe_code)]

pub mod labeler;
pub mod merge;
pub mod metrics;
pub mod pacing;
pub mod step;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};

use self::{
    labeler::{NodeEvent, NodeLabeler, RetryAfterHint, RetryAfterLayer, WriteError},
    metrics::Metrics,
};
use crate::{
    api::{self, Published, ServerLimits, TopologyApi},
    backoff::{Backoff, retry},
    labels::{self, LabelConfig, Labels},
    model::NodeTopology,
    probe::{ProbeConfig, Prober, SetupError, lldp::LldpView},
    serve::{BindError, Lifecycle, ServeError, bind},
};

/// The agent's validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// What each probe reads, and this node's name.
    pub probe: ProbeConfig,
    /// Time between probes.
    pub interval: Duration,
    /// Probe once, apply labels, exit.
    pub oneshot: bool,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// Listen address of the plain HTTP server for `/metrics` and the health checks.
    pub metrics_listen: SocketAddr,
    /// gRPC limits.
    pub limits: ServerLimits,
    /// TLS for the gRPC API (plaintext when `None`).
    pub grpc_tls: Option<api::tls::ServerTls>,
    /// How labels are named: the key prefix and the opt-in compatibility labels.
    pub labels: LabelConfig,
    /// Write node labels to Kubernetes.
    pub kube: bool,
    /// Timeout of one label write.
    pub kube_timeout: Duration,
    /// How long to wait for streams to drain on shutdown.
    pub grace: Duration,
}

/// The agent's default bound of the first probe's wait for LLDP (`--lldp-wait`): short, so
/// the first publication is not held back; the RoCE leaf follows when the frames arrive (the
/// probe loop probes again when an LLDP answer changes).
pub const AGENT_LLDP_WAIT: Duration = Duration::from_secs(5);

/// After an LLDP answer changed, how long the loop waits for the other ports' frames before it
/// probes again (one probe for a burst of first frames).
const LLDP_SETTLE: Duration = Duration::from_secs(1);

/// Builds the agent's prober. Must run inside the agent's (multi-thread) runtime: the LLDP
/// listeners run on it.
fn prober(cfg: &AgentConfig) -> Result<Box<Prober>, AgentError> {
    let handle = tokio::runtime::Handle::current();
    Ok(Box::new(Prober::from_config(&cfg.probe, Some(handle))?))
}

/// Resolves when an LLDP answer differs from `seen` (what the last probe used); pending forever
/// without LLDP.
async fn lldp_changed(view: &mut Option<LldpView>, seen: &[(String, &'static str, String)]) {
    let Some(view) = view.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        view.changed().await;
        if view.digest() != seen {
            return;
        }
    }
}

/// Runs one probe on the blocking pool.
async fn probe_once(
    mut source: Box<Prober>,
) -> Result<(Box<Prober>, NodeTopology, Duration), AgentError> {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let t = source.probe(SystemTime::now());
        (source, t, start.elapsed())
    })
    .await
    .map_err(AgentError::ProbeTask)
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// No in-cluster or kubeconfig configuration.
    #[error("no Kubernetes client configuration (run with --no-kube outside a cluster)")]
    KubeConfig(#[source] kube::Error),
    /// The blocking probe task panicked or was cancelled.
    #[error("the probe task failed")]
    ProbeTask(#[source] tokio::task::JoinError),
    /// The prober could not be built.
    #[error(transparent)]
    Probe(#[from] SetupError),
    /// `--oneshot` could not apply its labels.
    #[error("applying node labels")]
    Labels(#[source] WriteError),
    /// A server ended without being asked to, or failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

fn log_failures(t: &NodeTopology) {
    for s in t.sources.iter().filter(|s| !s.ok) {
        tracing::warn!(source = %s.source, error = %s.error, stale = s.stale, "probe source failed");
    }
}

/// `--oneshot`: probes once, prints the labels, applies them when Kubernetes is enabled.
pub async fn run_oneshot(cfg: AgentConfig) -> Result<(), AgentError> {
    let (_, fresh, _) = probe_once(prober(&cfg)?).await?;
    let topo = step::next_state(&NodeTopology::default(), fresh, 1);
    log_failures(&topo);
    tracing::info!(
        gpus = topo.gpus.len(),
        fabric = topo.fabric.state.as_str(),
        "probed once"
    );
    let labels = labels::desired_labels(&topo, &cfg.labels);
    print!("{}", labels::render(&labels));
    if cfg.kube {
        let (client, hint) = kube_client().await?;
        let mut labeler = NodeLabeler::new(
            client,
            cfg.probe.node_name.clone(),
            cfg.kube_timeout,
            Metrics::new(),
        )
        .with_retry_after(hint.clone());
        let backoff = Backoff::fixed(Duration::from_millis(500), Duration::from_secs(10));
        retry(
            backoff,
            async || labeler.apply(&labels).await,
            |e, attempt, delay| {
                tracing::warn!(
                    error = e as &dyn std::error::Error,
                    attempt,
                    "label write failed"
                );
                (attempt < ONESHOT_ATTEMPTS).then(|| labeler::retry_delay(delay, hint.take()))
            },
        )
        .await
        .map_err(AgentError::Labels)?;
        tracing::info!(node = %cfg.probe.node_name, "node labels applied");
    }
    Ok(())
}

/// The client of the label writer and the event recorder. The kube client's own retry of 429,
/// 503 and 504 answers is off: the label writer retries each failed write itself, with its
/// backoff or the server's `Retry-After` when that is longer ([`node_labels::retry_delay`]), so
/// every attempt shows in `nodetopo_label_write_errors_total` and a throttled node sends one
/// request per retry, not a burst inside each.
async fn kube_client() -> Result<(kube::Client, RetryAfterHint), AgentError> {
    let config = crate::kube_client::inferred_config()
        .await
        .map_err(AgentError::KubeConfig)?;
    let hint = RetryAfterHint::default();
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(AgentError::KubeConfig)?
        .with_layer(&RetryAfterLayer(hint.clone()))
        .build();
    Ok((client, hint))
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let start_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(1);
    let metrics = Metrics::new();
    let (state_tx, state_rx) = watch::channel(Arc::new(Published::default()));
    let (labels_tx, labels_rx) = watch::channel::<Option<Labels>>(None);
    let mut lifecycle = Lifecycle::new();

    let grpc = bind("--grpc-listen", cfg.grpc_listen).await?;
    let http = bind("--metrics-listen", cfg.metrics_listen).await?;
    tracing::info!(grpc = ?api::local_addr(&grpc), metrics = ?http.local_addr().ok(), node = %cfg.probe.node_name, "agent listening");

    // Events are best effort: a full queue drops them, and they are never retried.
    let (events_tx, events_rx) = mpsc::channel::<NodeEvent>(16);
    if let Some(labeler) =
        start_labeler(&cfg, &metrics, labels_rx, events_rx, lifecycle.stop()).await?
    {
        lifecycle.worker(labeler);
    }
    let health = not_serving_yet().await;
    start_servers(
        &mut lifecycle,
        &cfg,
        grpc,
        http,
        state_rx,
        &metrics,
        &health,
    );
    let stop = lifecycle.stop();
    lifecycle.worker(probe_loop(
        cfg.clone(),
        prober(&cfg)?,
        Publishers {
            state: state_tx,
            labels: labels_tx,
            events: events_tx,
            health,
            metrics,
        },
        stop,
        start_ms,
    ));
    lifecycle.run(cfg.grace).await?;
    Ok(())
}

/// The label writer and the event recorder, when Kubernetes is enabled.
async fn start_labeler(
    cfg: &AgentConfig,
    metrics: &Metrics,
    labels_rx: watch::Receiver<Option<Labels>>,
    mut events_rx: mpsc::Receiver<NodeEvent>,
    shutdown_rx: watch::Receiver<bool>,
) -> Result<Option<impl Future<Output = ()> + use<>>, AgentError> {
    if !cfg.kube {
        drop(labels_rx);
        events_rx.close();
        return Ok(None);
    }
    let (client, hint) = kube_client().await?;
    tokio::spawn(crate::agent::labeler::record_events(
        client.clone(),
        cfg.probe.node_name.clone(),
        cfg.kube_timeout,
        events_rx,
    ));
    let l = NodeLabeler::new(
        client,
        cfg.probe.node_name.clone(),
        cfg.kube_timeout,
        metrics.clone(),
    )
    .with_retry_after(hint);
    Ok(Some(l.run(
        labels_rx,
        shutdown_rx,
        Backoff::fixed(Duration::from_millis(500), LABEL_RETRY_MAX),
    )))
}

/// A health reporter that says NOT_SERVING until the first probe.
async fn not_serving_yet() -> tonic_health::server::HealthReporter {
    let health = tonic_health::server::HealthReporter::new();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_service_status(api::SERVICE_NAME, tonic_health::ServingStatus::NotServing)
        .await;
    health
}

/// Starts the gRPC and metrics servers, each until the process is told to stop.
fn start_servers(
    lifecycle: &mut Lifecycle,
    cfg: &AgentConfig,
    grpc: TcpListener,
    http: TcpListener,
    state_rx: api::StateRx,
    metrics: &Metrics,
    health: &tonic_health::server::HealthReporter,
) {
    let topo_api = TopologyApi::new(state_rx, cfg.limits.max_watchers, Arc::new(metrics.clone()));
    let (limits, tls, health, stopped) = (
        cfg.limits.clone(),
        cfg.grpc_tls.clone(),
        health.clone(),
        lifecycle.stopped(),
    );
    lifecycle.server("gRPC server", async move {
        api::serve(grpc, topo_api, health, &limits, tls.as_ref(), stopped).await
    });
    lifecycle.server(
        "metrics server",
        axum::serve(http, metrics.router())
            .with_graceful_shutdown(lifecycle.stopped())
            .into_future(),
    );
}

/// The longest wait between label write attempts while the API server fails (each wait is
/// jittered in its upper half): after an outage the labels are written at most this long after
/// the server is back, and a node sends at most one write per 15 s while it is away.
const LABEL_RETRY_MAX: Duration = Duration::from_secs(30);

/// Label write attempts of `--oneshot`.
const ONESHOT_ATTEMPTS: u32 = 5;

/// Where the probe loop hands each new state.
struct Publishers {
    state: watch::Sender<Arc<Published>>,
    labels: watch::Sender<Option<Labels>>,
    events: mpsc::Sender<NodeEvent>,
    health: tonic_health::server::HealthReporter,
    metrics: Metrics,
}

impl Publishers {
    /// Sends what `step` decided: the metrics, the labels (when they differ), the event, and
    /// the state (watchers wake only on a new revision; a new probe time alone is stored
    /// silently). The first probe makes the health SERVING.
    async fn send(
        &self,
        step: step::Step,
        fresh_sources: &[crate::model::SourceStatus],
        took: Duration,
    ) {
        let step::Step {
            next,
            changed,
            labels,
            fabric_held,
            event,
        } = step;
        self.metrics.observe_probe(fresh_sources, took, &next);
        self.metrics.set_fabric_change_held(fabric_held);
        self.labels.send_if_modified(|cur| {
            let new = cur.as_ref() != Some(&labels);
            if new {
                *cur = Some(labels);
            }
            new
        });
        if changed {
            log_failures(&next);
            tracing::info!(revision = next.revision, took = ?took, "topology changed");
        }
        if let Some(ev) = event {
            let _ = self.events.try_send(ev);
        }
        let first = self.state.borrow().topo.revision == 0;
        let published = Arc::new(Published::new(next));
        self.state.send_if_modified(|cur| {
            *cur = published;
            changed
        });
        if changed {
            // A probe that changed the topology (the first above all: NVML's start, the sysfs
            // walk) frees most of what it allocated on the blocking thread, in that thread's
            // own arena, where it would otherwise stay resident.
            crate::memory::release_freed_memory();
        }
        if first {
            for service in ["", api::SERVICE_NAME] {
                self.health
                    .set_service_status(service, tonic_health::ServingStatus::Serving)
                    .await;
            }
        }
    }
}

/// When to probe next: every interval, and soon after an LLDP answer changes (paced, so a
/// neighbour that keeps changing is probed at most once per interval).
struct Trigger {
    ticker: tokio::time::Interval,
    lldp: Option<LldpView>,
    lldp_seen: Vec<(String, &'static str, String)>,
    pacer: pacing::LldpPacer,
}

impl Trigger {
    fn new(interval: Duration, lldp: Option<LldpView>) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            lldp,
            lldp_seen: Vec::new(),
            pacer: pacing::LldpPacer::new(LLDP_SETTLE, interval),
        }
    }

    /// Waits until the next probe is due; `false` when the agent is told to stop first.
    async fn next(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let lldp_moved = tokio::select! {
            _ = self.ticker.tick() => false,
            _ = lldp_changed(&mut self.lldp, &self.lldp_seen) => true,
            _ = shutdown.wait_for(|s| *s) => return false,
        };
        if lldp_moved {
            let was_backing_off = self.pacer.backing_off();
            let wait = self.pacer.wait(tokio::time::Instant::now().into_std());
            if self.pacer.backing_off() && !was_backing_off {
                tracing::warn!(
                    ?wait,
                    "LLDP answers keep changing; probing for them less often, at most once per \
                     interval"
                );
            }
            tracing::debug!(?wait, "an LLDP answer changed; probing again");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return false,
            }
            self.ticker.reset();
        }
        true
    }

    /// Records the LLDP answers the probe just used.
    fn probed(&mut self) {
        if let Some(v) = &self.lldp {
            self.lldp_seen = v.digest();
        }
    }
}

/// Waits, probes on the blocking pool, decides ([`step::Decider::step`]) and sends, until the
/// agent is told to stop.
async fn probe_loop(
    cfg: AgentConfig,
    prober: Box<Prober>,
    out: Publishers,
    mut shutdown: watch::Receiver<bool>,
    start_ms: u64,
) {
    let mut trigger = Trigger::new(cfg.interval, prober.lldp().map(|l| l.view()));
    let mut source = Some(prober);
    let mut decider = step::Decider::new(cfg.labels.clone(), start_ms);
    while trigger.next(&mut shutdown).await {
        let Some(src) = source.take() else { return };
        let (src, fresh, took) = tokio::select! {
            r = probe_once(src) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = &e as &dyn std::error::Error, "probe task failed; stopping the probe loop");
                    return;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        trigger.probed();
        source = Some(src);
        let fresh_sources = fresh.sources.clone();
        let step = decider.step(&out.state.borrow().topo, fresh);
        out.send(step, &fresh_sources, took).await;
    }
}
