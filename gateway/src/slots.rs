//! A bounded set of connections in which a full table makes room instead of refusing: the oldest
//! connection of the address that holds the most is closed, so one address opening connections
//! and sending nothing (a slowloris) pushes out only its own, never everyone else's.
//!
//! Used for the connections that have not yet sent an authenticated request, and for the admin
//! port (probes, metrics, the operator), whose clients each need only a few.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Requests of one connection being answered (headers received, answer not yet produced). A
/// connection chosen to make room with one in progress answers it first (a graceful shutdown);
/// an idle one, or one still sending headers, is closed at once.
#[derive(Default)]
pub struct Busy(AtomicUsize);

/// One request in progress: ends when dropped.
pub struct InProgress(Arc<Busy>);

impl Busy {
    /// A request begins.
    pub fn enter(self: &Arc<Self>) -> InProgress {
        self.0.fetch_add(1, Ordering::SeqCst);
        InProgress(self.clone())
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connections holding a slot, by address, oldest first.
pub struct Slots {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    total: usize,
    by_addr: HashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
}

/// One connection's slot: given back when dropped. [`Slot::closed`] fires when the connection
/// was chosen to make room (it should then close at once).
pub struct Slot {
    table: Arc<Slots>,
    addr: IpAddr,
    id: u64,
    closed: Arc<Notify>,
}

impl Slots {
    /// At most `limit` connections at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `addr`; when the table is full, the oldest connection of the
    /// address holding the most (`addr` itself when it ties) is told to close first. Returns
    /// whether one was.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> (Slot, bool) {
        let addr = addr.to_canonical();
        let mut s = self.lock();
        let mut evicted = false;
        if s.total >= self.limit {
            let own = s.by_addr.get(&addr).map_or(0, VecDeque::len);
            let hog =
                s.by_addr
                    .iter()
                    .max_by_key(|(_, conns)| conns.len())
                    .map(|(a, conns)| if conns.len() > own { *a } else { addr });
            if let Some(hog) = hog {
                if let Some(conns) = s.by_addr.get_mut(&hog) {
                    if let Some((_, closed)) = conns.pop_front() {
                        closed.notify_one();
                        evicted = true;
                    }
                    if conns.is_empty() {
                        s.by_addr.remove(&hog);
                    }
                }
                if evicted {
                    s.total -= 1;
                }
            }
        }
        s.next += 1;
        let id = s.next;
        let closed = Arc::new(Notify::new());
        s.by_addr.entry(addr).or_default().push_back((id, closed.clone()));
        s.total += 1;
        (Slot { table: self.clone(), addr, id, closed }, evicted)
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.lock().total
    }
}

impl Slot {
    /// Resolves when this connection was chosen to make room.
    pub async fn closed(&self) {
        self.closed.notified().await;
    }

    /// The notification of [`Slot::closed`], to wait on after the slot itself is given back
    /// (it then never fires).
    pub fn close_signal(&self) -> Arc<Notify> {
        self.closed.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.table.lock();
        let Some(conns) = s.by_addr.get_mut(&self.addr) else { return };
        let Some(at) = conns.iter().position(|(id, _)| *id == self.id) else { return };
        conns.remove(at);
        if conns.is_empty() {
            s.by_addr.remove(&self.addr);
        }
        s.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    async fn fired(slot: &Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(20), slot.closed()).await.is_ok()
    }

    #[tokio::test]
    async fn a_full_table_closes_the_oldest_of_the_address_holding_the_most() {
        let t = Slots::new(4);
        let (other, _) = t.admit(ip(2));
        let mut flood = Vec::new();
        for _ in 0..3 {
            let (s, evicted) = t.admit(ip(1));
            assert!(!evicted);
            flood.push(s);
        }
        assert_eq!(t.held(), 4);
        // Full: a newcomer from a third address pushes out the flooder's oldest, not `other`.
        let (newcomer, evicted) = t.admit(ip(3));
        assert!(evicted);
        assert!(fired(&flood[0]).await, "the flooder's oldest is told to close");
        assert!(!fired(&flood[1]).await && !fired(&other).await && !fired(&newcomer).await);
        assert_eq!(t.held(), 4);
        // The flooder reopening pushes out only its own.
        for _ in 0..10 {
            let (s, evicted) = t.admit(ip(1));
            assert!(evicted);
            flood.push(s);
        }
        assert!(!fired(&other).await && !fired(&newcomer).await, "others keep their slots");
        assert_eq!(t.held(), 4);
        // Dropping an evicted slot gives nothing back twice; dropping a held one does.
        flood.drain(..11);
        assert_eq!(t.held(), 4);
        drop(other);
        assert_eq!(t.held(), 3);
        let (_again, evicted) = t.admit(ip(2));
        assert!(!evicted, "room again");
    }

    #[tokio::test]
    async fn one_address_alone_makes_room_from_its_own_oldest() {
        let t = Slots::new(2);
        let (a, _) = t.admit(ip(1));
        let (b, _) = t.admit(ip(1));
        let (c, evicted) = t.admit(ip(1));
        assert!(evicted && fired(&a).await);
        assert!(!fired(&b).await && !fired(&c).await);
        // IPv4-mapped IPv6 addresses are the same client.
        let (_d, _) = t.admit("::ffff:10.0.0.1".parse().unwrap());
        assert!(fired(&b).await);
    }
}
