//! The leader Lease as one replica reads and writes it, the way client-go's leader election does:
//! every write is based on the Lease as this replica last read (or wrote) it and carries that
//! resourceVersion, so a write from a stale read fails with 409 Conflict instead of overwriting
//! what another replica (or an administrator) wrote since. A renewal of a Lease that was taken in
//! the meantime therefore changes nothing: the replica reads the Lease again and sees who holds it.
//!
//! Writes are merge patches (the chart's Role grants `patch`, not `update`), whose
//! `metadata.resourceVersion` is the precondition.
//!
//! Unlike client-go, a Lease's term is judged by its own renew time and duration against this
//! replica's clock (as kube-lease-manager, used before, did), not by how long this replica has
//! seen it unchanged: a standby takes an expired Lease at once when it starts, and clocks must
//! agree within the fence's margin (`super::MARGIN`, 3 s).

use super::{free, holder, Holder};
use crate::consts::FIELD_MANAGER;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::SystemTime;

/// What a replica writes next, from the Lease as it read it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The Lease is missing: make it, held by this replica.
    Create(LeaseSpec),
    /// Write this spec over the Lease as read: a renewal of this replica's own Lease, or the
    /// taking of a free one (released, or its holder's term is over).
    Write(LeaseSpec),
    /// Another replica holds a current Lease.
    Wait,
}

/// The next step of the replica `me` that read `current` (None: no Lease) at `now`, for Leases of
/// `seconds`.
pub fn step(current: Option<&Lease>, me: &str, seconds: i32, now: SystemTime) -> Step {
    let stamp = MicroTime(now.try_into().expect("a time after 1970"));
    let held = |spec: LeaseSpec| LeaseSpec {
        holder_identity: Some(me.to_string()),
        renew_time: Some(stamp.clone()),
        lease_duration_seconds: Some(seconds),
        ..spec
    };
    let Some(lease) = current else {
        return Step::Create(held(LeaseSpec {
            acquire_time: Some(stamp.clone()),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }));
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match holder(lease, me) {
        // Our own, even past its term: nobody took it meanwhile.
        Holder::Me { .. } => Step::Write(held(spec)),
        seen if free(seen, now) => {
            let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
            Step::Write(held(LeaseSpec {
                acquire_time: Some(stamp.clone()),
                lease_transitions: Some(transitions),
                ..spec
            }))
        }
        _ => Step::Wait,
    }
}

/// One replica's hold on the Lease `name`.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    me: String,
    seconds: i32,
    /// The Lease as this replica last read or wrote it.
    last: Option<Lease>,
}

impl LeaseLock {
    /// The lock of the replica `me` on the Lease `name` (in `api`'s namespace), held `seconds` at
    /// a time.
    pub fn new(api: Api<Lease>, name: &str, me: &str, seconds: i32) -> Self {
        Self { api, name: name.into(), me: me.into(), seconds, last: None }
    }

    /// The resourceVersion of the Lease as this replica last read or wrote it.
    pub fn version(&self) -> Option<&str> {
        self.last.as_ref().and_then(|l| l.metadata.resource_version.as_deref())
    }

    fn params() -> PatchParams {
        PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() }
    }

    /// Whether `lease` names this replica as its holder.
    fn ours(&self, lease: &Lease) -> bool {
        matches!(holder(lease, &self.me), Holder::Me { .. })
    }

    /// Makes the Lease with `spec`.
    async fn create(&self, spec: LeaseSpec) -> kube::Result<Lease> {
        let lease =
            Lease { metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() }, spec: Some(spec) };
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        self.api.create(&params, &lease).await
    }

    /// Makes the Lease when it is missing, held by nobody (so that it can be given an owner
    /// before anyone elects).
    pub async fn ensure(&mut self) -> kube::Result<()> {
        if let Some(lease) = self.api.get_opt(&self.name).await? {
            self.last = Some(lease);
            return Ok(());
        }
        match self.create(LeaseSpec { lease_duration_seconds: Some(self.seconds), ..LeaseSpec::default() }).await {
            Ok(made) => self.last = Some(made),
            // Another replica made it first.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// One round at `now`: renews this replica's Lease or takes a free one, and says who holds the
    /// Lease afterwards. A renewal is written from what this replica wrote last (one request);
    /// anything else, and a write that met a change (409), reads the Lease first.
    pub async fn try_acquire_or_renew(&mut self, now: SystemTime) -> kube::Result<Holder> {
        let mut current = self.last.take().filter(|l| self.ours(l));
        for attempt in 0..2 {
            if current.is_none() || attempt > 0 {
                current = self.api.get_opt(&self.name).await?;
            }
            let written = match step(current.as_ref(), &self.me, self.seconds, now) {
                Step::Wait => {
                    let seen = current.as_ref().map_or(Holder::Nobody, |l| holder(l, &self.me));
                    self.last = current;
                    return Ok(seen);
                }
                Step::Create(spec) => self.create(spec).await,
                Step::Write(spec) => {
                    let read = current.as_ref().expect("a Lease was read");
                    self.write(read, serde_json::to_value(&spec).expect("a Lease spec serializes")).await
                }
            };
            match written {
                Ok(stored) => {
                    let seen = holder(&stored, &self.me);
                    self.last = Some(stored);
                    return Ok(seen);
                }
                // Written, made or deleted by someone since it was read: read it again and decide
                // again.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
                Err(e) => return Err(e),
            }
        }
        // Changed under us twice in a row: say who holds it now, and try again next round.
        let fresh = self.api.get_opt(&self.name).await?;
        let seen = fresh.as_ref().map_or(Holder::Nobody, |l| holder(l, &self.me));
        self.last = fresh;
        Ok(seen)
    }

    /// A merge patch of `spec` over `read`, on the condition that the Lease has not changed since.
    async fn write(&self, read: &Lease, spec: serde_json::Value) -> kube::Result<Lease> {
        // Without a resourceVersion the patch would be unconditional (never so for what the API
        // server returned).
        let version = read.resource_version().ok_or_else(|| {
            kube::Error::Service("the Lease as read has no resourceVersion to write it conditionally".into())
        })?;
        let patch = json!({"metadata": {"resourceVersion": version}, "spec": spec});
        self.api.patch(&self.name, &Self::params(), &Patch::Merge(&patch)).await
    }

    /// Gives the Lease up, if this replica holds it, so that the next replica need not wait for
    /// its term to end. A Lease that changed since this replica last wrote it is read again and
    /// released only if it is still ours. The holder, its times and its term are cleared (what
    /// kube-lease-manager, which earlier versions ran, also does, so that either kind of replica
    /// takes a released Lease).
    pub async fn release(&mut self) -> kube::Result<()> {
        let cleared =
            json!({"holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": null});
        let mut current = match self.last.take() {
            Some(lease) => Some(lease),
            // A round was cut short: what it wrote is not known.
            None => self.api.get_opt(&self.name).await?,
        };
        for _ in 0..2 {
            let Some(read) = current.as_ref().filter(|l| self.ours(l)) else {
                return Ok(());
            };
            match self.write(read, cleared.clone()).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => current = self.api.get_opt(&self.name).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    /// An API server holding one Lease, with the resourceVersion rules of a real one: a create of
    /// an existing Lease and a patch whose resourceVersion is not the current one are refused
    /// with 409 Conflict. Every request answered is recorded; the next `hang` requests are never
    /// answered (an API server that accepts a connection and then stalls).
    #[derive(Clone, Default)]
    struct Store {
        lease: Arc<Mutex<Option<Value>>>,
        version: Arc<Mutex<u64>>,
        requests: Arc<Mutex<Vec<(Method, Value)>>>,
        hang: Arc<Mutex<usize>>,
        hung: Arc<Mutex<usize>>,
    }

    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    fn status(code: u16, reason: &str) -> (u16, Value) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": reason, "reason": reason, "code": code});
        (code, body)
    }

    impl Store {
        fn answer(&self, method: &Method, path: &str, body: Value) -> (u16, Value) {
            self.requests.lock().unwrap().push((method.clone(), body.clone()));
            let mut lease = self.lease.lock().unwrap();
            let mut version = self.version.lock().unwrap();
            let mut stamp = |mut obj: Value| {
                *version += 1;
                obj["metadata"]["resourceVersion"] = json!(version.to_string());
                obj["apiVersion"] = json!("coordination.k8s.io/v1");
                obj["kind"] = json!("Lease");
                obj
            };
            match (method.clone(), path) {
                (Method::GET, p) if p == format!("{LEASES}/leader") => match lease.as_ref() {
                    Some(l) => (200, l.clone()),
                    None => status(404, "NotFound"),
                },
                (Method::POST, LEASES) => {
                    if lease.is_some() {
                        return status(409, "AlreadyExists");
                    }
                    let made = stamp(body);
                    *lease = Some(made.clone());
                    (201, made)
                }
                (Method::PATCH, p) if p == format!("{LEASES}/leader") => {
                    let Some(current) = lease.as_mut() else { return status(404, "NotFound") };
                    let wanted = &body["metadata"]["resourceVersion"];
                    if !wanted.is_null() && *wanted != current["metadata"]["resourceVersion"] {
                        return status(409, "Conflict");
                    }
                    let mut next = current.clone();
                    merge(&mut next, &body);
                    *current = stamp(next);
                    (200, current.clone())
                }
                (m, p) => panic!("unexpected request {m} {p}"),
            }
        }

        fn client(&self) -> kube::Client {
            let store = self.clone();
            let service = tower::service_fn(move |request: Request<Body>| {
                let store = store.clone();
                async move {
                    if store.stalls() {
                        std::future::pending::<()>().await;
                    }
                    let (parts, body) = request.into_parts();
                    let bytes = body.collect_bytes().await.unwrap();
                    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                    let (code, answer) = store.answer(&parts.method, parts.uri.path(), body);
                    let response = Response::builder()
                        .status(code)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            kube::Client::new(service, "ops")
        }

        fn lock(&self, me: &str) -> LeaseLock {
            LeaseLock::new(Api::namespaced(self.client(), "ops"), "leader", me, 15)
        }

        fn spec(&self) -> Value {
            self.lease.lock().unwrap().as_ref().expect("a Lease")["spec"].clone()
        }

        /// What an administrator (or another program) writes over the Lease, unconditionally.
        fn overwrite(&self, spec: Value) {
            let mut lease = self.lease.lock().unwrap();
            let mut version = self.version.lock().unwrap();
            *version += 1;
            let l = lease.as_mut().expect("a Lease");
            merge(&mut l["spec"], &spec);
            l["metadata"]["resourceVersion"] = json!(version.to_string());
        }

        /// An intruder takes the Lease for an hour, unconditionally; returns what it wrote.
        fn take_for_an_hour(&self, at: SystemTime) -> Value {
            let taken = json!({"holderIdentity": "intruder", "renewTime": stamp(at), "leaseDurationSeconds": 3600});
            self.overwrite(taken.clone());
            taken
        }

        /// The Lease is still exactly as the intruder wrote it.
        fn assert_kept(&self, taken: &Value) {
            let spec = self.spec();
            for field in ["holderIdentity", "renewTime", "leaseDurationSeconds"] {
                assert_eq!(spec[field], taken[field], "{field} stays the intruder's");
            }
        }

        /// Whether this request is one of those that hang (counted).
        fn stalls(&self) -> bool {
            let mut hang = self.hang.lock().unwrap();
            if *hang == 0 {
                return false;
            }
            *hang -= 1;
            *self.hung.lock().unwrap() += 1;
            true
        }

        fn hung(&self) -> usize {
            *self.hung.lock().unwrap()
        }

        fn writes(&self) -> usize {
            self.requests.lock().unwrap().iter().filter(|(m, _)| *m != Method::GET).count()
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn stamp(t: SystemTime) -> String {
        serde_json::to_value(MicroTime(t.try_into().unwrap())).unwrap().as_str().unwrap().to_string()
    }

    #[test]
    fn the_step_makes_renews_takes_or_waits() {
        let lease = |who: &str, renewed: u64, transitions: i32| Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(who.into()),
                acquire_time: Some(MicroTime(at(0).try_into().unwrap())),
                renew_time: Some(MicroTime(at(renewed).try_into().unwrap())),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let Step::Create(made) = step(None, "a", 15, at(1)) else { panic!("a missing Lease is made") };
        assert_eq!(made.holder_identity.as_deref(), Some("a"));
        assert_eq!((made.lease_transitions, made.lease_duration_seconds), (Some(0), Some(15)));

        let Step::Write(renewed) = step(Some(&lease("a", 0, 3)), "a", 15, at(8)) else { panic!("renewal") };
        assert_eq!(renewed.renew_time, Some(MicroTime(at(8).try_into().unwrap())));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0).try_into().unwrap())), "acquired once");
        assert_eq!(renewed.lease_transitions, Some(3), "a renewal is no transition");

        assert_eq!(step(Some(&lease("b", 0, 3)), "a", 15, at(14)), Step::Wait, "b's term runs");
        let Step::Write(taken) = step(Some(&lease("b", 0, 3)), "a", 15, at(15)) else { panic!("b's term is over") };
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(15).try_into().unwrap())));
        assert_eq!(taken.lease_transitions, Some(4));

        let released =
            Lease { spec: Some(LeaseSpec { lease_transitions: Some(4), ..LeaseSpec::default() }), ..Lease::default() };
        let Step::Write(taken) = step(Some(&released), "a", 15, at(1)) else { panic!("a released Lease is free") };
        assert_eq!((taken.holder_identity.as_deref(), taken.lease_transitions), (Some("a"), Some(5)));
    }

    #[tokio::test]
    async fn a_replica_makes_the_lease_renews_it_in_one_request_and_another_waits() {
        let store = Store::default();
        let mut a = store.lock("a");
        let mut b = store.lock("b");
        a.ensure().await.unwrap();
        b.ensure().await.unwrap();
        assert_eq!(store.writes(), 1, "made once, by the first");
        let now = at(0);
        assert_eq!(a.try_acquire_or_renew(now).await.unwrap(), Holder::Me { until: now + Duration::from_secs(15) });
        assert_eq!(store.spec()["holderIdentity"], "a");
        assert_eq!(store.spec()["leaseTransitions"], 1);
        assert_eq!(b.try_acquire_or_renew(now).await.unwrap(), Holder::Other { until: now + Duration::from_secs(15) });

        let requests = store.requests.lock().unwrap().len();
        let later = now + Duration::from_secs(8);
        assert_eq!(a.try_acquire_or_renew(later).await.unwrap(), Holder::Me { until: later + Duration::from_secs(15) });
        let sent = store.requests.lock().unwrap()[requests..].to_vec();
        assert_eq!(sent.len(), 1, "a renewal is one request: {sent:?}");
        assert_eq!(sent[0].0, Method::PATCH);
        assert!(sent[0].1["metadata"]["resourceVersion"].is_string(), "the renewal is conditional: {:?}", sent[0].1);
        assert_eq!(store.spec()["renewTime"], stamp(later));
        assert_eq!(store.spec()["leaseTransitions"], 1);
    }

    #[tokio::test]
    async fn a_renewal_after_the_lease_was_taken_overwrites_nothing_and_sees_the_new_holder() {
        let store = Store::default();
        let mut a = store.lock("a");
        let now = at(0);
        a.try_acquire_or_renew(now).await.unwrap();
        // Taken by someone else for an hour, between two renewals of a.
        let taken = store.take_for_an_hour(now);
        let seen = a.try_acquire_or_renew(now + Duration::from_secs(8)).await.unwrap();
        assert_eq!(seen, Holder::Other { until: now + Duration::from_secs(3600) });
        store.assert_kept(&taken);
        // And a release by the deposed replica leaves it alone too.
        a.release().await.unwrap();
        store.assert_kept(&taken);
    }

    #[tokio::test]
    async fn of_two_replicas_taking_an_expired_lease_one_wins() {
        let store = Store::default();
        let mut old = store.lock("old");
        old.try_acquire_or_renew(at(0)).await.unwrap();
        let (mut a, mut b) = (store.lock("a"), store.lock("b"));
        let now = at(60);
        // Both read the expired Lease; a writes first, so b's write (from the same read) fails.
        let read = a.api.get("leader").await.unwrap();
        assert_eq!(a.try_acquire_or_renew(now).await.unwrap(), Holder::Me { until: now + Duration::from_secs(15) });
        let Step::Write(spec) = step(Some(&read), "b", 15, now) else { panic!("b may take it") };
        let refused = b.write(&read, serde_json::to_value(spec).unwrap()).await.unwrap_err();
        assert!(matches!(refused, kube::Error::Api(e) if e.code == 409));
        assert_eq!(b.try_acquire_or_renew(now).await.unwrap(), Holder::Other { until: now + Duration::from_secs(15) });
        assert_eq!(store.spec()["holderIdentity"], "a");
        assert_eq!(store.spec()["leaseTransitions"], 1, "made by old (0), taken by a");
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once_and_a_deleted_one_made_again() {
        let store = Store::default();
        let (mut a, mut b) = (store.lock("a"), store.lock("b"));
        let now = at(0);
        a.try_acquire_or_renew(now).await.unwrap();
        // Someone's merge patch (the owner reference) in between: the release reads again.
        store.overwrite(json!({}));
        a.release().await.unwrap();
        let spec = store.spec();
        assert!(spec.get("holderIdentity").is_none() && spec.get("renewTime").is_none(), "released: {spec}");
        assert_eq!(b.try_acquire_or_renew(now).await.unwrap(), Holder::Me { until: now + Duration::from_secs(15) });

        *store.lease.lock().unwrap() = None;
        assert_eq!(b.try_acquire_or_renew(now).await.unwrap(), Holder::Me { until: now + Duration::from_secs(15) });
        assert_eq!(store.spec()["holderIdentity"], "b");
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An elector running as `me` against `store`, whose watch of the Lease last showed `seen`.
    struct Elector {
        elected: tokio::sync::watch::Receiver<bool>,
        views: Arc<super::super::Views>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    fn elector(store: &Store, me: &str, seen: Holder) -> Elector {
        let (elected_tx, elected) = tokio::sync::watch::channel(false);
        let (holders_tx, holders) = tokio::sync::watch::channel(seen);
        let views = Arc::new(super::super::Views::new(holders_tx));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(super::super::elect(store.lock(me), elected_tx, views.clone(), holders, stopped));
        Elector { elected, views, stop, task }
    }

    #[tokio::test]
    async fn an_elector_takes_the_lease_and_releases_it_when_stopped() {
        let store = Store::default();
        let a = elector(&store, "a", Holder::Nobody);
        until("elected", || *a.elected.borrow()).await;
        assert_eq!(store.spec()["holderIdentity"], "a");
        a.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), a.task).await.unwrap().unwrap();
        assert!(store.spec().get("holderIdentity").is_none(), "released: {}", store.spec());
    }

    #[tokio::test]
    async fn a_standby_takes_a_released_lease_as_soon_as_its_watch_shows_it() {
        let store = Store::default();
        let mut a = store.lock("a");
        let held = a.try_acquire_or_renew(SystemTime::now()).await.unwrap();
        let Elector { elected, views, stop: _stop, .. } = elector(&store, "b", held);
        // a made the Lease (a read and a create); b reads a's current Lease and waits (its term
        // is 15 s).
        until("b's first round", || store.requests.lock().unwrap().len() >= 3).await;
        assert!(!*elected.borrow());
        a.release().await.unwrap();
        // What the watch shows: the release.
        let released = store.version.lock().unwrap().to_string();
        views.offer(Holder::Nobody, Some(&released));
        until("b elected", || *elected.borrow()).await;
        assert_eq!(store.spec()["holderIdentity"], "b");
    }

    #[tokio::test]
    async fn a_deposed_replica_releases_nothing_even_straight_after_its_own_renewal() {
        let store = Store::default();
        let mut a = store.lock("a");
        a.try_acquire_or_renew(at(0)).await.unwrap();
        let taken = store.take_for_an_hour(at(1));
        // a still believes it holds the Lease (its last write), and releases.
        a.release().await.unwrap();
        store.assert_kept(&taken);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_that_hangs_is_given_up_and_a_later_one_renews() {
        let store = Store::default();
        let a = elector(&store, "a", Holder::Nobody);
        until("elected", || *a.elected.borrow()).await;
        let writes = store.writes();
        *store.hang.lock().unwrap() = 1;
        until("a renewal after the hung one", || store.writes() > writes).await;
        assert_eq!(store.spec()["holderIdentity"], "a");
        assert_eq!(store.hung(), 1);
        assert!(*a.elected.borrow(), "a hung round changes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cancels_a_hanging_round_and_releases_at_once() {
        let store = Store::default();
        let a = elector(&store, "a", Holder::Nobody);
        until("elected", || *a.elected.borrow()).await;
        *store.hang.lock().unwrap() = 1;
        until("the renewal hangs", || store.hung() == 1).await;
        let asked = tokio::time::Instant::now();
        a.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), a.task).await.expect("the elector ends").unwrap();
        let took = asked.elapsed();
        // The clock is paused: only a timer (the round's timeout) could make this take time.
        assert!(took < Duration::from_secs(1), "released {took:?} after the stop, not at once");
        assert!(store.spec().get("holderIdentity").is_none(), "released: {}", store.spec());
    }
}
