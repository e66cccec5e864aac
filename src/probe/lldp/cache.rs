//! The last LLDP answer per netdev, and what it means at a given time: pure, clock passed in.
//!
//! - A frame replaces the netdev's previous answer (a port has one switch at its other end; when
//!   the cable moves, the new switch's frame is the answer).
//! - An answer whose TTL has run out is reported as expired but kept as the last known one; a
//!   shutdown LLDPDU (TTL 0) expires at once.
//! - A capture failure (no permission, no such netdev, a socket error) is reported with the last
//!   known answer, if any; the next frame clears it.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde::{Serialize, Serializer};

use super::frame::{LldpFrame, LldpNeighbor, MacAddr};

/// One received LLDPDU and when it was heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heard {
    /// What the neighbour said.
    pub neighbor: LldpNeighbor,
    /// The sending port's MAC address.
    pub source: MacAddr,
    /// When the frame arrived.
    #[serde(serialize_with = "rfc3339")]
    pub received_at: SystemTime,
    /// When its TTL runs out (`received_at` + TTL).
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: SystemTime,
}

impl Heard {
    /// The answer of `frame` received at `received_at`.
    pub fn new(frame: LldpFrame, received_at: SystemTime) -> Self {
        let expires_at = received_at + Duration::from_secs(u64::from(frame.neighbor.ttl_s));
        Self {
            neighbor: frame.neighbor,
            source: frame.source,
            received_at,
            expires_at,
        }
    }

    /// Whether the TTL has run out at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// Why a netdev could not be listened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The process lacks CAP_NET_RAW for an AF_PACKET socket.
    PermissionDenied,
    /// No network interface has that name (in this network namespace).
    NoSuchNetdev,
    /// Any other socket error (its message says which call failed and why).
    Socket,
}

/// A capture failure as the status reports it: its kind and its error chain as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error and its causes, `: `-joined.
    pub message: String,
}

/// What is known of the LLDP neighbour of one netdev at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum LldpStatus {
    /// A frame was heard and its TTL has not run out.
    Current(Heard),
    /// The last frame's TTL has run out (or it was a shutdown LLDPDU); kept as the last known
    /// neighbour.
    Expired(Heard),
    /// Listening, nothing heard yet (LLDP is sent every 30 s by default; a port without an LLDP
    /// sender stays here).
    NoFrameYet,
    /// The netdev could not be listened on.
    Failed {
        /// What failed: its kind and its error chain.
        #[serde(flatten)]
        failure: Failure,
        /// The last frame heard before the failure, if any (current or expired).
        #[serde(skip_serializing_if = "Option::is_none")]
        last_known: Option<Heard>,
    },
    /// The netdev is not watched.
    NotWatched,
}

impl LldpStatus {
    /// The neighbour, only while current.
    pub fn current(&self) -> Option<&Heard> {
        match self {
            LldpStatus::Current(h) => Some(h),
            _ => None,
        }
    }

    /// The last neighbour heard, current or not.
    pub fn last_known(&self) -> Option<&Heard> {
        match self {
            LldpStatus::Current(h) | LldpStatus::Expired(h) => Some(h),
            LldpStatus::Failed { last_known, .. } => last_known.as_ref(),
            LldpStatus::NoFrameYet | LldpStatus::NotWatched => None,
        }
    }

    /// A short name of the status for logs and `nodetopo lldp`: `current`, `expired`,
    /// `no-frame-yet`, `permission-denied`, `no-such-netdev`, `socket-error`, `not-watched`.
    /// The two that a port's neighbour status also has are spelled as the model spells them (a
    /// test checks it).
    pub fn name(&self) -> &'static str {
        match self {
            LldpStatus::Current(_) => "current",
            LldpStatus::Expired(_) => "expired",
            LldpStatus::NoFrameYet => "no-frame-yet",
            LldpStatus::Failed { failure, .. } => match failure.kind {
                FailureKind::PermissionDenied => "permission-denied",
                FailureKind::NoSuchNetdev => "no-such-netdev",
                FailureKind::Socket => "socket-error",
            },
            LldpStatus::NotWatched => "not-watched",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Entry {
    last: Option<Heard>,
    failure: Option<Failure>,
}

/// The last answer and the last failure of every watched netdev.
#[derive(Debug, Clone, Default)]
pub struct LldpCache {
    entries: BTreeMap<String, Entry>,
}

impl LldpCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts watching `netdev` (no answer yet); a netdev already watched keeps its answer.
    pub fn watch(&mut self, netdev: &str) {
        self.entries.entry(netdev.to_string()).or_default();
    }

    /// Stops watching `netdev` and forgets its answer.
    pub fn unwatch(&mut self, netdev: &str) {
        self.entries.remove(netdev);
    }

    /// The netdevs watched, sorted.
    pub fn netdevs(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Records a frame heard on `netdev` at `received_at`: it replaces the previous answer, unless
    /// that one was received later (frames handed in out of order), and clears a failure.
    pub fn record_frame(&mut self, netdev: &str, frame: LldpFrame, received_at: SystemTime) {
        let e = self.entries.entry(netdev.to_string()).or_default();
        if e.last.as_ref().is_some_and(|h| h.received_at > received_at) {
            return;
        }
        e.last = Some(Heard::new(frame, received_at));
        e.failure = None;
    }

    /// Records that `netdev` could not be listened on; its last answer is kept.
    pub fn record_failure(&mut self, netdev: &str, failure: Failure) {
        self.entries.entry(netdev.to_string()).or_default().failure = Some(failure);
    }

    /// Clears a failure of `netdev` (its socket is open again) without touching its answer.
    pub fn clear_failure(&mut self, netdev: &str) {
        if let Some(e) = self.entries.get_mut(netdev) {
            e.failure = None;
        }
    }

    /// What is known of `netdev` at `now`.
    pub fn status(&self, netdev: &str, now: SystemTime) -> LldpStatus {
        let Some(e) = self.entries.get(netdev) else {
            return LldpStatus::NotWatched;
        };
        match (&e.failure, &e.last) {
            (Some(f), last) => LldpStatus::Failed {
                failure: f.clone(),
                last_known: last.clone(),
            },
            (None, None) => LldpStatus::NoFrameYet,
            (None, Some(h)) if h.is_expired(now) => LldpStatus::Expired(h.clone()),
            (None, Some(h)) => LldpStatus::Current(h.clone()),
        }
    }

    /// The status of every watched netdev at `now`, by name.
    pub fn snapshot(&self, now: SystemTime) -> BTreeMap<String, LldpStatus> {
        self.entries
            .keys()
            .map(|n| (n.clone(), self.status(n, now)))
            .collect()
    }

    /// Whether every watched netdev has heard a frame (current or expired) or failed: nothing is
    /// left to wait for.
    pub fn settled(&self) -> bool {
        self.entries
            .values()
            .all(|e| e.last.is_some() || e.failure.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::lldp::frame::parse_frame;

    use crate::probe::lldp::captured::{LOCAL, MAC_IFNAME as MAC, SHUTDOWN};

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn denied() -> Failure {
        Failure {
            kind: FailureKind::PermissionDenied,
            message: "no CAP_NET_RAW".into(),
        }
    }

    #[test]
    fn unwatched_then_no_frame_then_current_then_expired_at_ttl() {
        let mut c = LldpCache::new();
        assert_eq!(c.status("eth1", t(0)), LldpStatus::NotWatched);
        c.watch("eth1");
        assert_eq!(c.status("eth1", t(0)), LldpStatus::NoFrameYet);
        assert!(!c.settled());
        let f = parse_frame(MAC).unwrap();
        assert_eq!(f.neighbor.ttl_s, 4);
        c.record_frame("eth1", f.clone(), t(10));
        assert!(c.settled());
        let s = c.status("eth1", t(13));
        assert_eq!(s.name(), "current");
        let h = s.current().unwrap();
        assert_eq!(h.received_at, t(10));
        assert_eq!(h.expires_at, t(14));
        assert_eq!(h.neighbor, f.neighbor);
        // At the TTL the answer expires, and is kept.
        let s = c.status("eth1", t(14));
        assert_eq!(s.name(), "expired");
        assert!(s.current().is_none());
        assert_eq!(s.last_known().unwrap().neighbor, f.neighbor);
    }

    #[test]
    fn a_fresh_frame_replaces_and_an_older_one_does_not() {
        let mut c = LldpCache::new();
        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(10));
        let local = parse_frame(LOCAL).unwrap();
        c.record_frame("eth1", local.clone(), t(20));
        let h = c.status("eth1", t(21)).current().cloned().unwrap();
        assert_eq!(h.neighbor.chassis_id.to_string(), "leaf-07.pod2");
        // An expired answer becomes current again with a new frame.
        assert_eq!(c.status("eth1", t(30)).name(), "expired");
        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(31));
        assert_eq!(
            c.status("eth1", t(32))
                .current()
                .unwrap()
                .neighbor
                .chassis_id
                .to_string(),
            "02:00:5e:10:00:07"
        );
        // A frame stamped before the kept one is ignored.
        c.record_frame("eth1", local, t(25));
        assert_eq!(
            c.status("eth1", t(32)).current().unwrap().received_at,
            t(31)
        );
    }

    #[test]
    fn shutdown_lldpdu_expires_at_once() {
        let mut c = LldpCache::new();
        c.record_frame("eth1", parse_frame(LOCAL).unwrap(), t(0));
        c.record_frame("eth1", parse_frame(SHUTDOWN).unwrap(), t(1));
        let s = c.status("eth1", t(1));
        assert_eq!(s.name(), "expired");
        assert_eq!(s.last_known().unwrap().neighbor.ttl_s, 0);
    }

    #[test]
    fn failure_keeps_last_known_and_a_frame_clears_it() {
        let mut c = LldpCache::new();
        c.watch("eth2");
        c.record_failure("eth2", denied());
        assert!(c.settled());
        let s = c.status("eth2", t(0));
        assert_eq!(s.name(), "permission-denied");
        assert!(s.last_known().is_none());

        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(0));
        c.record_failure(
            "eth1",
            Failure {
                kind: FailureKind::NoSuchNetdev,
                message: "gone".into(),
            },
        );
        let s = c.status("eth1", t(1));
        assert_eq!(s.name(), "no-such-netdev");
        assert_eq!(s.last_known().unwrap().received_at, t(0));
        assert!(s.current().is_none());
        c.clear_failure("eth1");
        assert_eq!(c.status("eth1", t(1)).name(), "current");
        c.record_failure("eth1", denied());
        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(2));
        assert_eq!(c.status("eth1", t(3)).name(), "current");
    }

    #[test]
    fn snapshot_lists_watched_netdevs_and_unwatch_forgets() {
        let mut c = LldpCache::new();
        c.watch("eth2");
        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(0));
        c.watch("eth1");
        let s = c.snapshot(t(1));
        assert_eq!(
            s.iter()
                .map(|(k, v)| (k.as_str(), v.name()))
                .collect::<Vec<_>>(),
            [("eth1", "current"), ("eth2", "no-frame-yet")]
        );
        c.unwatch("eth1");
        assert_eq!(c.netdevs().collect::<Vec<_>>(), ["eth2"]);
        assert_eq!(c.status("eth1", t(1)), LldpStatus::NotWatched);
    }

    #[test]
    fn status_json_shape() {
        let mut c = LldpCache::new();
        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(0));
        let v = serde_json::to_value(c.status("eth1", t(1))).unwrap();
        assert_eq!(v["status"], "current");
        assert_eq!(v["neighbor"]["chassis_id"]["subtype"], "mac_address");
        assert_eq!(v["neighbor"]["chassis_id"]["value"], "02:00:5e:10:00:07");
        assert_eq!(v["neighbor"]["port_id"]["subtype"], "interface_name");
        assert_eq!(v["neighbor"]["port_id"]["value"], "swp12");
        assert_eq!(v["source"], "02:00:5e:10:00:07");
        assert_eq!(v["received_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(v["expires_at"], "2027-01-15T08:00:04.000Z");
        c.record_failure("eth1", denied());
        let v = serde_json::to_value(c.status("eth1", t(1))).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["kind"], "permission-denied");
        assert_eq!(v["message"], "no CAP_NET_RAW");
        assert_eq!(v["last_known"]["neighbor"]["port_id"]["value"], "swp12");
        let v = serde_json::to_value(LldpStatus::NoFrameYet).unwrap();
        assert_eq!(v, serde_json::json!({"status": "no-frame-yet"}));
    }

    #[test]
    fn names_shared_with_the_neighbour_status_are_spelled_alike() {
        use crate::model::NeighborStatus;
        let mut c = LldpCache::new();
        c.watch("eth1");
        c.record_frame("eth1", parse_frame(MAC).unwrap(), t(10));
        assert_eq!(
            c.status("eth1", t(20)).name(),
            NeighborStatus::Expired.as_str()
        );
        assert_eq!(
            LldpStatus::NoFrameYet.name(),
            NeighborStatus::NoFrameYet.as_str()
        );
    }
}
