//! Topology sources: where the cluster view's data comes from.
//!
//! - [`AgentEndpoints`]: node → endpoint, from `--agents FILE` or the Node watch.
//! - [`watch_agent`]: one task per node that connects through an [`AgentConnector`], applies
//!   every topology it streams, marks the node stale when the stream breaks, and reconnects
//!   with exponential [`Backoff`].
//! - [`FileConnector`]: `file:PATH` endpoints, a snapshot file that is re-read when it changes
//!   (for running without agents, and for tests).
//!
//! The gRPC connector is in [`super::grpc`]; this module only knows the trait.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use tokio::sync::watch;

use super::view::{SharedView, ViewEvent};
use crate::backoff::Backoff;
use crate::model::NodeTopology;

/// A boxed future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors of a topology source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Could not connect.
    #[error("connecting to {endpoint}")]
    Connect {
        /// The agent's endpoint (`host:port`, or `file:PATH`).
        endpoint: String,
        /// The cause, kept whole so that its chain is logged.
        #[source]
        source: BoxError,
    },
    /// The stream broke.
    #[error("stream from {endpoint} broke")]
    Stream {
        /// The agent's endpoint (`host:port`, or `file:PATH`).
        endpoint: String,
        /// The cause, kept whole so that its chain is logged.
        #[source]
        source: BoxError,
    },
    /// The agents file is unreadable or malformed.
    #[error("agents file {path}")]
    AgentsFile {
        /// Path of the agents file (`--agents`).
        path: PathBuf,
        /// The read or parse error.
        #[source]
        source: BoxError,
    },
}

/// The cause of a [`SourceError`], kept whole so that the log line shows its chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of topologies from one agent. `None` = the stream ended.
pub trait TopologyStream: Send {
    /// The next topology.
    fn next(&mut self) -> BoxFuture<'_, Option<Result<NodeTopology, SourceError>>>;
}

/// Opens topology streams.
pub trait AgentConnector: Send + Sync + 'static {
    /// Connects to `endpoint` and starts watching from `since_revision`.
    fn connect<'a>(
        &'a self,
        endpoint: &'a str,
        since_revision: u64,
    ) -> BoxFuture<'a, Result<Box<dyn TopologyStream>, SourceError>>;
}

/// Watches one node's agent until `stop` turns true: applies each topology to the view, marks
/// the node stale whenever the connection or stream fails, and retries with backoff.
pub async fn watch_agent(
    node: String,
    endpoint: String,
    connector: Arc<dyn AgentConnector>,
    view: SharedView,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let mut revision = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let reason = match connector.connect(&endpoint, revision).await {
            Ok(mut stream) => loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = stop.changed() => return,
                };
                match item {
                    // An endpoint that answers for another node (an address reused after a
                    // node was replaced, a wrong agents file, a port another agent took) must
                    // not lend that node's facts to this one.
                    Some(Ok(t)) if !t.node_name.is_empty() && t.node_name != node => {
                        break format!(
                            "{endpoint} answers for node {:?}, not {node:?}",
                            t.node_name
                        );
                    }
                    Some(Ok(t)) => {
                        backoff.reset();
                        revision = t.revision;
                        tracing::debug!(%node, revision, "topology update");
                        view.apply(ViewEvent::Topology {
                            node: node.clone(),
                            topology: Arc::new(t),
                        });
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break format!("stream from {endpoint} ended"),
                }
            },
            Err(e) => e.to_string(),
        };
        tracing::info!(%node, %reason, "agent disconnected; node is stale");
        view.apply(ViewEvent::Disconnected {
            node: node.clone(),
            reason,
        });
        // Start from scratch after a reconnect so that a restarted agent is not skipped.
        revision = 0;
        let delay = backoff.next_random_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One node in the agents file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum AgentSpec {
    /// `node: host:port`.
    Endpoint(String),
    /// `node: {endpoint: host:port, labels: {...}}`.
    Full {
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
}

/// node → endpoint and node labels, from `--agents FILE` (YAML or JSON).
///
/// ```yaml
/// gpu-a-01: 10.0.0.11:9750
/// gpu-a-02:
///   endpoint: 10.0.0.12:9750
///   labels: {network.topology.nvidia.com/leaf: leaf-1}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentEndpoints {
    /// node → `host:port` (or `file:PATH`).
    pub endpoints: BTreeMap<String, String>,
    /// node → labels given in the file.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl AgentEndpoints {
    /// Parses the file's text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SourceError> {
        let raw: BTreeMap<String, AgentSpec> =
            serde_yaml_ng::from_str(text).map_err(|e| SourceError::AgentsFile {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
        let mut out = Self::default();
        for (node, spec) in raw {
            match spec {
                AgentSpec::Endpoint(e) => {
                    out.endpoints.insert(node, e);
                }
                AgentSpec::Full { endpoint, labels } => {
                    if let Some(e) = endpoint {
                        out.endpoints.insert(node.clone(), e);
                    }
                    if !labels.is_empty() {
                        out.labels.insert(node, labels);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::AgentsFile {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Self::parse(&text, path)
    }
}

/// Streams a snapshot file (`file:PATH` endpoints): yields it when it first appears and again
/// whenever its modification time changes; the stream fails when the file is gone.
#[derive(Debug, Clone)]
pub struct FileConnector {
    /// How often the file is checked.
    pub poll: Duration,
}

struct FileStream {
    path: PathBuf,
    poll: Duration,
    seen: Option<SystemTime>,
}

fn read_snapshot(path: &Path) -> Result<(NodeTopology, SystemTime), BoxError> {
    let meta = std::fs::metadata(path)?;
    let text = std::fs::read_to_string(path)?;
    let t: NodeTopology = serde_json::from_str(&text)
        .or_else(|_| serde_yaml_ng::from_str(&text))
        .map_err(|e| format!("not a topology: {e}"))?;
    Ok((t, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

impl TopologyStream for FileStream {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<NodeTopology, SourceError>>> {
        Box::pin(async move {
            loop {
                let path = self.path.clone();
                let read = tokio::task::spawn_blocking(move || read_snapshot(&path))
                    .await
                    .map_err(BoxError::from)
                    .and_then(|r| r);
                match read {
                    Ok((t, mtime)) if self.seen != Some(mtime) => {
                        self.seen = Some(mtime);
                        return Some(Ok(t));
                    }
                    Ok(_) => tokio::time::sleep(self.poll).await,
                    Err(source) => {
                        return Some(Err(SourceError::Stream {
                            endpoint: format!("file:{}", self.path.display()),
                            source,
                        }));
                    }
                }
            }
        })
    }
}

impl AgentConnector for FileConnector {
    fn connect<'a>(
        &'a self,
        endpoint: &'a str,
        _since_revision: u64,
    ) -> BoxFuture<'a, Result<Box<dyn TopologyStream>, SourceError>> {
        Box::pin(async move {
            let path = PathBuf::from(endpoint.strip_prefix("file:").unwrap_or(endpoint));
            let probe = path.clone();
            let exists = tokio::task::spawn_blocking(move || probe.exists())
                .await
                .unwrap_or(false);
            if !exists {
                return Err(SourceError::Connect {
                    endpoint: endpoint.to_string(),
                    source: "no such file".into(),
                });
            }
            Ok(Box::new(FileStream {
                path,
                poll: self.poll,
                seen: None,
            }) as Box<dyn TopologyStream>)
        })
    }
}

/// Sends `file:` endpoints to one connector and everything else to another.
pub struct SchemeConnector {
    /// For `file:PATH`.
    pub file: Arc<dyn AgentConnector>,
    /// For `host:port`.
    pub network: Arc<dyn AgentConnector>,
}

impl AgentConnector for SchemeConnector {
    fn connect<'a>(
        &'a self,
        endpoint: &'a str,
        since_revision: u64,
    ) -> BoxFuture<'a, Result<Box<dyn TopologyStream>, SourceError>> {
        if endpoint.starts_with("file:") {
            self.file.connect(endpoint, since_revision)
        } else {
            self.network.connect(endpoint, since_revision)
        }
    }
}

#[cfg(test)]
mod tests;
