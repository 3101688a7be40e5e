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
    use omnigate_adapters::twilio::config::TwilioSenderId;
    use omnigate_adapters::twilio::{TwilioAccount, TwilioSender};

    use super::*;

    /// A route of a Twilio account no test sends through: only its pacing is under test.
    fn route(rate: RateLimit, pair: Option<RateLimit>) -> AccountRoute {
        let sender = TwilioSender::new(TwilioAccount {
            api_base: "http://127.0.0.1:9".into(),
            account_sid: "AC00000000000000000000000000000000".into(),
            auth_token: "unused".into(),
            api_key: None,
            sender: TwilioSenderId::From("+15005550006".into()),
            request_timeout: Duration::from_secs(1),
        });
        AccountRoute::new(Arc::new(sender), None, rate, pair)
    }

    /// A provider's Retry-After holds the route until it has passed, the longest of several
    /// pauses winning; other routes of the account go on. (Tokio's paused clock: no waiting.)
    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_its_route_until_it_has_passed() {
        let r = route(RateLimit { per_second: 1_000_000.0, burst: 1_000 }, None);
        let (held, free) = ("+15005550006".to_string(), "+15005550007".to_string());
        r.pause(&held, Duration::from_secs(5));
        r.pause(&held, Duration::from_secs(2));
        let start = Instant::now();
        r.ready(&free, NonZeroU32::MIN).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "another route is not held");
        r.ready(&held, NonZeroU32::MIN).await;
        assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
        let again = Instant::now();
        r.ready(&held, NonZeroU32::MIN).await;
        assert_eq!(again.elapsed(), Duration::ZERO, "a pause that has passed holds nothing");
    }

    /// A message dearer than the bucket (three segments on a burst of one) still gets its
    /// tokens, a bucketful at a time, and spends them: the bucket is empty afterwards.
    #[tokio::test]
    async fn a_cost_over_the_burst_is_paid_a_bucketful_at_a_time() {
        let r = route(RateLimit { per_second: 1_000.0, burst: 1 }, None);
        let key = "+15005550006".to_string();
        let three = NonZeroU32::new(3).expect("nonzero");
        tokio::time::timeout(Duration::from_secs(10), r.ready(&key, three)).await.expect("paid");
        assert!(r.limiter.check_key(&key).is_err(), "the last token was spent");
    }

    /// WhatsApp's pair limit: a recipient's first message goes, the next waits; another
    /// recipient is not held back; without a pair limit nobody waits.
    #[test]
    fn the_pair_limit_holds_a_recipient_not_the_others() {
        let pair = RateLimit { per_second: 1.0 / 6.0, burst: 1 };
        let r = route(RateLimit { per_second: 80.0, burst: 80 }, Some(pair));
        let (ann, bob) = ("+14155550100".to_string(), "+14155550101".to_string());
        assert_eq!(r.pair_wait(&ann), None);
        let wait = r.pair_wait(&ann).expect("held");
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6), "{wait:?}");
        assert_eq!(r.pair_wait(&bob), None);
        let unpaired = route(RateLimit { per_second: 80.0, burst: 80 }, None);
        assert_eq!((unpaired.pair_wait(&ann), unpaired.pair_wait(&ann)), (None, None));
    }

    #[test]
    fn quota_spaces_tokens_by_the_configured_rate() {
        let q = quota(RateLimit { per_second: 4.0, burst: 2 });
        assert_eq!(q.replenish_interval(), Duration::from_millis(250));
        assert_eq!(q.burst_size().get(), 2);
        let slow = quota(RateLimit { per_second: 0.5, burst: 1 });
        assert_eq!(slow.replenish_interval(), Duration::from_secs(2));
    }
}
