//! Ids the gateway has seen a server hand out and the callers they belong to: sessions (HTTP
//! mode) and MCP tasks (see [`crate::authz::TaskBinding`]). A request naming an id the table does
//! not hold (never seen, ended, expired or evicted) is refused, and so is one naming another
//! caller's: ownership fails closed. The table is bounded: when it is full the least recently used
//! id is evicted, and from then on refused like any unknown one. Each caller holds at most
//! `per_owner` ids: a caller over it loses its own least recently used one, so that one caller
//! opening sessions in a loop cannot evict everyone else's.

use crate::admission::Refusal;
use lru::LruCache;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Session id → (owner, last use), and how many sessions each owner holds.
struct Table {
    lru: LruCache<String, (String, Instant)>,
    held: HashMap<String, usize>,
}

impl Table {
    fn release(&mut self, owner: &str) {
        if let Some(n) = self.held.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(owner);
            }
        }
    }

    fn pop(&mut self, id: &str) {
        if let Some((owner, _)) = self.lru.pop(id) {
            self.release(&owner);
        }
    }
}

/// Ids (sessions, tasks) and the callers they belong to.
pub struct OwnerTable {
    table: Mutex<Table>,
    per_owner: usize,
    idle: Duration,
}

impl OwnerTable {
    /// A table of at most `capacity` sessions, at most `per_owner` of one caller, each forgotten
    /// after `idle` without use.
    pub fn new(capacity: usize, per_owner: usize, idle: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let table = Table { lru: LruCache::new(cap), held: HashMap::new() };
        Self { table: Mutex::new(table), per_owner: per_owner.clamp(1, cap.get()), idle }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session created by `owner`; returns how many are held and the sessions forgotten to make
    /// room (the caller's own oldest, or the table's least recently used), which the server
    /// should be told to end.
    pub fn bind(&self, id: &str, owner: &str) -> (usize, Vec<String>) {
        let mut t = self.lock();
        let mut forgotten = vec![];
        // An id keeps its first owner: a server naming it again to someone else (a reused id)
        // does not hand it over.
        if t.lru.peek(id).is_some_and(|(who, _)| who != owner) {
            tracing::warn!(id = %id, "an id the server gave before, to another caller, is not rebound");
            return (t.lru.len(), forgotten);
        }
        t.pop(id);
        if t.held.get(owner).copied().unwrap_or(0) >= self.per_owner {
            // The caller's own least recently used session goes (the iterator runs from the
            // most recently used).
            let oldest = t.lru.iter().rev().find(|(_, (who, _))| who == owner).map(|(sid, _)| sid.clone());
            if let Some(oldest) = oldest {
                tracing::info!(session = %oldest, "a caller's session limit reached: its least recently used session forgotten");
                t.pop(&oldest);
                forgotten.push(oldest);
            }
        }
        if let Some((evicted, (who, _))) = t.lru.push(id.to_string(), (owner.to_string(), Instant::now())) {
            tracing::info!(session = %evicted, "session table full: least recently used session forgotten");
            t.release(&who);
            forgotten.push(evicted);
        }
        *t.held.entry(owner.to_string()).or_default() += 1;
        (t.lru.len(), forgotten)
    }

    /// May `owner` use session `id`?
    pub fn check(&self, id: &str, owner: &str) -> Result<(), Refusal> {
        let mut t = self.lock();
        let Some((who, seen)) = t.lru.get_mut(id) else { return Err(Refusal::UnknownSession) };
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

    /// Whether `id` is `owner`'s (without counting as a use).
    pub fn owned_by(&self, id: &str, owner: &str) -> bool {
        let t = self.lock();
        t.lru.peek(id).is_some_and(|(who, seen)| who == owner && seen.elapsed() <= self.idle)
    }

    /// Whether anyone holds `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.lock().lru.peek(id).is_some_and(|(_, seen)| seen.elapsed() <= self.idle)
    }

    /// The session ended; returns how many are held.
    pub fn forget(&self, id: &str) -> usize {
        let mut t = self.lock();
        t.pop(id);
        t.lru.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_foreign_sessions_are_refused() {
        let s = OwnerTable::new(10, 10, Duration::from_secs(60));
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
        let s = OwnerTable::new(2, 2, Duration::from_secs(60));
        s.bind("a", "o");
        s.bind("b", "o");
        assert_eq!(s.check("a", "o"), Ok(()), "a is now the most recent");
        assert_eq!(s.bind("c", "o"), (2, vec!["b".to_string()]));
        assert_eq!(s.check("b", "o"), Err(Refusal::UnknownSession), "evicted, not reopened");
        assert_eq!(s.check("a", "o"), Ok(()));
        assert_eq!(s.check("c", "o"), Ok(()));
    }

    #[test]
    fn idle_sessions_expire() {
        let s = OwnerTable::new(2, 2, Duration::from_millis(1));
        s.bind("a", "o");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.check("a", "o"), Err(Refusal::UnknownSession));
    }

    #[test]
    fn a_caller_over_its_limit_loses_its_own_oldest_session_not_anothers() {
        let s = OwnerTable::new(4, 2, Duration::from_secs(60));
        s.bind("alice-1", "jwt:sub:alice");
        s.bind("anon-1", "anonymous");
        s.bind("anon-2", "anonymous");
        assert_eq!(s.check("anon-1", "anonymous"), Ok(()), "anon-1 is now its most recent");
        for n in 3..100 {
            let (held, forgotten) = s.bind(&format!("anon-{n}"), "anonymous");
            assert_eq!(held, 3, "alice's and two of the caller's");
            // anon-1 was used after anon-2, so anon-2 goes first, then anon-1, then in order.
            let oldest = match n {
                3 => "anon-2".to_string(),
                4 => "anon-1".to_string(),
                _ => format!("anon-{}", n - 2),
            };
            assert_eq!(forgotten, vec![oldest], "the caller's own least recently used");
        }
        assert_eq!(s.check("alice-1", "jwt:sub:alice"), Ok(()), "another caller's session stays");
        assert_eq!(s.check("anon-99", "anonymous"), Ok(()));
        assert_eq!(s.check("anon-98", "anonymous"), Ok(()));
        assert_eq!(s.check("anon-1", "anonymous"), Err(Refusal::UnknownSession));
        // A session that ended (DELETE) is no longer counted: the caller may open another.
        s.forget("anon-99");
        s.bind("anon-100", "anonymous");
        assert_eq!(s.check("anon-98", "anonymous"), Ok(()));
        assert_eq!(s.check("anon-100", "anonymous"), Ok(()));
    }

    #[test]
    fn binding_an_id_again_is_counted_once() {
        let s = OwnerTable::new(4, 2, Duration::from_secs(60));
        s.bind("a", "o");
        s.bind("a", "o");
        s.bind("b", "o");
        assert_eq!(s.check("a", "o"), Ok(()));
        assert_eq!(s.check("b", "o"), Ok(()));
    }

    #[test]
    fn an_id_keeps_its_first_owner() {
        let s = OwnerTable::new(4, 2, Duration::from_secs(60));
        s.bind("t", "jwt:sub:alice");
        assert_eq!(s.bind("t", "jwt:sub:mallory"), (1, vec![]));
        assert_eq!(s.check("t", "jwt:sub:alice"), Ok(()));
        assert_eq!(s.check("t", "jwt:sub:mallory"), Err(Refusal::ForeignSession));
    }
}
