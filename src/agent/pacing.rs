//! How soon an LLDP change may trigger a probe.
//!
//! A changed LLDP answer (a port recabled, a switch replaced) triggers a probe after a short
//! settle, so the new leaf is published in seconds, not at the next interval. A port whose
//! neighbour changes on every frame (a misbehaving switch, two switches answering on one link)
//! would then trigger a probe every second or two, for as long as it lasts. [`LldpPacer`] backs
//! off: each trigger that comes while the previous ones are still recent waits twice as long,
//! up to the probe interval (where the regular tick takes over), and a quiet spell of one
//! interval starts over at the settle time.

use std::time::{Duration, Instant};

/// The wait before each LLDP-triggered probe. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct LldpPacer {
    settle: Duration,
    max: Duration,
    gap: Duration,
    last: Option<Instant>,
}

impl LldpPacer {
    /// Waits `settle` after an isolated change, up to `max` (the probe interval) while changes
    /// keep coming.
    pub fn new(settle: Duration, max: Duration) -> Self {
        Self {
            settle,
            max: max.max(settle),
            gap: settle,
            last: None,
        }
    }

    /// How long to wait before probing for an LLDP change seen at `now`.
    pub fn wait(&mut self, now: Instant) -> Duration {
        let recent = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.max);
        self.gap = if recent {
            (self.gap * 2).min(self.max)
        } else {
            self.settle
        };
        self.last = Some(now + self.gap);
        self.gap
    }

    /// True when changes keep coming often enough that the wait is past the settle time.
    pub fn backing_off(&self) -> bool {
        self.gap > self.settle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// A neighbour that changes every 1.5 s for ten minutes: without pacing, one probe per
    /// change (400); paced, the waits double to the interval and stay there.
    #[test]
    fn a_flapping_neighbour_backs_off_to_the_interval() {
        let mut p = LldpPacer::new(S, MAX);
        let start = Instant::now();
        let mut now = start;
        let mut probes = 0;
        while now < start + Duration::from_secs(600) {
            let wait = p.wait(now);
            probes += 1;
            // The probe runs after the wait; the next change is seen 1.5 s after it.
            now += wait + Duration::from_millis(1500);
        }
        assert!(probes <= 20, "{probes} probes in ten minutes");
        assert!(p.backing_off());
        assert_eq!(p.wait(now), MAX);
    }

    #[test]
    fn an_isolated_change_waits_only_the_settle_time() {
        let mut p = LldpPacer::new(S, MAX);
        let t0 = Instant::now();
        assert_eq!(p.wait(t0), S);
        assert!(!p.backing_off());
        // A second change soon after: twice as long.
        assert_eq!(p.wait(t0 + Duration::from_secs(3)), 2 * S);
        // Quiet for an interval: back to the settle time.
        assert_eq!(p.wait(t0 + Duration::from_secs(3 + 2 + 61)), S);
        assert!(!p.backing_off());
    }

    #[test]
    fn an_interval_shorter_than_the_settle_time_is_the_settle_time() {
        let mut p = LldpPacer::new(S, Duration::from_millis(200));
        let t0 = Instant::now();
        assert_eq!(p.wait(t0), S);
        assert_eq!(p.wait(t0 + Duration::from_millis(1100)), S);
    }
}
