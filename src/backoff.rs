//! Exponential backoff with jitter: the one retry policy of the label writer and the extender's
//! agent streams. The jitter draw is passed in, so the policy is pure and testable.

use std::time::Duration;

/// Exponential backoff with full jitter in the upper half: attempt `n` waits a point in
/// `[d/2, d]`, where `d = base * 2^n` capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` (at least 1 ms), capped at `max` (raised to `base` if
    /// smaller).
    pub fn new(base: Duration, max: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, for a `jitter` draw in `[0, 1]` (`1.0` gives the full
    /// exponential delay, `rand::random()` a spread one).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let j = if jitter.is_nan() {
            1.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        exp.mul_f64(0.5 + 0.5 * j)
    }

    /// A jittered delay with a fresh random draw.
    pub fn next_random_delay(&mut self) -> Duration {
        self.next_delay(rand::random::<f64>())
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        assert_eq!(b.next_delay(1.0), ms(100));
        assert_eq!(b.next_delay(1.0), ms(200));
        assert_eq!(b.next_delay(1.0), ms(350));
        assert_eq!(b.next_delay(1.0), ms(350));
        b.reset();
        assert_eq!(b.next_delay(0.0), ms(50));
        assert_eq!(b.next_delay(f64::NAN), ms(200));
        // Many attempts never overflow.
        for _ in 0..100 {
            assert!(b.next_delay(2.0) <= ms(350));
        }
    }

    #[test]
    fn degenerate_settings_are_raised() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(1.0), Duration::from_millis(1));
    }

    #[test]
    fn random_delays_stay_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            b.reset();
            let d = b.next_random_delay();
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
    }
}
