//! Requests and streams in flight per caller: each MCP request holds a permit of its caller until
//! its answer has been sent in full (an SSE stream until it ends, a WebSocket until it closes),
//! so that one caller cannot hold every connection and stream the gateway and the
//! server behind it can serve. A caller over its limit is refused (429) before anything is
//! forwarded.

use crate::Body;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The permits held, by caller.
pub struct InFlight {
    limit: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One request's (or stream's) permit, of `n` units (1 but for weighted uses such as request
/// bytes being read): released when dropped.
pub struct Permit {
    table: Arc<InFlight>,
    owner: String,
    n: usize,
}

impl InFlight {
    /// At most `limit` of one caller at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), held: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for `owner`, unless it holds `limit` already.
    pub fn acquire(self: &Arc<Self>, owner: &str) -> Option<Permit> {
        self.acquire_n(owner, 1)
    }

    /// A permit of `n` units for `owner`, unless that would take it over `limit`.
    pub fn acquire_n(self: &Arc<Self>, owner: &str, n: usize) -> Option<Permit> {
        let mut held = self.lock();
        let now = held.entry(owner.to_string()).or_default();
        if now.saturating_add(n) > self.limit {
            if *now == 0 {
                held.remove(owner);
            }
            return None;
        }
        *now += n;
        Some(Permit { table: self.clone(), owner: owner.to_string(), n })
    }

    /// How many units `owner`'s permits hold.
    pub fn held(&self, owner: &str) -> usize {
        self.lock().get(owner).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.table.lock();
        if let Some(n) = held.get_mut(&self.owner) {
            *n = n.saturating_sub(self.n);
            if *n == 0 {
                held.remove(&self.owner);
            }
        }
    }
}

impl Permit {
    /// Grows this permit to `n` units in all, unless that would take its owner over the limit
    /// (it then stays as it was).
    pub fn grow_to(&mut self, n: usize) -> bool {
        if n <= self.n {
            return true;
        }
        let mut held = self.table.lock();
        let now = held.entry(self.owner.clone()).or_default();
        if now.saturating_add(n - self.n) > self.table.limit {
            return false;
        }
        *now += n - self.n;
        self.n = n;
        true
    }

    /// Shrinks this permit to `n` units in all (gives the rest back).
    pub fn shrink_to(&mut self, n: usize) {
        if n >= self.n {
            return;
        }
        let mut held = self.table.lock();
        if let Some(now) = held.get_mut(&self.owner) {
            *now = now.saturating_sub(self.n - n);
        }
        self.n = n;
    }

    /// `body`, holding this permit until it is dropped (sent in full, or the client went).
    pub fn hold(self, body: Body) -> Body {
        body.map_frame(move |frame| {
            let _held = &self;
            frame
        })
        .boxed_unsync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    #[test]
    fn a_caller_over_its_limit_is_refused_and_others_are_not() {
        let t = InFlight::new(2);
        let a1 = t.acquire("a").expect("first");
        let _a2 = t.acquire("a").expect("second");
        assert!(t.acquire("a").is_none(), "third refused");
        let _b = t.acquire("b").expect("another caller is not affected");
        drop(a1);
        assert!(t.acquire("a").is_some(), "a permit released is available again");
    }

    #[test]
    fn weighted_permits_count_their_units_and_grow_within_the_limit() {
        let t = InFlight::new(10);
        let mut a = t.acquire_n("a", 4).expect("4 of 10");
        assert!(t.acquire_n("a", 7).is_none(), "4 + 7 > 10");
        assert_eq!(t.held("a"), 4, "a refused permit holds nothing");
        assert!(t.acquire_n("b", 10).is_some(), "another caller has its own 10");
        assert!(a.grow_to(9));
        assert_eq!(t.held("a"), 9);
        let one = t.acquire("a").expect("the 10th");
        assert!(!a.grow_to(10), "over the limit: unchanged");
        assert_eq!(t.held("a"), 10);
        a.shrink_to(2);
        assert_eq!(t.held("a"), 3, "7 given back");
        drop(one);
        drop(a);
        assert_eq!(t.held("a"), 0);
        assert!(t.acquire_n("nobody", 11).is_none());
        assert_eq!(t.held("nobody"), 0);
    }

    #[tokio::test]
    async fn a_body_holds_its_permit_until_it_is_sent_or_dropped() {
        let t = InFlight::new(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, crate::BoxError>>(1);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let stream = StreamBody::new(frames);
        let body = t.acquire("a").unwrap().hold(stream.boxed_unsync());
        assert_eq!(t.held("a"), 1);
        tx.send(Ok(Frame::data(Bytes::from("x")))).await.unwrap();
        drop(tx);
        let mut body = body;
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "x");
        assert!(body.frame().await.is_none(), "the end of the stream");
        assert_eq!(t.held("a"), 1, "held while the body lives");
        drop(body);
        assert_eq!(t.held("a"), 0, "released with the body (hyper drops it once sent in full)");

        let body = t.acquire("a").unwrap().hold(Full::new(Bytes::from("y")).map_err(|e| match e {}).boxed_unsync());
        assert!(t.acquire("a").is_none());
        drop(body);
        assert_eq!(t.held("a"), 0, "released when the client goes");
    }
}
