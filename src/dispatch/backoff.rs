//! Exponential backoff with jitter, clamped below by what the provider asked for.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct BackoffError(&'static str);

impl Backoff {
    pub fn try_new(initial: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError("initial delay must be positive"));
        }
        if max < initial {
            return Err(BackoffError("max delay is below the initial delay"));
        }
        if !jitter.is_finite() || !(0.0..1.0).contains(&jitter) {
            return Err(BackoffError("jitter must be a finite fraction in [0, 1)"));
        }
        Ok(Backoff { initial, max, jitter })
    }

    /// The delay before retry number `attempt` (1 = the first retry). `unit` is a uniform
    /// random number in [0, 1); a provider's `retry_after` is never undercut.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let base = self.initial.saturating_mul(1u32 << exp.min(31)).min(self.max);
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let jittered = base.mul_f64(spread).min(self.max);
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_policies() {
        assert!(Backoff::try_new(Duration::ZERO, Duration::from_secs(1), 0.1).is_err());
        assert!(Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1), 0.1).is_err());
        assert!(
            Backoff::try_new(Duration::from_secs(1), Duration::from_secs(2), f64::NAN).is_err()
        );
        assert!(Backoff::try_new(Duration::from_secs(1), Duration::from_secs(2), 1.0).is_err());
    }

    /// A constant delay (initial = max) is a policy some providers' guidance asks for.
    #[test]
    fn a_constant_delay_is_a_valid_policy() {
        let b = Backoff::try_new(Duration::from_secs(5), Duration::from_secs(5), 0.0)
            .expect("initial = max");
        assert_eq!(b.delay(1, None, 0.7), Duration::from_secs(5));
        assert_eq!(b.delay(9, None, 0.7), Duration::from_secs(5));
    }

    /// The draw spreads the delay from `1 - jitter` to `1 + jitter` times the base, in
    /// order, so a low draw is the short end of the band.
    #[test]
    fn the_draw_moves_the_delay_from_the_short_end_to_the_long_end() {
        let b =
            Backoff::try_new(Duration::from_secs(1), Duration::from_secs(60), 0.5).expect("policy");
        assert_eq!(b.delay(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(1, None, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(1, None, 0.9), Duration::from_millis(1_400));
    }

    /// Property: for any attempt and random draw, the delay stays within the jitter band of
    /// the capped exponential, never exceeds max unless Retry-After asks for more, and never
    /// undercuts Retry-After.
    #[test]
    fn delays_stay_in_their_band() {
        let b = Backoff::try_new(Duration::from_millis(100), Duration::from_secs(60), 0.25)
            .expect("valid");
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let attempt = rng.u32(1..80);
            let unit = rng.f64();
            let retry_after = rng.bool().then(|| Duration::from_millis(rng.u64(0..120_000)));
            let d = b.delay(attempt, retry_after, unit);
            let base = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(31))
                .min(Duration::from_secs(60));
            let low = base.mul_f64(0.75).max(retry_after.unwrap_or_default());
            let high = base
                .mul_f64(1.25)
                .min(Duration::from_secs(60))
                .max(retry_after.unwrap_or_default());
            assert!(
                d >= low && d <= high,
                "attempt {attempt} unit {unit} ra {retry_after:?}: {d:?} not in [{low:?}, {high:?}]"
            );
        }
    }

    #[test]
    fn grows_exponentially_without_jitter() {
        let b =
            Backoff::try_new(Duration::from_secs(1), Duration::from_secs(10), 0.0).expect("valid");
        let delays: Vec<u64> = (1..=6).map(|a| b.delay(a, None, 0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }
}
