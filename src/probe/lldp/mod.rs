//! The RoCE leaf by LLDP: which switch, and which of its ports, each Ethernet netdev is cabled
//! to, from the LLDP frames (IEEE 802.1AB, ethertype 0x88cc) the switch sends on the port.
//!
//! - [`frame`]: the pure LLDPDU parser ([`parse_frame`]).
//! - [`cache`]: the last answer per netdev and what it means at a time ([`LldpCache`],
//!   [`LldpStatus`]); pure.
//! - [`ports`]: which ports of the model are listened on (active compute-rail RoCE ports, by
//!   netdev) and each port's neighbour from what was heard; pure.
//! - [`LldpSession`]: the probe's use of a watcher: watch the netdevs of a probe, wait a bounded
//!   time once, read the answers.
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
#[cfg(test)]
mod captured;
pub mod frame;
pub mod ports;
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

/// Whether the probe listens for LLDP on the RoCE compute ports.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
pub enum LldpMode {
    /// Do not listen for LLDP.
    Off,
    /// Listen where it can: when every port's socket is refused (no CAP_NET_RAW) or no port's
    /// netdev exists here (another network namespace, a recorded sysfs tree), listen on none
    /// and report no `lldp` source.
    #[default]
    Auto,
    /// Listen on every active compute-rail RoCE port and report each failure.
    On,
}

/// The probe's use of a watcher: the netdevs of each probe are watched, the first probe waits
/// a bounded time for their frames, and every probe reads the answers without waiting.
#[derive(Debug)]
pub struct LldpSession {
    handle: tokio::runtime::Handle,
    watcher: LldpWatcher,
    mode: LldpMode,
    first_wait: Duration,
    waited: bool,
    skipped: Option<&'static str>,
}

impl LldpSession {
    /// A session whose listeners run on `handle` (a runtime with I/O and time enabled, driven
    /// by other threads than the one that calls [`LldpSession::probe`]).
    pub fn new(handle: tokio::runtime::Handle, mode: LldpMode, first_wait: Duration) -> Self {
        Self {
            handle,
            watcher: LldpWatcher::default(),
            mode,
            first_wait,
            waited: false,
            skipped: None,
        }
    }

    /// Blocking (not on a runtime worker thread): watches the netdevs of the active RoCE ports
    /// of the compute rails among `nics`, waits for them once (the first call, at most the first
    /// wait), and sets each such port's neighbour ([`ports::fill`]). Returns the `lldp` source
    /// status, or `None` when there is nothing to listen on (or, in auto mode, nothing can be).
    pub fn probe(&mut self, nics: &mut [crate::model::Nic]) -> Option<crate::model::SourceStatus> {
        if self.mode == LldpMode::Off {
            return None;
        }
        let netdevs = ports::netdevs(nics);
        if self.mode == LldpMode::Auto
            && let Some(why) = self.cannot_listen(&netdevs)
        {
            if self.skipped != Some(why) {
                tracing::info!(netdevs = ?netdevs, reason = why, "lldp auto: not listening (--lldp on reports each port)");
            }
            self.skipped = Some(why);
            let _rt = self.handle.enter();
            self.watcher.watch::<&str>(&[]);
            return None;
        }
        self.skipped = None;
        {
            let _rt = self.handle.enter();
            self.watcher.watch(&netdevs);
        }
        if !self.waited && !netdevs.is_empty() {
            self.waited = true;
            let started = std::time::Instant::now();
            let settled = self.handle.block_on(self.watcher.settle(self.first_wait));
            tracing::info!(
                netdevs = %netdevs.join(","),
                settled,
                waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "lldp: first wait over"
            );
        }
        ports::fill(nics, &self.watcher.snapshot(SystemTime::now()))
    }

    /// Auto mode: why none of `netdevs` can be listened on, trying one socket at a time until
    /// one opens (and is closed again): every socket refused, or no such netdev here.
    fn cannot_listen(&self, netdevs: &[String]) -> Option<&'static str> {
        if netdevs.iter().any(|n| self.watcher.tasks.contains_key(n)) {
            return None;
        }
        let _rt = self.handle.enter();
        let mut kinds = Vec::new();
        for n in netdevs {
            match LldpSocket::open(n) {
                Ok(_) => return None,
                Err(e) => kinds.push(e.failure().kind),
            }
        }
        if kinds.contains(&FailureKind::PermissionDenied) {
            Some("no CAP_NET_RAW")
        } else if !kinds.is_empty() && kinds.iter().all(|k| *k == FailureKind::NoSuchNetdev) {
            Some("no compute netdev exists in this network namespace")
        } else {
            None
        }
    }

    /// A view of the answers for another task.
    pub fn view(&self) -> LldpView {
        LldpView {
            cache: Arc::clone(&self.watcher.cache),
            changed: self.watcher.changed_tx.subscribe(),
        }
    }
}

/// A read-only view of a watcher's answers, for a task that reacts to them (the agent's probe
/// loop probes again when they change).
#[derive(Debug, Clone)]
pub struct LldpView {
    cache: Arc<Mutex<LldpCache>>,
    changed: watch::Receiver<u64>,
}

impl LldpView {
    /// What of the answers matters to the ports now ([`ports::digest`]).
    pub fn digest(&self) -> Vec<(String, &'static str, String)> {
        ports::digest(&lock(&self.cache).snapshot(SystemTime::now()))
    }

    /// Waits for the next frame or failure recorded (also a repeated frame: compare
    /// [`LldpView::digest`]). Never resolves once the watcher is gone.
    pub async fn changed(&mut self) {
        if self.changed.changed().await.is_err() {
            std::future::pending::<()>().await;
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
            matches!(s.name(), "no-such-netdev" | "permission-denied"),
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
