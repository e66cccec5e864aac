//! Exponential backoff with jitter: the one retry policy of the label writer, the extender's
//! agent streams, `agent --oneshot` and `query env`, and [`retry`], the one retry loop. The
//! jitter draw is passed in, so the policy is pure and testable.

use std::time::Duration;

use thiserror::Error;

/// A backoff whose settings cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidBackoff {
    /// The first delay is zero.
    #[error("the first delay must be above 0")]
    ZeroBase,
    /// The longest delay is shorter than the first.
    #[error("the longest delay ({max:?}) must not be shorter than the first ({base:?})")]
    MaxBelowBase {
        /// The first delay.
        base: Duration,
        /// The longest delay.
        max: Duration,
    },
}

/// Exponential backoff with full jitter in the upper half: attempt `n` waits a point in
/// `[d/2, d]`, where `d = base * 2^n` capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`; refused when `base` is zero or `max` is
    /// shorter than `base`.
    pub fn try_new(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base.is_zero() {
            return Err(InvalidBackoff::ZeroBase);
        }
        if max < base {
            return Err(InvalidBackoff::MaxBelowBase { base, max });
        }
        Ok(Self {
            base,
            max,
            attempt: 0,
        })
    }

    /// A backoff of settings fixed in the code. Panics on settings [`Backoff::try_new`] refuses:
    /// use that for settings from flags or files.
    #[track_caller]
    pub fn fixed(base: Duration, max: Duration) -> Self {
        Self::try_new(base, max).unwrap_or_else(|e| panic!("fixed backoff: {e}"))
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

/// Calls `op` until it succeeds, or until `again` gives up on its error. Between attempts it
/// waits what `again(&error, attempt, delay)` returns, `delay` being the backoff's next jittered
/// delay (`again` may wait longer, for a server's `Retry-After`); `attempt` counts from 1.
pub async fn retry<T, E>(
    mut backoff: Backoff,
    mut op: impl AsyncFnMut() -> Result<T, E>,
    mut again: impl FnMut(&E, u32, Duration) -> Option<Duration>,
) -> Result<T, E> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match again(&e, attempt, backoff.next_random_delay()) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::fixed(ms(100), ms(350));
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
    fn settings_that_cannot_work_are_refused() {
        let s = Duration::from_secs;
        assert_eq!(
            Backoff::try_new(Duration::ZERO, s(1)),
            Err(InvalidBackoff::ZeroBase)
        );
        assert_eq!(
            Backoff::try_new(s(10), s(1)),
            Err(InvalidBackoff::MaxBelowBase {
                base: s(10),
                max: s(1)
            })
        );
        assert!(Backoff::try_new(s(1), s(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_the_given_delays_until_it_gives_up() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let mut waits = Vec::new();
        let r: Result<(), u32> = retry(
            Backoff::fixed(Duration::from_secs(1), Duration::from_secs(4)),
            async || {
                calls += 1;
                Err(calls)
            },
            |e, attempt, delay| {
                assert_eq!(*e, attempt);
                waits.push(delay);
                (attempt < 3).then_some(delay.max(Duration::from_secs(2)))
            },
        )
        .await;
        assert_eq!(r, Err(3));
        assert_eq!(calls, 3);
        // Jittered delays of 1 s and 2 s lie in their upper halves; both waits are raised to 2 s.
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] <= Duration::from_secs(1));
        assert!(waits[1] >= Duration::from_secs(1) && waits[1] <= Duration::from_secs(2));
        assert_eq!(start.elapsed(), Duration::from_secs(4));

        let mut n = 0;
        let r: Result<u32, ()> = retry(
            Backoff::fixed(Duration::from_secs(1), Duration::from_secs(1)),
            async || {
                n += 1;
                if n == 2 { Ok(n) } else { Err(()) }
            },
            |_, _, d| Some(d),
        )
        .await;
        assert_eq!(r, Ok(2));
    }

    #[test]
    fn random_delays_stay_in_the_upper_half() {
        let mut b = Backoff::fixed(Duration::from_millis(100), Duration::from_secs(1));
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
