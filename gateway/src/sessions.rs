//! The sessions the gateway has seen created (HTTP mode) and who created them. A request naming a
//! session the table does not hold (never seen, ended, expired or evicted) is refused, and so is
//! one naming another caller's session: ownership fails closed. The table is bounded: when it is
//! full the least recently used session is evicted, and from then on refused like any unknown one.

use crate::admission::Refusal;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Session id → (owner, last use).
pub struct Sessions {
    table: Mutex<LruCache<String, (String, Instant)>>,
    idle: Duration,
}

impl Sessions {
    /// A table of at most `capacity` sessions, each forgotten after `idle` without use.
    pub fn new(capacity: usize, idle: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self { table: Mutex::new(LruCache::new(cap)), idle }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, (String, Instant)>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session created by `owner`; returns how many are held.
    pub fn bind(&self, id: &str, owner: &str) -> usize {
        let mut t = self.lock();
        if let Some((evicted, _)) = t.push(id.to_string(), (owner.to_string(), Instant::now())) {
            if evicted != id {
                tracing::info!(session = %evicted, "session table full: least recently used session evicted");
            }
        }
        t.len()
    }

    /// May `owner` use session `id`?
    pub fn check(&self, id: &str, owner: &str) -> Result<(), Refusal> {
        let mut t = self.lock();
        let Some((who, seen)) = t.get_mut(id) else { return Err(Refusal::UnknownSession) };
        if seen.elapsed() > self.idle {
            t.pop(id);
            return Err(Refusal::UnknownSession);
        }
        if who != owner {
            return Err(Refusal::ForeignSession);
        }
        *seen = Instant::now();
        Ok(())
    }

    /// The session ended; returns how many are held.
    pub fn forget(&self, id: &str) -> usize {
        let mut t = self.lock();
        t.pop(id);
        t.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_foreign_sessions_are_refused() {
        let s = Sessions::new(10, Duration::from_secs(60));
        s.bind("s1", "jwt:alice");
        assert_eq!(s.check("s1", "jwt:alice"), Ok(()));
        assert_eq!(s.check("s1", "jwt:bob"), Err(Refusal::ForeignSession));
        assert_eq!(s.check("s1", "anonymous"), Err(Refusal::ForeignSession));
        assert_eq!(s.check("nope", "jwt:alice"), Err(Refusal::UnknownSession));
        s.forget("s1");
        assert_eq!(s.check("s1", "jwt:alice"), Err(Refusal::UnknownSession));
    }

    #[test]
    fn full_table_evicts_the_least_recently_used_which_is_then_refused() {
        let s = Sessions::new(2, Duration::from_secs(60));
        s.bind("a", "o");
        s.bind("b", "o");
        assert_eq!(s.check("a", "o"), Ok(()), "a is now the most recent");
        assert_eq!(s.bind("c", "o"), 2);
        assert_eq!(s.check("b", "o"), Err(Refusal::UnknownSession), "evicted, not reopened");
        assert_eq!(s.check("a", "o"), Ok(()));
        assert_eq!(s.check("c", "o"), Ok(()));
    }

    #[test]
    fn idle_sessions_expire() {
        let s = Sessions::new(2, Duration::from_millis(1));
        s.bind("a", "o");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.check("a", "o"), Err(Refusal::UnknownSession));
    }
}
