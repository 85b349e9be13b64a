//! The controllers' watches: reflected into the caches, with a bounded backoff (an API server
//! that comes back is watched again within seconds), a server-side timeout that also bounds
//! how long a silently broken watch can go unnoticed, a health record that readiness and
//! liveness report, and triggers that fire only when something the reconcile reads changed.

use super::cache::HasChildMeta;
use super::Guarded;
use crate::api::McpServer;
use crate::consts::LABEL_INSTANCE;
use futures::{stream, Stream, StreamExt};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Server-side timeout of every watch request (seconds). A watch that stops delivering without
/// an error (a connection lost without a reset) is noticed after this plus kube's 5 s margin.
pub const WATCH_TIMEOUT_SECS: u32 = 55;

/// Exponential backoff from 250 ms to 5 s with jitter, reset by every successful event: a watch
/// retries often enough to resume within seconds of the API server's return, and no faster
/// than a handful of requests per second per watch while it is away.
#[derive(Debug, Clone)]
pub struct BoundedBackoff {
    current: Duration,
    min: Duration,
    max: Duration,
}

impl Default for BoundedBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(5))
    }
}

impl BoundedBackoff {
    /// From `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { current: min, min, max }
    }
}

impl Iterator for BoundedBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // Up to a quarter less, so that many watches do not retry in lockstep.
        let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        let jitter = base.mul_f64((random % 1000) as f64 / 4000.0);
        Some(base - jitter)
    }
}

impl Backoff for BoundedBackoff {
    fn reset(&mut self) {
        self.current = self.min;
    }
}

/// How the watches fare, for `/readyz` and `/healthz`.
#[derive(Default)]
pub struct WatchHealth {
    /// Per watch: when its current run of errors began and its last error.
    failing: Mutex<HashMap<&'static str, (Instant, Instant, String)>>,
}

/// A watch whose last error is older than this is taken to have recovered (a watch that works
/// emits no error; one that fails errs at least every [`BoundedBackoff`] maximum).
const RECOVERED_AFTER: Duration = Duration::from_secs(15);
/// Failing this long makes the process unhealthy (restarted by its liveness probe).
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(180);

impl WatchHealth {
    /// Records an error of the watch `kind`.
    pub fn error(&self, kind: &'static str, err: &watcher::Error) {
        let now = Instant::now();
        let mut failing = self.failing.lock().expect("watch health lock");
        let entry = failing.entry(kind).or_insert((now, now, String::new()));
        if now.duration_since(entry.1) > RECOVERED_AFTER {
            entry.0 = now;
        }
        entry.1 = now;
        entry.2 = err.to_string();
        tracing::warn!(watch = kind, error = %err, "watch failed; retrying");
    }

    /// Records that the watch `kind` delivered.
    pub fn ok(&self, kind: &'static str) {
        let mut failing = self.failing.lock().expect("watch health lock");
        if failing.remove(kind).is_some() {
            tracing::info!(watch = kind, "watch recovered");
        }
    }

    /// Why the operator is not ready: a watch failed within the last seconds.
    pub fn unready(&self) -> Option<String> {
        self.report(Instant::now(), Duration::ZERO)
    }

    /// Why the operator is not alive: a watch has been failing for minutes.
    pub fn unhealthy(&self) -> Option<String> {
        self.report(Instant::now(), UNHEALTHY_AFTER)
    }

    fn report(&self, now: Instant, at_least: Duration) -> Option<String> {
        let failing = self.failing.lock().expect("watch health lock");
        let mut bad: Vec<String> = failing
            .iter()
            .filter(|(_, (first, last, _))| {
                now.duration_since(*last) <= RECOVERED_AFTER && last.duration_since(*first) >= at_least
            })
            .map(|(kind, (first, _, err))| {
                format!("{kind} watch failing for {}s: {err}", now.duration_since(*first).as_secs())
            })
            .collect();
        bad.sort();
        (!bad.is_empty()).then(|| bad.join("; "))
    }
}

/// A watcher configuration with the operator's timeout.
pub fn config(base: watcher::Config) -> watcher::Config {
    base.timeout(WATCH_TIMEOUT_SECS)
}

/// Which caches their first list has filled, for every reconcile to wait on. kube's
/// `Store::wait_until_ready` wakes only the last of several tasks waiting at once (its value
/// sits behind a oneshot receiver, which keeps one waker): the reconciles started before the
/// caches filled slept until their start bound, 5 minutes (found by the recovery benchmark:
/// after a restart, a tenth of the servers were reconciled only then).
#[derive(Clone)]
pub struct Synced(std::sync::Arc<tokio::sync::watch::Sender<Lists>>);

/// The kinds whose caches are watched, and those of them filled.
#[derive(Default)]
pub struct Lists {
    watched: HashSet<&'static str>,
    filled: HashSet<&'static str>,
}

impl Default for Synced {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(Lists::default())))
    }
}

impl Synced {
    /// Records that a cache of `kind` is watched (it counts for [`Synced::wait`] from now on).
    pub fn watched(&self, kind: &'static str) {
        self.0.send_if_modified(|lists| lists.watched.insert(kind));
    }

    /// Records that the cache of `kind` holds its first list.
    pub fn filled(&self, kind: &'static str) {
        self.0.send_if_modified(|lists| lists.filled.insert(kind));
    }

    /// Resolves once every watched cache (and at least one) has been filled; any number of
    /// tasks may wait at once.
    pub async fn wait(&self) {
        let done = |l: &Lists| !l.watched.is_empty() && l.watched.is_subset(&l.filled);
        // The sender lives in `self`: the channel cannot close while this waits.
        let _ = self.0.subscribe().wait_for(done).await;
    }
}

/// `source` (a watcher stream) with the bounded backoff, reflected into `writer`, errors
/// recorded in `health` and dropped, the first list's end recorded in `synced`: the events, for
/// triggers.
pub fn reflect<K, S>(
    source: S,
    writer: Writer<K>,
    watches: &Watches,
    kind: &'static str,
) -> impl Stream<Item = watcher::Event<K>> + Send
where
    K: reflector::Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let synced = watches.synced.clone();
    synced.watched(kind);
    events(reflector::reflector(writer, source), watches.health.clone(), kind).inspect(move |event| {
        // After the reflector: the store holds the list when this is seen.
        if matches!(event, watcher::Event::InitDone) {
            synced.filled(kind);
        }
    })
}

/// The events of `source` (a watcher stream) with each object turned into its cached view `V`,
/// before the reflector: the cache holds only the view.
pub fn viewed<K, V, S>(source: S) -> impl Stream<Item = Result<watcher::Event<V>, watcher::Error>> + Send
where
    V: From<K>,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    source.map(|event| {
        event.map(|event| match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(o.into()),
            watcher::Event::InitApply(o) => watcher::Event::InitApply(o.into()),
            watcher::Event::Delete(o) => watcher::Event::Delete(o.into()),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
    })
}

/// Where the watches of one set of caches report: their health and their first lists.
#[derive(Clone)]
pub struct Watches {
    /// Errors, for readiness and liveness.
    pub health: std::sync::Arc<WatchHealth>,
    /// First lists done.
    pub synced: Synced,
}

/// `source` (a watcher stream) with the bounded backoff, errors recorded in `health` and
/// dropped.
pub fn events<K, S>(
    source: S,
    health: std::sync::Arc<WatchHealth>,
    kind: &'static str,
) -> impl Stream<Item = watcher::Event<K>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    source.backoff(BoundedBackoff::default()).filter_map(move |event| {
        let out = match event {
            Ok(e) => {
                health.ok(kind);
                Some(e)
            }
            Err(e) => {
                health.error(kind, &e);
                None
            }
        };
        futures::future::ready(out)
    })
}

/// What triggers a reconcile from a server itself: spec, deletion, finalizers, readability (not
/// its status, which the reconcile writes).
pub fn server_key(s: &Guarded<McpServer>) -> u64 {
    let m = s.meta();
    hash_of((m.generation, m.deletion_timestamp.is_some(), &m.finalizers, s.0.is_ok()))
}

/// What triggers a Plugin or SecurityPolicy, and the servers naming it: its spec, deletion,
/// readability (not its status, which its controller writes).
pub fn referenced_key<K: Resource + Clone>(o: &Guarded<K>) -> u64 {
    let m = o.meta();
    hash_of((m.generation, m.deletion_timestamp.is_some(), o.0.is_ok()))
}

/// Turns watch events into the objects whose `key` changed (and every deletion; and, after a
/// relist, the objects that vanished while the watch was away), each mapped by `to` to what
/// should be reconciled. Unchanged objects, including the whole relist after a reconnect, are
/// dropped: the reconciles that follow are only those with something to do.
///
/// `events` come out of the reflector that fills `store`. Per object only two hashes are kept
/// (of its namespace and name, and its `key`); what the objects that vanish in a relist trigger is
/// taken from the store when the relist begins (the reflector replaces its contents only at the
/// relist's end) and kept until it ends.
pub fn changes<K, T, S>(
    events: S,
    store: Store<K>,
    key: fn(&K) -> u64,
    to: impl Fn(&K) -> Vec<T> + Send + 'static,
) -> impl Stream<Item = T> + Send
where
    K: reflector::Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    T: Send + Clone + 'static,
    S: Stream<Item = watcher::Event<K>> + Send + 'static,
{
    let mut seen = Seen::default();
    // During a relist: what each object cached when it began triggers if it vanished.
    let mut before: HashMap<u64, Vec<T>> = HashMap::new();
    // Triggers from a relist wait for its end: the reflector fills its store only then, and a
    // reconcile started earlier would find the object missing from the store.
    let mut pending: Vec<T> = vec![];
    events.flat_map(move |event| {
        let mut out: Vec<T> = vec![];
        match &event {
            watcher::Event::Apply(o) => {
                if seen.applied(o, key(o)) {
                    out.extend(to(o));
                }
            }
            watcher::Event::InitApply(o) => {
                if seen.listed(o, key(o)) {
                    pending.extend(to(o));
                }
            }
            watcher::Event::Delete(o) => {
                seen.deleted(o);
                out.extend(to(o));
            }
            watcher::Event::Init => {
                seen.relist_started();
                pending.clear();
                // Only what triggers (most pods trigger nothing).
                before = store
                    .state()
                    .iter()
                    .map(|o| (object_id(&**o), to(o)))
                    .filter(|(_, triggers)| !triggers.is_empty())
                    .collect();
            }
            watcher::Event::InitDone => {
                out.append(&mut pending);
                for id in seen.relist_done() {
                    out.extend(before.remove(&id).into_iter().flatten());
                }
                before = HashMap::new();
            }
        }
        stream::iter(out)
    })
}

/// A hash of an object's namespace and name (what [`Seen`] keeps per object instead of the name
/// itself).
fn object_id<K: reflector::Lookup>(o: &K) -> u64 {
    hash_of((o.namespace(), o.name()))
}

/// What the trigger filters ([`changes`], [`changed_objects`]) know of a watch's objects: per
/// object the hashes of its namespace/name and of its trigger key, as of the last complete list
/// and the events since, and apart from it the relist in progress, committed only at its end (a
/// list that fails part way is started again from `Init`, and what it saw must not count as
/// seen).
#[derive(Default)]
struct Seen {
    done: HashMap<u64, u64>,
    relist: HashMap<u64, u64>,
}

impl Seen {
    /// `o` was applied with `key`: true when the key changed (or the object is new).
    fn applied<K: reflector::Lookup>(&mut self, o: &K, key: u64) -> bool {
        self.done.insert(object_id(o), key) != Some(key)
    }

    /// `o` was listed with `key` in the relist in progress: true when the key differs from what
    /// was seen before the relist.
    fn listed<K: reflector::Lookup>(&mut self, o: &K, key: u64) -> bool {
        let id = object_id(o);
        self.relist.insert(id, key);
        self.done.get(&id) != Some(&key)
    }

    /// `o` was deleted.
    fn deleted<K: reflector::Lookup>(&mut self, o: &K) {
        self.done.remove(&object_id(o));
    }

    /// A (re)list starts: whatever an earlier attempt listed is forgotten.
    fn relist_started(&mut self) {
        self.relist.clear();
    }

    /// The relist ended: what it listed is what is seen now. Returns the ids of the objects seen
    /// before that it did not list (they vanished).
    fn relist_done(&mut self) -> Vec<u64> {
        let gone = self.done.keys().filter(|id| !self.relist.contains_key(id)).copied().collect();
        self.done = std::mem::take(&mut self.relist);
        gone
    }
}

/// The objects whose `key` changed, and every deletion, from watch events; unlike [`changes`]
/// it passes on the objects themselves and nothing for those that vanish in a relist (for the
/// watched kind itself, whose vanished objects need no trigger: the controller finds them gone
/// from its store).
pub fn changed_objects<K, S>(events: S, key: fn(&K) -> u64) -> impl Stream<Item = K> + Send
where
    K: reflector::Lookup + Send + 'static,
    S: Stream<Item = watcher::Event<K>> + Send + 'static,
{
    let mut seen = Seen::default();
    // Objects from a relist are passed on at its end, once the reflector's store holds them.
    let mut pending: Vec<K> = vec![];
    events.flat_map(move |event| {
        let out: Vec<K> = match event {
            watcher::Event::Apply(o) => {
                if seen.applied(&o, key(&o)) {
                    vec![o]
                } else {
                    vec![]
                }
            }
            watcher::Event::InitApply(o) => {
                if seen.listed(&o, key(&o)) {
                    pending.push(o);
                }
                vec![]
            }
            watcher::Event::Delete(o) => {
                seen.deleted(&o);
                vec![o]
            }
            watcher::Event::Init => {
                seen.relist_started();
                pending.clear();
                vec![]
            }
            watcher::Event::InitDone => {
                seen.relist_done();
                std::mem::take(&mut pending)
            }
        };
        stream::iter(out)
    })
}

/// Runs `stream` in a task of its own and hands its items over through a channel. The watches
/// that fill the caches must make progress whatever the controller does: a controller stops
/// polling its trigger streams while all its reconciles run, and reconciles wait for the caches
/// to be filled, so a watch polled only by the controller could wait for itself (found by the
/// recovery benchmark: after a restart with hundreds of servers relisted at once, the operator
/// stopped reconciling altogether).
pub fn detach<T: Send + 'static>(stream: impl Stream<Item = T> + Send + 'static) -> impl Stream<Item = T> + Send {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(stream.map(Ok).forward(tx));
    rx
}

/// Hash of the parts of an object that matter, for [`changes`].
pub fn hash_of(parts: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// The server a child belongs to (its instance label), to reconcile when the child changes.
pub fn owning_server<K: HasChildMeta>(child: &K) -> Vec<ObjectRef<Guarded<McpServer>>> {
    let meta = child.child_meta();
    match (meta.label(LABEL_INSTANCE), &meta.namespace) {
        (Some(server), Some(ns)) => vec![ObjectRef::new(server).within(ns)],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

    fn cm(name: &str, server: &str, data: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {LABEL_INSTANCE: server}},
            "data": {"k": data}
        }))
        .unwrap()
    }

    /// The server a test child belongs to (as [`owning_server`] reads it from a cached child).
    fn owner(c: &ConfigMap) -> Vec<String> {
        c.labels().get(LABEL_INSTANCE).cloned().into_iter().collect()
    }

    #[tokio::test]
    async fn viewed_events_carry_the_cached_view_and_the_markers() {
        use super::super::cache::CachedChild;
        use kube::core::PartialObjectMeta;
        use watcher::Event::*;
        let child = |name: &str| -> PartialObjectMeta<ConfigMap> {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "ns", "labels": {LABEL_INSTANCE: "s", "other": "x"}}
            }))
            .unwrap()
        };
        let events: Vec<Result<watcher::Event<PartialObjectMeta<ConfigMap>>, watcher::Error>> =
            vec![Ok(Init), Ok(InitApply(child("a"))), Ok(InitDone), Ok(Apply(child("b"))), Ok(Delete(child("a")))];
        let got: Vec<_> = viewed::<_, CachedChild<ConfigMap>, _>(stream::iter(events)).collect().await;
        let described: Vec<String> = got
            .into_iter()
            .map(|e| match e.unwrap() {
                Init => "init".to_string(),
                InitDone => "done".to_string(),
                InitApply(c) => format!("list {}:{}", c.metadata.name, owning_server(&c)[0].name),
                Apply(c) => format!("apply {}:{}", c.metadata.name, owning_server(&c)[0].name),
                Delete(c) => format!("delete {}:{}", c.metadata.name, owning_server(&c)[0].name),
            })
            .collect();
        assert_eq!(described, ["init", "list a:s", "done", "apply b:s", "delete a:s"]);
    }

    fn key(c: &ConfigMap) -> u64 {
        hash_of(c.data.as_ref().map(|d| d["k"].clone()))
    }

    /// The triggers of `events` that went through a reflector, as in the operator.
    async fn run(events: Vec<watcher::Event<ConfigMap>>) -> Vec<String> {
        let (store, writer) = reflector::store::<ConfigMap>();
        let reflected = reflector::reflector(writer, stream::iter(events.into_iter().map(Ok)))
            .filter_map(|e: Result<_, watcher::Error>| futures::future::ready(e.ok()));
        changes(reflected, store, key, |c: &ConfigMap| owner(c)).collect().await
    }

    #[tokio::test]
    async fn only_changes_deletions_and_vanished_objects_trigger() {
        use watcher::Event::*;
        let got = run(vec![
            Init,
            InitApply(cm("a", "s1", "1")),
            InitApply(cm("b", "s2", "1")),
            InitDone,
            // A status-only update (same key) and a change.
            Apply(cm("a", "s1", "1")),
            Apply(cm("b", "s2", "2")),
            // Reconnect: the relist repeats a unchanged, and b is gone.
            Init,
            InitApply(cm("a", "s1", "1")),
            InitDone,
            Apply(cm("c", "s3", "1")),
            Delete(cm("c", "s3", "1")),
        ])
        .await;
        // The relist's triggers come at its end (InitDone), when the store holds the objects.
        assert_eq!(got, vec!["s1", "s2", "s2", "s2", "s3", "s3"]);
    }

    #[tokio::test]
    async fn a_relist_triggers_what_changed_or_vanished_and_every_later_change_again() {
        use watcher::Event::*;
        let got = run(vec![
            Init,
            InitApply(cm("a", "s1", "1")),
            InitApply(cm("b", "s2", "1")),
            InitApply(cm("c", "s3", "1")),
            InitDone,
            // Away: a changed, b vanished, c unchanged, d new.
            Init,
            InitApply(cm("a", "s1", "2")),
            InitApply(cm("c", "s3", "1")),
            InitApply(cm("d", "s4", "1")),
            InitDone,
            // b comes back (a new object), and a vanishes in a second relist.
            Apply(cm("b", "s2", "1")),
            Init,
            InitApply(cm("b", "s2", "1")),
            InitApply(cm("c", "s3", "1")),
            InitApply(cm("d", "s4", "1")),
            InitDone,
        ])
        .await;
        let first = ["s1", "s2", "s3"];
        let mut second = got[3..6].to_vec();
        second.sort();
        assert_eq!(got[..3], first);
        assert_eq!(second, ["s1", "s2", "s4"], "changed, vanished, new");
        assert_eq!(got[6..], ["s2", "s1"], "b again, then a vanished");
    }

    /// kube's watcher starts a list that failed part way again from `Init`: what the failed
    /// attempt saw never reached the store, and must still trigger when the retry sees it.
    #[tokio::test]
    async fn a_list_started_again_triggers_what_the_failed_attempt_saw() {
        use watcher::Event::*;
        let first = vec![Init, InitApply(cm("a", "s1", "1")), InitDone];
        let mut events = first.clone();
        events.extend([Init, InitApply(cm("a", "s1", "2")), Init, InitApply(cm("a", "s1", "2")), InitDone]);
        assert_eq!(run(events.clone()).await, ["s1", "s1"]);
        let objects: Vec<String> = changed_objects(stream::iter(events), key)
            .map(|c| format!("{}={}", c.name_any(), c.data.unwrap()["k"]))
            .collect()
            .await;
        assert_eq!(objects, ["a=1", "a=2"]);
    }

    #[tokio::test]
    async fn changed_objects_pass_only_changes_and_deletions() {
        use watcher::Event::*;
        let got: Vec<String> = changed_objects(
            stream::iter(vec![
                Init,
                InitApply(cm("a", "s1", "1")),
                InitDone,
                Apply(cm("a", "s1", "1")),
                Apply(cm("a", "s1", "2")),
                Init,
                InitApply(cm("a", "s1", "2")),
                InitDone,
                Delete(cm("a", "s1", "2")),
            ]),
            key,
        )
        .map(|c| format!("{}={}", c.name_any(), c.data.unwrap()["k"]))
        .collect()
        .await;
        assert_eq!(got, vec!["a=1", "a=2", "a=2"]);
    }

    /// A reconcile triggered by a relist before its end would find its object missing from the
    /// reflector's store (filled at InitDone) and be dropped: found by the recovery benchmark
    /// (servers being created when the operator was killed were never reconciled after it).
    #[tokio::test]
    async fn relisted_objects_are_passed_on_only_when_the_relist_ends() {
        use watcher::Event::*;
        let unfinished: Vec<ConfigMap> =
            changed_objects(stream::iter(vec![Init, InitApply(cm("a", "s1", "1"))]), key).collect().await;
        assert!(unfinished.is_empty());
        assert!(run(vec![Init, InitApply(cm("a", "s1", "1"))]).await.is_empty());
        let done: Vec<ConfigMap> =
            changed_objects(stream::iter(vec![Init, InitApply(cm("a", "s1", "1")), InitDone]), key).collect().await;
        assert_eq!(done.len(), 1);
    }

    #[tokio::test]
    async fn a_detached_stream_runs_without_being_polled() {
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let stream = detach(stream::iter(vec![1, 2, 3]).inspect(move |i| {
            if *i == 3 {
                let _ = tx.take().map(|t| t.send(()));
            }
        }));
        // Nobody polls `stream`, and the source still runs to its end.
        tokio::time::timeout(std::time::Duration::from_secs(5), rx).await.expect("ran").expect("sent");
        assert_eq!(stream.collect::<Vec<_>>().await, vec![1, 2, 3]);
    }

    /// Every one of many reconciles waiting at once starts once the caches are filled (kube's
    /// `Store::wait_until_ready` woke only the last waiter; the others slept for minutes).
    #[tokio::test(start_paused = true)]
    async fn every_waiter_wakes_once_every_watched_cache_is_filled() {
        use watcher::Event::*;
        let (_store, writer) = kube::runtime::reflector::store::<ConfigMap>();
        let watches = Watches { health: Default::default(), synced: Synced::default() };
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<watcher::Event<ConfigMap>, watcher::Error>>();
        let reflected = detach(reflect(rx, writer, &watches, "ConfigMap"));
        watches.synced.watched("Secret");
        let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiters: Vec<_> = (0..40)
            .map(|_| {
                let (synced, started) = (watches.synced.clone(), started.clone());
                tokio::spawn(async move {
                    synced.wait().await;
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        for e in [Init, InitApply(cm("a", "s1", "1")), InitDone] {
            tx.unbounded_send(Ok(e)).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 0, "one watched cache is still empty");
        watches.synced.filled("Secret");
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(60), w).await.expect("every waiter wakes").unwrap();
        }
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 40);
        drop((tx, reflected));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_ready_before_a_cache_is_watched() {
        let synced = Synced::default();
        assert!(tokio::time::timeout(Duration::from_secs(60), synced.wait()).await.is_err());
        synced.watched("Pod");
        synced.filled("Pod");
        tokio::time::timeout(Duration::from_secs(60), synced.wait()).await.expect("filled");
    }

    #[test]
    fn backoff_is_bounded_jittered_and_resets() {
        let mut b = BoundedBackoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] <= Duration::from_millis(250) && delays[0] >= Duration::from_millis(187));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(delays[7] >= Duration::from_millis(3750), "reaches the maximum: {delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(250));
    }

    #[test]
    fn health_reports_recent_failures_and_long_ones() {
        let h = WatchHealth::default();
        assert_eq!(h.unready(), None);
        let now = Instant::now();
        h.failing.lock().unwrap().insert("Deployment", (now - Duration::from_secs(200), now, "connect".into()));
        assert!(h.unready().unwrap().contains("Deployment watch failing"));
        assert!(h.unhealthy().is_some(), "failing for 200s");
        h.failing.lock().unwrap().insert("Deployment", (now - Duration::from_secs(20), now, "connect".into()));
        assert!(h.unhealthy().is_none(), "failing for 20s only");
        h.failing
            .lock()
            .unwrap()
            .insert("Deployment", (now - Duration::from_secs(300), now - Duration::from_secs(30), "x".into()));
        assert_eq!(h.unready(), None, "no error for 30s: the watch is back");
        h.ok("Deployment");
        assert!(h.failing.lock().unwrap().is_empty());
    }
}
