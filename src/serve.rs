//! The one server lifecycle of the agent, the extender and the webhook.
//!
//! A process registers its tasks on a [`Lifecycle`], then waits in [`Lifecycle::run`]:
//! - until SIGTERM or Ctrl-C ([`shutdown_signal`]), or until a server stops on its own, which is
//!   a failure (the process exits non-zero and its controller restarts it);
//! - then it tells every task to stop (the receiver of [`Lifecycle::stop`] turns `true`) and
//!   drains the servers and workers, within a grace period: what has not finished by then is
//!   abandoned, with a warning.
//!
//! The servers bind their addresses with [`bind`], whose error names the flag.
//!
//! Three kinds of task:
//! - a **server** runs until told to stop; its early end, with or without an error, fails the
//!   process;
//! - a **worker** watches the stop receiver itself and is drained like a server;
//! - a **helper** runs for the process's whole life without watching for the stop (a
//!   reflector, a certificate reloader) and is aborted once the rest has drained.

use std::{
    collections::HashMap, error::Error as StdError, future::Future, net::SocketAddr, time::Duration,
};

use thiserror::Error;
use tokio::{
    net::TcpListener,
    sync::watch,
    task::{Id, JoinError, JoinSet},
};

/// A listen address that could not be bound.
#[derive(Debug, Error)]
#[error("binding {flag} {addr}")]
pub struct BindError {
    /// The flag that names the address.
    pub flag: &'static str,
    /// The socket address that was asked for.
    pub addr: SocketAddr,
    /// The OS error (address in use, permission denied, ...).
    #[source]
    pub source: std::io::Error,
}

/// Binds the listen address that `flag` names.
pub async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { flag, addr, source })
}

/// A boxed error of a server task.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a process's servers stopped before it was told to stop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A server failed.
    #[error("the {what} failed")]
    Failed {
        /// Which server, by the name it was started under.
        what: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// A server returned without being told to stop.
    #[error("the {0} stopped")]
    Stopped(&'static str),
}

/// The tasks of one process, and the stop that ends them. Must be used inside a Tokio runtime.
pub struct Lifecycle {
    stop: watch::Sender<bool>,
    servers: JoinSet<Result<(), BoxError>>,
    names: HashMap<Id, &'static str>,
    workers: JoinSet<()>,
    helpers: JoinSet<()>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// No tasks yet.
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            servers: JoinSet::new(),
            names: HashMap::new(),
            workers: JoinSet::new(),
            helpers: JoinSet::new(),
        }
    }

    /// A receiver that turns `true` when the process is told to stop.
    pub fn stop(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A future that completes when the process is told to stop: for a server's graceful
    /// shutdown.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Spawns a server named `what` (for logs and errors).
    pub fn server<E>(
        &mut self,
        what: &'static str,
        fut: impl Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: Into<BoxError> + 'static,
    {
        let task = self
            .servers
            .spawn(async move { fut.await.map_err(Into::into) });
        self.names.insert(task.id(), what);
    }

    /// Spawns a task that watches [`Self::stop`] and is drained like a server.
    pub fn worker(&mut self, fut: impl Future<Output = ()> + Send + 'static) {
        self.workers.spawn(fut);
    }

    /// Spawns a task that runs until the process ends; it is aborted after the drain.
    pub fn helper(&mut self, fut: impl Future<Output = ()> + Send + 'static) {
        self.helpers.spawn(fut);
    }

    /// Runs until SIGTERM or Ctrl-C, then drains within `grace`.
    pub async fn run(self, grace: Duration) -> Result<(), ServeError> {
        self.run_until(shutdown_signal(), grace).await
    }

    /// Runs until `signal` completes, then drains within `grace`. A server that ends first fails
    /// the process at once: the others are told to stop and are not waited for.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), ServeError> {
        let Self {
            stop,
            mut servers,
            names,
            mut workers,
            helpers,
        } = self;
        let name = |id: Id| names.get(&id).copied().unwrap_or("server");
        let early = tokio::select! {
            _ = signal => None,
            Some(r) = servers.join_next_with_id() => Some(outcome(r, name)),
        };
        let _ = stop.send(true);
        if let Some((what, result)) = early {
            return Err(result.err().unwrap_or(ServeError::Stopped(what)));
        }
        tracing::info!(grace = ?grace, "shutting down: draining");
        let drain = async {
            while workers.join_next().await.is_some() {}
            let mut first_error = Ok(());
            while let Some(r) = servers.join_next_with_id().await {
                if let (_, Err(e)) = outcome(r, name)
                    && first_error.is_ok()
                {
                    first_error = Err(e);
                }
            }
            first_error
        };
        let result = tokio::time::timeout(grace, drain)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(grace = ?grace, "shutdown grace period over; exiting");
                Ok(())
            });
        // Dropping the sets aborts what is left: the helpers, and whatever outlived the grace.
        drop(helpers);
        result
    }
}

/// A finished server task: its name, and its outcome. An early `Ok` is reported by the caller
/// as [`ServeError::Stopped`].
fn outcome(
    r: Result<(Id, Result<(), BoxError>), JoinError>,
    name: impl Fn(Id) -> &'static str,
) -> (&'static str, Result<(), ServeError>) {
    match r {
        Ok((id, Ok(()))) => (name(id), Ok(())),
        Ok((id, Err(source))) => {
            let what = name(id);
            (what, Err(ServeError::Failed { what, source }))
        }
        Err(e) => {
            let what = name(e.id());
            let source = Box::new(e);
            (what, Err(ServeError::Failed { what, source }))
        }
    }
}

/// Completes on SIGTERM (what the kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stop_drains_servers_and_workers_then_aborts_helpers() {
        let mut lc = Lifecycle::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let stopped = lc.stopped();
        let tx = done_tx.clone();
        lc.server("server", async move {
            stopped.await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send("server").unwrap();
            Ok::<(), std::io::Error>(())
        });
        let mut stop = lc.stop();
        let tx = done_tx.clone();
        lc.worker(async move {
            let _ = stop.wait_for(|s| *s).await;
            tx.send("worker").unwrap();
        });
        let tx = done_tx;
        lc.helper(async move {
            std::future::pending::<()>().await;
            tx.send("helper").unwrap();
        });
        let r = lc
            .run_until(
                tokio::time::sleep(Duration::from_secs(5)),
                Duration::from_secs(10),
            )
            .await;
        assert!(r.is_ok(), "{r:?}");
        let mut done = Vec::new();
        while let Ok(d) = done_rx.try_recv() {
            done.push(d);
        }
        done.sort_unstable();
        assert_eq!(done, ["server", "worker"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_is_bounded_by_the_grace_period() {
        let mut lc = Lifecycle::new();
        lc.server("stuck", async {
            std::future::pending::<()>().await;
            Ok::<(), std::io::Error>(())
        });
        let start = tokio::time::Instant::now();
        let r = lc.run_until(async {}, Duration::from_secs(3)).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_ends_early_fails_the_process() {
        let mut lc = Lifecycle::new();
        let mut stop = lc.stop();
        lc.server("gRPC server", async {
            Err::<(), _>(std::io::Error::other("address in use"))
        });
        let r = lc
            .run_until(std::future::pending(), Duration::from_secs(3))
            .await;
        assert!(
            matches!(
                &r,
                Err(ServeError::Failed {
                    what: "gRPC server",
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(
            *stop.borrow_and_update(),
            "the other tasks were told to stop"
        );

        let mut lc = Lifecycle::new();
        lc.server("metrics server", async { Ok::<(), std::io::Error>(()) });
        let r = lc
            .run_until(std::future::pending(), Duration::from_secs(3))
            .await;
        assert!(
            matches!(r, Err(ServeError::Stopped("metrics server"))),
            "{r:?}"
        );
    }
}
