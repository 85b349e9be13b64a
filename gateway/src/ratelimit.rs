//! Rate limiting per identity: governor's GCRA over a state store of our own that holds at most
//! `cap` keys, so memory stays bounded however many clients come.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most identities tracked at once.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Keyed GCRA state (theoretical arrival times), bounded.
#[derive(Debug)]
pub struct BoundedStore {
    map: Mutex<HashMap<String, u64>>,
    cap: usize,
    /// Replenish interval in nanoseconds: a fresh key's new state is `now + t`.
    t: u64,
}

impl BoundedStore {
    fn new(cap: usize, quota: &Quota) -> Self {
        let t = u64::try_from(quota.replenish_interval().as_nanos()).unwrap_or(u64::MAX);
        Self { map: Mutex::new(HashMap::new()), cap: cap.max(2), t }
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Make room: first drop keys whose bucket is full again (the same as not tracking them), then,
/// if that is not enough, the half closest to full (they lose at most their remaining wait).
fn evict(map: &mut HashMap<String, u64>, now: u64, cap: usize) {
    map.retain(|_, tat| *tat > now);
    if map.len() >= cap {
        let mut tats: Vec<u64> = map.values().copied().collect();
        let drop = map.len() - cap / 2;
        let (_, threshold, _) = tats.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        let mut dropped = 0;
        map.retain(|_, tat| {
            if *tat <= threshold && dropped < drop {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

impl StateStore for BoundedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let old = map.get(key).copied();
        let (out, new) = f(old.map(Nanos::from))?;
        if old.is_none() && map.len() >= self.cap {
            evict(&mut map, new.as_u64().saturating_sub(self.t), self.cap);
        }
        map.insert(key.clone(), new.as_u64());
        Ok(out)
    }
}

/// The store shared between the limiter and [`Limiter::tracked_keys`].
#[derive(Clone, Debug)]
pub struct SharedStore(Arc<BoundedStore>);

impl StateStore for SharedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

/// requestsPerMinute with burstSize, per key.
pub struct Limiter<C: Clock = DefaultClock> {
    inner: RateLimiter<String, SharedStore, C, NoOpMiddleware<C::Instant>>,
    store: Arc<BoundedStore>,
}

impl Limiter<DefaultClock> {
    /// A limiter on the real clock.
    pub fn new(requests_per_minute: u32, burst: u32, max_keys: usize) -> Self {
        Self::with_clock(requests_per_minute, burst, max_keys, DefaultClock::default())
    }
}

impl<C: Clock> Limiter<C> {
    /// A limiter on a given clock (tests use a fake one).
    pub fn with_clock(requests_per_minute: u32, burst: u32, max_keys: usize, clock: C) -> Self {
        let rpm = NonZeroU32::new(requests_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rpm).allow_burst(burst);
        let store = Arc::new(BoundedStore::new(max_keys, &quota));
        Self { inner: RateLimiter::new(quota, SharedStore(store.clone()), clock), store }
    }

    /// Count one request for `key`; `Err(wait)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.inner.check_key(&key.to_string()).map_err(|not_until| not_until.wait_time_from(self.inner.clock().now()))
    }

    /// Keys tracked now.
    pub fn tracked_keys(&self) -> usize {
        self.store.len()
    }
}

/// Seconds for a `Retry-After` header: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_sustained_rate() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(60, 3, 100, clock.clone());
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check("b").is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(1));
        assert!(l.check("a").is_ok(), "one request per second comes back");
        assert!(l.check("a").is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let clock = FakeRelativeClock::default();
        let l = Limiter::with_clock(1, 1, 50, clock.clone());
        for i in 0..10_000 {
            let _ = l.check(&format!("client-{i}"));
            assert!(l.tracked_keys() <= 50);
        }
        // a busy key that was just seen survives the eviction of idle ones
        clock.advance(Duration::from_secs(3600));
        assert!(l.check("busy").is_ok());
        for i in 0..60 {
            let _ = l.check(&format!("new-{i}"));
        }
        assert!(l.tracked_keys() <= 50);
    }

    #[test]
    fn full_buckets_are_evicted_first() {
        let mut map: HashMap<String, u64> = (0..10).map(|i| (format!("k{i}"), i * 10)).collect();
        evict(&mut map, 45, 8);
        assert_eq!(map.len(), 5, "tat <= now dropped; now under the cap");
        let mut map: HashMap<String, u64> = (0..10).map(|i| (format!("k{i}"), 100 + i)).collect();
        evict(&mut map, 0, 10);
        assert_eq!(map.len(), 5);
        assert!(map.contains_key("k9") && !map.contains_key("k0"), "the least loaded go first");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
