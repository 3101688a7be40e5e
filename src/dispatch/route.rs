//! A route is one provider account and one sender on it. Each route has its own FIFO queue,
//! its own token bucket (a keyed governor limiter per account, keyed by sender) and a pause
//! that a provider's throttling answer sets. A message spends as many tokens as its
//! provider paces it by ([`Sender::rate_cost`]): Twilio counts SMS segments.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use omnigate_adapters::Sender;
use tokio::time::Instant;

use crate::config::RateLimit;

/// What the dispatcher knows of one configured account.
pub struct AccountRoute {
    pub sender: Arc<dyn Sender>,
    /// Where this account's provider posts receipts, when it takes a per-message URL.
    pub status_callback: Option<String>,
    limiter: DefaultKeyedRateLimiter<String>,
    /// The most tokens the limiter can grant at once.
    burst: NonZeroU32,
    /// A per-recipient pace (WhatsApp's pair rate limit), keyed by recipient.
    pair: Option<DefaultKeyedRateLimiter<String>>,
    pauses: Mutex<HashMap<String, Instant>>,
}

impl AccountRoute {
    pub fn new(
        sender: Arc<dyn Sender>,
        status_callback: Option<String>,
        rate: RateLimit,
        pair: Option<RateLimit>,
    ) -> Self {
        let pace = quota(rate);
        AccountRoute {
            sender,
            status_callback,
            limiter: DefaultKeyedRateLimiter::keyed(pace),
            burst: pace.burst_size(),
            pair: pair.map(|p| DefaultKeyedRateLimiter::keyed(quota(p))),
            pauses: Mutex::new(HashMap::new()),
        }
    }

    /// How long until `recipient` may get another message, when a pair limit holds it back.
    /// An answer of `None` spends the recipient's token.
    pub fn pair_wait(&self, recipient: &String) -> Option<Duration> {
        let pair = self.pair.as_ref()?;
        let not_until = pair.check_key(recipient).err()?;
        // The limiter's own clock: a new one per call would calibrate the CPU's counter
        // again each time (CPUID), and need not agree with the limiter's readings.
        Some(not_until.wait_time_from(governor::clock::Clock::now(pair.clock())))
    }

    /// Holds every send on `route` until `for_` has passed.
    pub fn pause(&self, route: &str, for_: Duration) {
        let until = Instant::now() + for_;
        if let Ok(mut pauses) = self.pauses.lock() {
            let entry = pauses.entry(route.to_string()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }

    /// Waits out a pause, then for `cost` tokens of this route's rate.
    pub async fn ready(&self, route: &String, cost: NonZeroU32) {
        loop {
            let until = self.pauses.lock().ok().and_then(|p| p.get(route).copied());
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        // A message dearer than the bucket holds (a long SMS on a burst of one) takes its
        // tokens a bucketful at a time: the same average pace, and a wait that ends.
        let mut left = cost.get();
        while let Some(n) = NonZeroU32::new(left.min(self.burst.get())) {
            if self.limiter.until_key_n_ready(route, n).await.is_err() {
                break; // n never exceeds the burst.
            }
            left -= n.get();
        }
    }
}

/// Rates below one per second are kept exact by spacing single tokens.
fn quota(rate: RateLimit) -> Quota {
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(rate.period())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_spaces_tokens_by_the_configured_rate() {
        let q = quota(RateLimit { per_second: 4.0, burst: 2 });
        assert_eq!(q.replenish_interval(), Duration::from_millis(250));
        assert_eq!(q.burst_size().get(), 2);
        let slow = quota(RateLimit { per_second: 0.5, burst: 1 });
        assert_eq!(slow.replenish_interval(), Duration::from_secs(2));
    }
}
