//! The RoCE leaf by LLDP: which switch, and which of its ports, each Ethernet netdev is cabled
//! to, from the LLDP frames (IEEE 802.1AB, ethertype 0x88cc) the switch sends on the port.
//!
//! - [`frame`]: the pure LLDPDU parser ([`parse_frame`]).
//! - [`cache`]: the last answer per netdev and what it means at a time ([`LldpCache`],
//!   [`LldpStatus`]); pure.
//! - [`socket`]: the raw AF_PACKET socket of one netdev ([`LldpSocket`]); needs CAP_NET_RAW.
//! - [`LldpWatcher`]: one listening task per netdev feeding a shared cache, so a frame is
//!   recorded when it arrives (its receive time and TTL are exact) and the probe reads the
//!   answers without waiting. [`LldpWatcher::settle`] bounds the first wait: switches send every
//!   30 s by default, so a freshly started agent waits a bounded time and reports
//!   [`LldpStatus::NoFrameYet`] for ports that have not been heard from.
//!
//! Why a raw socket and not a local lldpd (`lldpcli -f json show neighbors`): GPU nodes rarely
//! run lldpd, and relying on it would make the leaf label depend on a second daemon, its
//! configuration and its control socket (mounted into the agent's pod) on every node. The raw
//! socket needs one capability and hears the same frames, also next to a local lldpd (the kernel
//! gives every packet socket its own copy; the host's own LLDPDUs are skipped).
//!
//! Some NICs run an LLDP agent in firmware that consumes LLDP frames before the host sees them
//! (for DCBX); on those the firmware agent must be told to pass them up (see SECURITY.md).

pub mod cache;
pub mod frame;
pub mod socket;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};

pub use self::{
    cache::{Failure, FailureKind, Heard, LldpCache, LldpStatus},
    frame::{
        ChassisId, ChassisIdSubtype, IdValue, LldpFrame, LldpNeighbor, MacAddr, ParseError, PortId,
        PortIdSubtype, parse_frame, parse_lldpdu,
    },
    socket::{CaptureError, LldpSocket},
};

/// Default delay before a netdev whose socket failed is opened again.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(30);

/// Listens for LLDP on a set of netdevs, one tokio task each, and keeps the last answer of
/// each. Dropping it stops the tasks and closes the sockets.
#[derive(Debug)]
pub struct LldpWatcher {
    cache: Arc<Mutex<LldpCache>>,
    tasks: BTreeMap<String, JoinHandle<()>>,
    changed_tx: Arc<watch::Sender<u64>>,
    retry: Duration,
}

impl Default for LldpWatcher {
    fn default() -> Self {
        Self::new(DEFAULT_RETRY)
    }
}

impl LldpWatcher {
    /// A watcher of no netdevs; a failed socket is opened again after `retry`.
    pub fn new(retry: Duration) -> Self {
        Self {
            cache: Arc::default(),
            tasks: BTreeMap::new(),
            changed_tx: Arc::new(watch::channel(0).0),
            retry: retry.max(Duration::from_millis(10)),
        }
    }

    /// Watches exactly `netdevs`: starts a listener for each new one, stops (and forgets) the
    /// ones no longer named, keeps the others and their answers. Must run inside a tokio runtime
    /// with I/O and time enabled. Sockets are opened before this returns, so a permission or
    /// name failure is in the status at once.
    pub fn watch<S: AsRef<str>>(&mut self, netdevs: &[S]) {
        let wanted: std::collections::BTreeSet<&str> = netdevs.iter().map(AsRef::as_ref).collect();
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for netdev in gone {
            if let Some(t) = self.tasks.remove(&netdev) {
                t.abort();
            }
            lock(&self.cache).unwatch(&netdev);
        }
        for netdev in wanted {
            if self.tasks.contains_key(netdev) {
                continue;
            }
            lock(&self.cache).watch(netdev);
            let first = LldpSocket::open(netdev);
            let task = tokio::spawn(listen(
                netdev.to_string(),
                first,
                Arc::clone(&self.cache),
                Arc::clone(&self.changed_tx),
                self.retry,
            ));
            self.tasks.insert(netdev.to_string(), task);
        }
        self.changed_tx.send_modify(|v| *v += 1);
    }

    /// The netdevs watched, sorted.
    pub fn netdevs(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// What is known of `netdev` at `now` ([`LldpStatus::NotWatched`] if it is not watched).
    pub fn status(&self, netdev: &str, now: SystemTime) -> LldpStatus {
        lock(&self.cache).status(netdev, now)
    }

    /// The status of every watched netdev at `now`.
    pub fn snapshot(&self, now: SystemTime) -> BTreeMap<String, LldpStatus> {
        lock(&self.cache).snapshot(now)
    }

    /// Waits until every watched netdev has heard a frame or failed, at most `wait`. Returns
    /// whether that happened (`false`: some netdev is still [`LldpStatus::NoFrameYet`]).
    pub async fn settle(&self, wait: Duration) -> bool {
        let mut rx = self.changed_tx.subscribe();
        let settled = || lock(&self.cache).settled();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            rx.mark_unchanged();
            if settled() {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or (unreachable while `self` holds the sender) closed.
                Ok(Err(_)) | Err(_) => return settled(),
            }
        }
    }
}

impl Drop for LldpWatcher {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

fn lock(cache: &Mutex<LldpCache>) -> MutexGuard<'_, LldpCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One netdev's listener: records every frame, and every failure, reopening after `retry`.
async fn listen(
    netdev: String,
    first: Result<LldpSocket, CaptureError>,
    cache: Arc<Mutex<LldpCache>>,
    changed: Arc<watch::Sender<u64>>,
    retry: Duration,
) {
    let mut opened = first;
    let mut last_failure: Option<Failure> = None;
    loop {
        match opened {
            Ok(socket) => {
                if last_failure.take().is_some() {
                    tracing::info!(netdev, "listening for LLDP again");
                }
                lock(&cache).clear_failure(&netdev);
                changed.send_modify(|v| *v += 1);
                let e = loop {
                    match socket.next_frame().await {
                        Ok((frame, at)) => {
                            tracing::debug!(
                                netdev,
                                chassis = %frame.neighbor.chassis_id,
                                port = %frame.neighbor.port_id,
                                ttl_s = frame.neighbor.ttl_s,
                                "LLDP frame"
                            );
                            lock(&cache).record_frame(&netdev, frame, at);
                            changed.send_modify(|v| *v += 1);
                        }
                        Err(e) => break e,
                    }
                };
                last_failure = Some(fail(&netdev, &e, last_failure.as_ref(), &cache, &changed));
            }
            Err(e) => {
                last_failure = Some(fail(&netdev, &e, last_failure.as_ref(), &cache, &changed));
            }
        }
        tokio::time::sleep(retry).await;
        opened = LldpSocket::open(&netdev);
    }
}

/// Records a failure; logs it as a warning when it differs from the previous one (a retry that
/// fails the same way logs at debug).
fn fail(
    netdev: &str,
    e: &CaptureError,
    previous: Option<&Failure>,
    cache: &Mutex<LldpCache>,
    changed: &watch::Sender<u64>,
) -> Failure {
    let failure = e.failure();
    if previous == Some(&failure) {
        tracing::debug!(netdev, error = %failure.message, "cannot listen for LLDP (still)");
    } else {
        tracing::warn!(netdev, error = %failure.message, "cannot listen for LLDP");
    }
    lock(cache).record_failure(netdev, failure.clone());
    changed.send_modify(|v| *v += 1);
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a netdev of that name (as root) or without CAP_NET_RAW (otherwise), the listener
    /// fails at once, the wait settles at once, retries keep the status, and unwatching forgets.
    /// Hearing frames is tested against a real lldpd in tests/lldp_netns.rs.
    #[tokio::test]
    async fn a_failed_netdev_settles_at_once_and_unwatching_forgets_it() {
        let mut w = LldpWatcher::new(Duration::from_millis(20));
        w.watch(&["nosuch-lldp0"]);
        assert_eq!(w.netdevs(), ["nosuch-lldp0"]);
        let started = tokio::time::Instant::now();
        assert!(w.settle(Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        let s = w.status("nosuch-lldp0", SystemTime::now());
        assert!(
            matches!(s.name(), "no_such_netdev" | "permission_denied"),
            "{s:?}"
        );
        assert!(s.last_known().is_none());
        // Several retries later: the same failure, no answer invented.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(w.status("nosuch-lldp0", SystemTime::now()), s);
        w.watch::<&str>(&[]);
        assert!(w.netdevs().is_empty());
        assert_eq!(
            w.status("nosuch-lldp0", SystemTime::now()),
            LldpStatus::NotWatched
        );
        assert!(w.settle(Duration::ZERO).await, "nothing left to wait for");
    }
}
