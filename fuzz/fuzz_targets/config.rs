//! Any text as a config file: it is refused with an error naming a key, or accepted, and
//! then everything start-up derives from it (leases, deadlines, token periods, retry
//! schedules, the public URL) comes out without a panic and within what clocks can add.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use omnigate::Config;

/// The longest wait any setting may ask for (conversations' inactivity, ten years).
const LONGEST: Duration = Duration::from_secs(10 * 366 * 86_400);

fuzz_target!(|text: &str| {
    // `file:` secrets are read at validation; the fuzzer must not open FIFOs and devices.
    if text.contains("file:") {
        return;
    }
    let Ok(config) = Config::from_toml(text) else { return };
    let durations = [
        config.lease(),
        config.fallback_after().unwrap_or_default(),
        Duration::from_secs(config.dispatch.default_ttl_secs),
        Duration::from_secs(config.server.drain_timeout_secs),
        Duration::from_secs(config.conversations.inactivity_timeout_secs),
        Duration::from_millis(config.dispatch.backoff_max_ms),
    ];
    let schedule = config.webhook_retry_schedule();
    let periods = config.accounts.iter().flat_map(|a| {
        [Some(a.rate_limit()), a.pair_rate_limit()].into_iter().flatten().map(|r| r.period())
    });
    for d in durations.into_iter().chain(schedule).chain(periods) {
        assert!(d <= LONGEST, "{d:?} accepted");
    }
    assert!(config.backend().is_some());
    assert!(config.public_url().starts_with("http"));
});
