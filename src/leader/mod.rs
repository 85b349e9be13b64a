//! Leader election with a fence.
//!
//! [`LeaseLock`] takes, renews and releases the Lease with conditional writes (as client-go's
//! are: a write from a stale read fails instead of overwriting another holder's Lease). This
//! module drives it with a bounded retry, watches the Lease, and fences the controllers: a
//! reconcile starts only while this replica is elected *and* the Lease, as last seen renewed, is
//! still current by the renew time this replica wrote. A leader that cannot renew (API server
//! away, a request that hangs) stops starting reconciles [`MARGIN`] before its Lease can expire
//! and another replica can take it, and resumes as soon as a renewal is seen; one that sees
//! another holder has lost and says so.

use crate::controller::watch::{self, BoundedBackoff, WatchHealth};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::Api;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch as channel;

mod lock;
pub use lock::LeaseLock;

/// How long the fence closes before the Lease expires (clock differences between replicas,
/// requests in flight).
pub const MARGIN: Duration = Duration::from_secs(3);

/// Lease duration (seconds): how long a replica that stopped renewing keeps the Lease.
pub const LEASE_SECONDS: u64 = 15;
/// The Lease is renewed this long before it expires: every 8 s, leaving 4 s between a renewal
/// due and the fence closing.
pub const RENEW_BEFORE_SECONDS: u64 = 7;

/// Who holds the Lease, as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This replica, until then (renew time + duration).
    Me {
        /// When the Lease expires.
        until: SystemTime,
    },
    /// Another replica, until then.
    Other {
        /// When the Lease expires.
        until: SystemTime,
    },
    /// Nobody (released, or not created yet).
    Nobody,
}

/// Reads `lease` for the replica `me`.
pub fn holder(lease: &Lease, me: &str) -> Holder {
    let Some(spec) = &lease.spec else { return Holder::Nobody };
    let Some(who) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else { return Holder::Nobody };
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| SystemTime::from(t.0));
    let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
    // A holder without a renew time holds nothing (a released Lease has neither).
    let until = renewed.map_or(SystemTime::UNIX_EPOCH, |t| t + Duration::from_secs(seconds));
    if who == me {
        Holder::Me { until }
    } else {
        Holder::Other { until }
    }
}

/// What the fence says at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Reconciles may start, until then.
    Open {
        /// When the fence closes unless a renewal is seen.
        until: SystemTime,
    },
    /// No reconcile may start.
    Closed,
    /// Another replica holds a current Lease while this one is elected: it lost.
    Lost,
}

/// The fence for a replica that is `elected` (holds the Lease by its own last round) and sees
/// `holder` at `now`.
pub fn gate(elected: bool, holder: Holder, now: SystemTime) -> Gate {
    match holder {
        Holder::Other { until } if elected && now < until => Gate::Lost,
        Holder::Me { until } if elected => match until.checked_sub(MARGIN) {
            Some(close) if now < close => Gate::Open { until: close },
            _ => Gate::Closed,
        },
        _ => Gate::Closed,
    }
}

/// Whether the Lease, as `holder` says, may be taken at `now` by a replica that does not hold it:
/// nobody holds it (released, deleted) or its holder's term is over.
pub fn free(holder: Holder, now: SystemTime) -> bool {
    match holder {
        Holder::Nobody => true,
        Holder::Other { until } => until <= now,
        Holder::Me { .. } => false,
    }
}

/// Open while this replica may start reconciles. [`Fence::open`] is always open (no leader
/// election).
#[derive(Clone, Debug)]
pub struct Fence(channel::Receiver<bool>);

impl Default for Fence {
    fn default() -> Self {
        Self::open()
    }
}

impl Fence {
    /// A fence that never closes.
    pub fn open() -> Self {
        Self(channel::channel(true).1)
    }

    /// A fence that never opens (tests).
    #[cfg(test)]
    pub fn never() -> Self {
        Self(channel::channel(false).1)
    }

    /// A fence opened and closed through the returned sender (tests).
    #[cfg(test)]
    pub fn controlled(open: bool) -> (channel::Sender<bool>, Self) {
        let (tx, rx) = channel::channel(open);
        (tx, Self(rx))
    }

    /// Whether reconciles may start now.
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the fence is open; never, if it closed for good (the election ended).
    pub async fn wait(&self) {
        if self.0.clone().wait_for(|open| *open).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the fence is closed (this replica may no longer lead); never for a fence
    /// that cannot close.
    pub async fn closed(&self) {
        if self.0.clone().wait_for(|open| !*open).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A running election: the fence, and how it ends.
pub struct Election {
    fence: Fence,
    lost: channel::Receiver<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    elector: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Election {
    /// Starts electing through `lock` for the Lease `name` in `namespace`, as `me`, watching
    /// the Lease through `client` (its watch health recorded in `health`). `on_gate` is told
    /// every change of the fence (the leader metric).
    pub fn start(
        client: kube::Client,
        lock: LeaseLock,
        namespace: &str,
        name: &str,
        me: &str,
        health: Arc<WatchHealth>,
        on_gate: impl Fn(bool) + Send + 'static,
    ) -> Self {
        let (elected_tx, elected) = channel::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (holder_tx, holders) = channel::channel(Holder::Nobody);
        let views = Arc::new(Views::new(holder_tx));
        let elector = tokio::spawn(elect(lock, elected_tx, views.clone(), holders.clone(), stopped));

        let me = me.to_string();
        let config = watch::config(watcher::Config::default().fields(&format!("metadata.name={name}")));
        let leases = watch::events(watcher(Api::<Lease>::namespaced(client, namespace), config), health, "Lease");
        let reader = tokio::spawn(async move {
            let mut leases = std::pin::pin!(leases);
            while let Some(event) = leases.next().await {
                match event {
                    watcher::Event::Apply(l) | watcher::Event::InitApply(l) => {
                        views.offer(holder(&l, &me), l.metadata.resource_version.as_deref())
                    }
                    watcher::Event::Delete(l) => views.offer(Holder::Nobody, l.metadata.resource_version.as_deref()),
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
            }
        });

        let (fence_tx, fence) = channel::channel(false);
        let (lost_tx, lost) = channel::channel(false);
        let keeper = tokio::spawn(keep(elected, holders, fence_tx, lost_tx, on_gate));
        Self { fence: Fence(fence), lost, stop: Some(stop), elector, tasks: vec![reader, keeper] }
    }

    /// The fence the controllers wait on.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Resolves when this replica lost the Lease to another one.
    pub async fn lost(&self) {
        if self.lost.clone().wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops electing and releases the Lease (if held), waiting at most `timeout`.
    pub async fn release(mut self, timeout: Duration) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(timeout, &mut self.elector).await;
    }
}

/// The newest view of the Lease, from its watch and from this replica's own reads and writes: a
/// view older (by resourceVersion) than one already passed on is dropped, so that a watch that
/// lags behind does not undo what this replica just wrote (a Lease it has just taken seen as still
/// held by the replica that released it, which would read as a loss). resourceVersions are etcd
/// revisions, which only grow; one that is not a number is passed on whatever its order.
pub(crate) struct Views {
    tx: channel::Sender<Holder>,
    newest: std::sync::Mutex<u64>,
}

impl Views {
    pub(crate) fn new(tx: channel::Sender<Holder>) -> Self {
        Self { tx, newest: std::sync::Mutex::new(0) }
    }

    /// Passes `seen`, of the Lease at `version`, on unless a newer view was passed on before.
    pub(crate) fn offer(&self, seen: Holder, version: Option<&str>) {
        let mut newest = self.newest.lock().expect("views lock");
        if let Some(v) = version.and_then(|v| v.parse::<u64>().ok()) {
            if v < *newest {
                return;
            }
            *newest = v;
        }
        self.tx.send_replace(seen);
    }
}

/// How long one round of the election (a read and a write of the Lease) may take before it is
/// given up and retried: a request that hangs must not hold up the renewals after it.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes and renews the Lease through `lock` until `stop`, then releases it (not when `stop` is
/// dropped: the election was abandoned, e.g. on a loss, and the process is ending). Every round's
/// outcome is sent on `elected` (true while this replica holds the Lease; false once another
/// replica is seen holding a current one); a failed round is retried after a bounded backoff
/// (≤ 5 s) and changes nothing. This replica renews [`RENEW_BEFORE_SECONDS`] before its term
/// ends; waiting, it tries again when the holder's term ends, or at once when the watched Lease
/// (`holders`) is released or deleted.
async fn elect(
    mut lock: LeaseLock,
    elected: channel::Sender<bool>,
    views: Arc<Views>,
    mut holders: channel::Receiver<Holder>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let renew_every = Duration::from_secs(LEASE_SECONDS - RENEW_BEFORE_SECONDS);
    let mut watching = true;
    let mut backoff = BoundedBackoff::default();
    'rounds: loop {
        let now = SystemTime::now();
        let started = tokio::time::Instant::now();
        // A stop cancels a round in flight: the release reads the Lease afresh.
        let round = tokio::select! {
            biased;
            asked = &mut stop => if asked.is_ok() { break 'rounds } else { return },
            round = tokio::time::timeout(ROUND_TIMEOUT, lock.try_acquire_or_renew(now)) => round,
        };
        // From the round's start (the renew time it wrote), however long the round took.
        let mut deadline = match round {
            Ok(Ok(seen)) => {
                kube::runtime::utils::Backoff::reset(&mut backoff);
                views.offer(seen, lock.version());
                let left = |until: SystemTime| until.duration_since(now).unwrap_or_default();
                let wait = match seen {
                    Holder::Me { until } => {
                        elected.send_if_modified(|was| !std::mem::replace(was, true));
                        // Renewed: after `renew_every`. Seen ours but not renewed (the Lease kept
                        // changing under the round): soon.
                        left(until).saturating_sub(Duration::from_secs(RENEW_BEFORE_SECONDS)).min(renew_every)
                    }
                    Holder::Other { until } => {
                        elected.send_if_modified(|was| std::mem::replace(was, false));
                        left(until)
                    }
                    // Released or deleted while this round ran: the next one takes it.
                    Holder::Nobody => Duration::ZERO,
                };
                started + wait.max(Duration::from_millis(100))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "leader election: the Lease could not be read or written");
                tokio::time::Instant::now() + backoff.next().unwrap_or(ROUND_TIMEOUT)
            }
            Err(_) => {
                tracing::warn!(timeout = ?ROUND_TIMEOUT, "leader election: the Lease did not answer in time");
                tokio::time::Instant::now() + backoff.next().unwrap_or(ROUND_TIMEOUT)
            }
        };
        loop {
            tokio::select! {
                biased;
                asked = &mut stop => if asked.is_ok() { break 'rounds } else { return },
                _ = tokio::time::sleep_until(deadline) => break,
                seen = holders.changed(), if watching && !*elected.borrow() => {
                    if seen.is_err() {
                        watching = false;
                        continue;
                    }
                    let now = SystemTime::now();
                    match *holders.borrow_and_update() {
                        seen if free(seen, now) => break,
                        // Renewed by its holder: wait for the new end of its term.
                        Holder::Other { until } => {
                            deadline = tokio::time::Instant::now() + until.duration_since(now).unwrap_or_default();
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "could not release the leader Lease");
    }
}

/// Keeps `fence` in step with `elected` and `holders` (and the clock), and sets `lost` once
/// another replica holds a current Lease while this one is elected, or this one is no longer
/// elected after it was.
async fn keep(
    mut elected: channel::Receiver<bool>,
    mut holders: channel::Receiver<Holder>,
    fence: channel::Sender<bool>,
    lost: channel::Sender<bool>,
    on_gate: impl Fn(bool),
) {
    let mut led = false;
    loop {
        let now = SystemTime::now();
        let is_elected = *elected.borrow_and_update();
        let mut state = gate(is_elected, *holders.borrow_and_update(), now);
        // The elector un-elects only on finding another current holder: lost as well.
        if led && !is_elected {
            state = Gate::Lost;
        }
        led |= is_elected;
        let open = matches!(state, Gate::Open { .. });
        if fence.send_if_modified(|was| std::mem::replace(was, open) != open) {
            on_gate(open);
            if open {
                tracing::info!("leading: reconciles may start");
            } else {
                tracing::warn!("not sure of the leader Lease any more: no reconcile starts until it is renewed");
            }
        }
        if state == Gate::Lost {
            lost.send_replace(true);
            return;
        }
        let wake = match state {
            Gate::Open { until } => until.duration_since(now).unwrap_or_default(),
            _ => Duration::from_secs(3600),
        };
        let ended = tokio::select! {
            r = elected.changed() => r.is_err(),
            r = holders.changed() => r.is_err(),
            _ = tokio::time::sleep(wake) => false,
        };
        if ended {
            // The elector or the Lease's watch is gone: nothing can keep the fence open any more.
            if fence.send_if_modified(|was| std::mem::replace(was, false)) {
                on_gate(false);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: SystemTime, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed.try_into().unwrap())),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn the_lease_names_its_holder_and_expiry() {
        assert_eq!(holder(&lease("a", at(0), 15), "a"), Holder::Me { until: at(15) });
        assert_eq!(holder(&lease("b", at(0), 15), "a"), Holder::Other { until: at(15) });
        assert_eq!(holder(&lease("", at(0), 15), "a"), Holder::Nobody);
        assert_eq!(holder(&Lease::default(), "a"), Holder::Nobody);
        let mut erased = lease("a", at(0), 15);
        erased.spec.as_mut().unwrap().renew_time = None;
        assert_eq!(holder(&erased, "a"), Holder::Me { until: SystemTime::UNIX_EPOCH });
    }

    #[test]
    fn an_elected_replica_reconciles_until_shortly_before_its_lease_expires() {
        let me = Holder::Me { until: at(15) };
        assert_eq!(gate(true, me, at(1)), Gate::Open { until: at(15) - MARGIN });
        assert_eq!(gate(true, me, at(15) - MARGIN), Gate::Closed);
        assert_eq!(gate(true, me, at(20)), Gate::Closed);
        // Not elected (yet, or any more): closed whatever the Lease says.
        assert_eq!(gate(false, me, at(1)), Gate::Closed);
        assert_eq!(gate(true, Holder::Nobody, at(1)), Gate::Closed);
    }

    #[test]
    fn another_current_holder_means_lost_and_an_expired_one_does_not() {
        let other = Holder::Other { until: at(15) };
        assert_eq!(gate(true, other, at(10)), Gate::Lost);
        // An expired Lease of a former leader, seen before our own acquisition arrives.
        assert_eq!(gate(true, other, at(16)), Gate::Closed);
        // A standby sees the leader's Lease: closed, not lost.
        assert_eq!(gate(false, other, at(10)), Gate::Closed);
    }

    #[test]
    fn a_released_deleted_or_expired_lease_is_free_and_a_current_one_is_not() {
        assert!(free(Holder::Nobody, at(0)));
        assert!(free(Holder::Other { until: at(10) }, at(10)));
        assert!(!free(Holder::Other { until: at(10) }, at(9)));
        assert!(!free(Holder::Me { until: at(0) }, at(10)), "our own Lease is ours to renew, not to take");
        // A released Lease: no holder.
        let mut released = lease("other", at(0), 15);
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(free(holder(&released, "me"), at(1)));
    }

    #[test]
    fn renewals_come_before_the_fence_closes() {
        let renew_every = LEASE_SECONDS - RENEW_BEFORE_SECONDS;
        let closes_after = Duration::from_secs(LEASE_SECONDS) - MARGIN;
        assert!(Duration::from_secs(renew_every) + Duration::from_secs(3) <= closes_after);
    }

    #[tokio::test]
    async fn the_fence_opens_on_a_renewal_closes_when_renewals_stop_and_reports_a_loss() {
        let (elected_tx, elected) = channel::channel(false);
        let (holder_tx, holders) = channel::channel(Holder::Nobody);
        let (fence_tx, fence) = channel::channel(false);
        let (lost_tx, mut lost) = channel::channel(false);
        let changes = Arc::new(std::sync::Mutex::new(vec![]));
        let seen = changes.clone();
        tokio::spawn(keep(elected, holders, fence_tx, lost_tx, move |open| seen.lock().unwrap().push(open)));
        let mut fence = Fence(fence);
        let renewed = |secs: f64| Holder::Me { until: SystemTime::now() + Duration::from_secs_f64(secs) };
        let opens = |mut fence: channel::Receiver<bool>| async move {
            tokio::time::timeout(Duration::from_secs(10), fence.wait_for(|open| *open)).await.unwrap().unwrap();
        };

        elected_tx.send_replace(true);
        // What must not happen cannot be awaited: a pause (which a slow machine only shortens
        // into a weaker check, never into a false failure).
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fence.is_open(), "elected, but the Lease is not seen as ours yet");

        holder_tx.send_replace(renewed(15.0));
        opens(fence.0.clone()).await;

        // Renewed once more, then no more renewals: the fence stays open, then closes on its own
        // MARGIN before the Lease expires (here 3 s after this renewal).
        holder_tx.send_replace(renewed(MARGIN.as_secs_f64() + 3.0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(fence.is_open(), "a renewal keeps it open");
        tokio::time::timeout(Duration::from_secs(10), fence.0.wait_for(|open| !*open)).await.unwrap().unwrap();

        holder_tx.send_replace(renewed(15.0));
        opens(fence.0.clone()).await;

        holder_tx.send_replace(Holder::Other { until: SystemTime::now() + Duration::from_secs(15) });
        tokio::time::timeout(Duration::from_secs(10), lost.wait_for(|l| *l)).await.unwrap().unwrap();
        assert!(!fence.is_open());
        assert_eq!(*changes.lock().unwrap(), vec![true, false, true, false]);
    }

    #[tokio::test]
    async fn being_unelected_after_leading_is_a_loss() {
        let (elected_tx, elected) = channel::channel(true);
        let (_holder_tx, holders) = channel::channel(Holder::Me { until: SystemTime::now() + Duration::from_secs(15) });
        let (fence_tx, fence) = channel::channel(false);
        let (lost_tx, mut lost) = channel::channel(false);
        tokio::spawn(keep(elected, holders, fence_tx, lost_tx, |_| {}));
        let mut fence = Fence(fence);
        tokio::time::timeout(Duration::from_secs(10), fence.0.wait_for(|open| *open)).await.unwrap().unwrap();
        assert!(!*lost.borrow());
        elected_tx.send_replace(false);
        tokio::time::timeout(Duration::from_secs(10), lost.wait_for(|l| *l)).await.unwrap().unwrap();
        assert!(!fence.is_open());
    }

    #[test]
    fn a_view_older_than_one_passed_on_is_dropped() {
        let (tx, rx) = channel::channel(Holder::Nobody);
        let views = Views::new(tx);
        let me = Holder::Me { until: at(15) };
        let released = Holder::Nobody;
        let old = Holder::Other { until: at(10) };
        views.offer(me, Some("20"));
        assert_eq!(*rx.borrow(), me);
        // The watch, behind: the previous holder's renewal and its release, both older.
        views.offer(old, Some("18"));
        views.offer(released, Some("19"));
        assert_eq!(*rx.borrow(), me, "older views change nothing");
        views.offer(me, Some("20"));
        views.offer(old, Some("21"));
        assert_eq!(*rx.borrow(), old, "a newer view is passed on");
        views.offer(released, Some("not a number"));
        assert_eq!(*rx.borrow(), released, "an unordered one too");
    }

    #[tokio::test]
    async fn the_fence_closes_when_the_elector_is_gone() {
        let (elected_tx, elected) = channel::channel(true);
        let (_holder_tx, holders) = channel::channel(Holder::Me { until: SystemTime::now() + Duration::from_secs(15) });
        let (fence_tx, fence) = channel::channel(false);
        let (lost_tx, _lost) = channel::channel(false);
        let keeper = tokio::spawn(keep(elected, holders, fence_tx, lost_tx, |_| {}));
        let mut fence = Fence(fence);
        tokio::time::timeout(Duration::from_secs(10), fence.0.wait_for(|open| *open)).await.unwrap().unwrap();
        drop(elected_tx);
        tokio::time::timeout(Duration::from_secs(10), keeper).await.unwrap().unwrap();
        assert!(!fence.is_open());
    }
}
