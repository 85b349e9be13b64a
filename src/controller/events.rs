//! Events (`events.k8s.io/v1`), published as kube's `Recorder` publishes them — a repeat of an
//! event (same type, action, reason, object) within 6 minutes is counted in the first one's
//! series instead of making another Event, also while the first one's create or a series update
//! is still in flight (counted, then published as one series update once that lands: one Event's
//! requests never race) — but remembering per event only its
//! name, count and time. The Recorder keeps every whole Event for those 6 minutes (12 MB right
//! after 5,000 servers were created, in a heap profile) and scans all of them on every publish.
//!
//! Reconciles hand their Events to a [`Queue`], dispatched in order by one task, as client-go's
//! broadcaster does: a reconcile never waits for an Event, and at most [`IN_FLIGHT`] requests at
//! the [`Pace`] reach the API server however many Events a burst or a storm makes.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a published event is remembered to count its repeats (kube's Recorder: 6 minutes).
pub const REPEAT_WINDOW: Duration = Duration::from_secs(360);

/// How many Events may wait for the writer; more are dropped and counted (client-go's
/// broadcaster holds 1,000). A burst of 5,000 new servers queues 5,000 `Created` Events.
pub const QUEUE_CAPACITY: usize = 10_000;

/// How fast the writer publishes: `burst` Events at once, then `qps` a second (kubelet's
/// `--event-qps`/`--event-burst`, 50/100 per node). Events are the least urgent writes: in a burst
/// of new servers they trail the children, and a storm of them cannot flood the API server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    /// Events a second once the burst is spent (0: no limit).
    pub qps: f64,
    /// Events published at once after a quiet time.
    pub burst: f64,
}

impl Default for Pace {
    fn default() -> Self {
        Self { qps: 50.0, burst: 100.0 }
    }
}

/// The writer's token bucket.
struct Bucket {
    pace: Pace,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(pace: Pace, now: Instant) -> Self {
        Self { pace, tokens: pace.burst, at: now }
    }

    /// Takes the token of one Event at `now`: how long to wait before publishing it.
    fn take(&mut self, now: Instant) -> Duration {
        if self.pace.qps <= 0.0 {
            return Duration::ZERO;
        }
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.pace.qps;
        self.tokens = (self.tokens + refill).min(self.pace.burst.max(1.0)) - 1.0;
        self.at = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.pace.qps)
        }
    }
}

/// Events being published at once: one at a time cannot keep the pace while a loaded API server
/// takes ~60 ms per create (a burst of 5,000 left its Events minutes behind).
pub const IN_FLIGHT: usize = 4;

/// Events waiting to be published, and the task that publishes them in order, at [`Pace`], at
/// most [`IN_FLIGHT`] at once.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
    dropped: Counter,
    queued: Gauge,
}

impl Queue {
    /// Starts the task that publishes through `publisher` what is sent here at `pace` (at most
    /// `capacity` waiting; each Event dropped beyond that counts in `dropped`; `queued` counts
    /// those waiting or being published).
    pub fn start(publisher: Publisher, pace: Pace, capacity: usize, dropped: Counter, queued: Gauge) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(capacity);
        let (publisher, pending) = (std::sync::Arc::new(publisher), queued.clone());
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        tokio::spawn(async move {
            let mut bucket = Bucket::new(pace, Instant::now());
            while let Some((ev, regarding)) = rx.recv().await {
                let wait = bucket.take(Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let (publisher, pending) = (publisher.clone(), pending.clone());
                tokio::spawn(async move {
                    if let Err(e) = publisher.publish(&ev, &regarding).await {
                        tracing::warn!(error = %e, reason = ev.reason, "could not publish Event");
                    }
                    pending.dec();
                    drop(permit);
                });
            }
        });
        Self { tx, dropped, queued }
    }

    /// Waits until every Event handed over so far is published, at most `limit`: what a shutdown
    /// owes the last reconciles' Events. Returns how many were still waiting or in flight.
    pub async fn flush(&self, limit: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = self.queued.get().max(0);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues `ev` about `regarding` without waiting; drops it (counted, logged) when the queue
    /// is full.
    pub fn send(&self, ev: Event, regarding: ObjectReference) {
        // Counted first: the writer may take it (and count it done) before try_send returns.
        self.queued.inc();
        match self.tx.try_send((ev, regarding)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((ev, regarding))) => {
                self.queued.dec();
                self.dropped.inc();
                tracing::warn!(reason = ev.reason, object = ?regarding.name, "Event queue full: Event dropped");
            }
            // The writer is gone (the runtime is shutting down).
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.dec();
            }
        }
    }
}

/// Publishes Events for one reporter.
pub struct Publisher {
    client: Client,
    reporter: Reporter,
    recent: Mutex<Recent>,
}

/// The events published within the repeat window, by key.
#[derive(Default)]
struct Recent {
    sent: HashMap<u64, Sent>,
    pruned: Option<Instant>,
}

/// What a repeat needs of a published event.
struct Sent {
    name: String,
    count: i32,
    last: Instant,
    /// Whether a request of this Event (its create or a series update) is in flight: repeats
    /// meanwhile are only counted, and their count goes out in one series update once it lands,
    /// so that one Event's requests never race each other (a later count overtaken by an
    /// earlier one would leave the series one short).
    busy: bool,
    /// The count of the request in flight or last made.
    published: i32,
}

/// What publishing an event takes.
#[derive(Debug, PartialEq)]
enum Publish {
    /// A new Event of this name.
    Create(String),
    /// The count of the Event of this name's series.
    Count(String, i32),
    /// Nothing now: counted for the request of this Event still in flight.
    Nothing,
}

impl Recent {
    /// Forgets events older than the window (a scan at most once a minute).
    fn prune(&mut self, now: Instant) {
        if self.pruned.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
            return;
        }
        self.pruned = Some(now);
        self.sent.retain(|_, s| now.duration_since(s.last) < REPEAT_WINDOW);
    }

    /// What publishing `key` at `now` takes: a repeat within the window counts in the first
    /// Event's series (sent now unless a request of that Event is in flight), anything else is a
    /// new Event, named by `name`.
    fn claim(&mut self, key: u64, now: Instant, name: impl FnOnce() -> String) -> Publish {
        self.prune(now);
        match self.sent.get_mut(&key).filter(|s| now.duration_since(s.last) < REPEAT_WINDOW) {
            Some(sent) => {
                sent.count += 1;
                sent.last = now;
                if sent.busy {
                    return Publish::Nothing;
                }
                sent.busy = true;
                sent.published = sent.count;
                Publish::Count(sent.name.clone(), sent.count)
            }
            None => {
                let name = name();
                self.sent.insert(key, Sent { name: name.clone(), count: 1, last: now, busy: true, published: 1 });
                Publish::Create(name)
            }
        }
    }

    /// Marks the request of `key`'s Event in flight done: the repeats counted meanwhile, if any,
    /// as the series count to publish next.
    fn landed(&mut self, key: u64) -> Option<(String, i32)> {
        let sent = self.sent.get_mut(&key)?;
        if sent.count > sent.published {
            sent.published = sent.count;
            return Some((sent.name.clone(), sent.count));
        }
        sent.busy = false;
        None
    }
}

/// The longest note an Event may have (`events.k8s.io/v1` refuses a longer one, and with it the
/// Event).
pub const MAX_NOTE: usize = 1024;

/// `note` cut to [`MAX_NOTE`] bytes at a character boundary, marked as cut (the condition keeps the
/// whole message).
fn fit_note(note: &str) -> String {
    cut(note, MAX_NOTE)
}

/// `text` cut to at most `max` bytes at a character boundary, marked as cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const MORE: &str = " …";
    let mut end = max.saturating_sub(MORE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &text[..end])
}

fn key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let related = ev.secondary.as_ref().map(|r| (&r.kind, &r.namespace, &r.name, &r.uid));
    super::watch::hash_of((
        matches!(ev.type_, EventType::Warning),
        &ev.action,
        &ev.reason,
        (&regarding.kind, &regarding.namespace, &regarding.name, &regarding.uid),
        related,
    ))
}

impl Publisher {
    /// A publisher whose Events say they come from `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, recent: Default::default() }
    }

    /// Publishes `ev` about `regarding`: a new Event, or the series count of the same event
    /// published within the window.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let ns = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        let key = key(ev, regarding);
        let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let name = || {
            format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.reporter.controller), stamp.0.as_nanosecond())
        };
        // (The guard ends with this statement: the lock is never held across a request.)
        let claimed = self.recent().claim(key, Instant::now(), name);
        let name = match claimed {
            Publish::Create(name) => name,
            Publish::Count(name, count) => return self.count(&events, key, name, count).await,
            Publish::Nothing => return Ok(()),
        };
        let event = K8sEvent {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.to_string()), ..Default::default() },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.as_deref().map(fit_note),
            type_: Some(if matches!(ev.type_, EventType::Warning) { "Warning" } else { "Normal" }.into()),
            event_time: Some(stamp),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            // Not created: the next one starts a new Event (the repeats meanwhile are lost with it).
            self.recent().sent.remove(&key);
            return Err(e);
        }
        let repeated = self.recent().landed(key);
        match repeated {
            Some((name, count)) => self.count(&events, key, name, count).await,
            None => Ok(()),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("events lock")
    }

    /// Sets the series count of `key`'s Event `name`, last observed now, and then the count of
    /// the repeats made meanwhile, until none was.
    async fn count(&self, events: &Api<K8sEvent>, key: u64, name: String, count: i32) -> kube::Result<()> {
        let mut next = Some((name, count));
        while let Some((name, count)) = next {
            let series = EventSeries { count, last_observed_time: MicroTime(k8s_openapi::jiff::Timestamp::now()) };
            let patch = Patch::Merge(serde_json::json!({ "series": series }));
            if let Err(e) = events.patch(&name, &PatchParams::default(), &patch).await {
                // Gone (expired or deleted): the next one starts a new Event.
                self.recent().sent.remove(&key);
                return Err(e);
            }
            next = self.recent().landed(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    fn regarding(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("MCPServer".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(reason: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some("n".into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    /// Answers the next request with 201 and its body; returns (method, path, body).
    async fn answer(handle: &mut Handle) -> (String, String, serde_json::Value) {
        let (req, respond) = handle.next_request().await.expect("a request");
        let (parts, body) = req.into_parts();
        let body: serde_json::Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
        let mut out = body.clone();
        if out.get("metadata").is_none() {
            out = serde_json::json!({"metadata": {"name": "x", "namespace": "ns"}, "eventTime": null});
        }
        respond.send_response(
            Response::builder().status(201).body(Body::from(serde_json::to_vec(&out).unwrap())).unwrap(),
        );
        (parts.method.to_string(), parts.uri.path().to_string(), body)
    }

    #[tokio::test]
    async fn a_repeat_counts_in_the_first_events_series_and_another_reason_or_object_is_new() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let publisher = std::sync::Arc::new(Publisher::new(
            Client::new(service, "default"),
            Reporter { controller: "mcp-operator".into(), instance: Some("pod-1".into()) },
        ));
        let p = publisher.clone();
        let client = tokio::spawn(async move {
            p.publish(&event("ApplyFailed"), &regarding("a")).await.unwrap();
            p.publish(&event("ApplyFailed"), &regarding("a")).await.unwrap();
            p.publish(&event("ApplyFailed"), &regarding("a")).await.unwrap();
            p.publish(&event("Refused"), &regarding("a")).await.unwrap();
            p.publish(&event("ApplyFailed"), &regarding("b")).await.unwrap();
        });
        let path = "/apis/events.k8s.io/v1/namespaces/ns/events";
        let (method, at, first) = answer(&mut handle).await;
        assert_eq!((method.as_str(), at.as_str()), ("POST", path));
        assert_eq!(first["reason"], "ApplyFailed");
        assert_eq!(first["type"], "Warning");
        assert_eq!(first["regarding"]["name"], "a");
        assert_eq!(first["reportingController"], "mcp-operator");
        assert_eq!(first["reportingInstance"], "pod-1");
        let name = first["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("a."), "{name}");
        for count in [2, 3] {
            let (method, at, patch) = answer(&mut handle).await;
            assert_eq!((method.as_str(), at), ("PATCH", format!("{path}/{name}")));
            assert_eq!(patch["series"]["count"], count, "{patch}");
            assert!(patch["series"]["lastObservedTime"].is_string(), "{patch}");
        }
        for (reason, object) in [("Refused", "a"), ("ApplyFailed", "b")] {
            let (method, _, body) = answer(&mut handle).await;
            assert_eq!(
                (method.as_str(), body["reason"].as_str(), body["regarding"]["name"].as_str()),
                ("POST", Some(reason), Some(object))
            );
        }
        client.await.unwrap();
    }

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// A publisher whose API server is the returned handle.
    fn mock_publisher() -> (std::sync::Arc<Publisher>, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let reporter = Reporter { controller: "mcp-operator".into(), instance: None };
        (std::sync::Arc::new(Publisher::new(Client::new(service, "default"), reporter)), handle)
    }

    /// Publishes an `ApplyFailed` Event about server `a` in a task of its own.
    fn publish_apply_failed(publisher: &std::sync::Arc<Publisher>) -> tokio::task::JoinHandle<kube::Result<()>> {
        let p = publisher.clone();
        tokio::spawn(async move { p.publish(&event("ApplyFailed"), &regarding("a")).await })
    }

    #[tokio::test]
    async fn a_repeat_while_the_first_is_being_created_counts_in_its_series_once_it_exists() {
        let (publisher, mut handle) = mock_publisher();
        let first = publish_apply_failed(&publisher);
        // The create is in flight (not answered yet) when the same event repeats twice.
        let (req, respond) = handle.next_request().await.expect("the create");
        assert_eq!(req.method().as_str(), "POST");
        let body: serde_json::Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        for _ in 0..2 {
            let (ev, about) = (event("ApplyFailed"), regarding("a"));
            let repeat = publisher.publish(&ev, &about);
            tokio::time::timeout(Duration::from_secs(5), repeat).await.expect("a repeat sends nothing").unwrap();
        }
        assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none(), "no second Event meanwhile");
        respond.send_response(
            Response::builder().status(201).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap(),
        );
        // Once created, the repeats are its series.
        let (method, at, patch) = answer(&mut handle).await;
        let name = body["metadata"]["name"].as_str().unwrap();
        assert_eq!((method.as_str(), at), ("PATCH", format!("/apis/events.k8s.io/v1/namespaces/ns/events/{name}")));
        assert_eq!(patch["series"]["count"], 3, "{patch}");
        first.await.unwrap().unwrap();
        // A later repeat goes on counting in it.
        let later = publish_apply_failed(&publisher);
        let (method, _, patch) = answer(&mut handle).await;
        assert_eq!((method.as_str(), &patch["series"]["count"]), ("PATCH", &serde_json::json!(4)));
        later.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn repeats_while_a_series_update_is_in_flight_go_out_after_it_in_one_update() {
        let (publisher, mut handle) = mock_publisher();
        let first = publish_apply_failed(&publisher);
        let (_, _, created) = answer(&mut handle).await;
        first.await.unwrap().unwrap();
        let second = publish_apply_failed(&publisher);
        let (req, respond) = handle.next_request().await.expect("the series update");
        let body: serde_json::Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
        assert_eq!(body["series"]["count"], 2, "{body}");
        // Two repeats while count 2 is in flight: no second update races it.
        for _ in 0..2 {
            let (ev, about) = (event("ApplyFailed"), regarding("a"));
            let repeat = publisher.publish(&ev, &about);
            tokio::time::timeout(Duration::from_secs(5), repeat).await.expect("a repeat sends nothing").unwrap();
        }
        assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none(), "one update at a time");
        respond
            .send_response(Response::builder().status(200).body(Body::from(created.to_string().into_bytes())).unwrap());
        let (method, _, patch) = answer(&mut handle).await;
        assert_eq!((method.as_str(), &patch["series"]["count"]), ("PATCH", &serde_json::json!(4)), "both, after it");
        second.await.unwrap().unwrap();
        assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none(), "and nothing more");
    }

    #[tokio::test]
    async fn an_event_whose_create_failed_is_created_again_by_its_next_repeat() {
        let (publisher, mut handle) = mock_publisher();
        let first = publish_apply_failed(&publisher);
        let (_, respond) = handle.next_request().await.expect("the create");
        let refused = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
            "reason": "InternalError", "message": "etcd timeout"});
        respond
            .send_response(Response::builder().status(500).body(Body::from(refused.to_string().into_bytes())).unwrap());
        assert!(first.await.unwrap().is_err());
        let again = publish_apply_failed(&publisher);
        let (method, _, body) = answer(&mut handle).await;
        assert_eq!((method.as_str(), body["reason"].as_str()), ("POST", Some("ApplyFailed")), "a new Event");
        again.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn queued_events_are_published_in_order_a_few_at_once_and_a_full_queue_drops_and_counts() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let publisher = Publisher::new(
            Client::new(service, "default"),
            Reporter { controller: "mcp-operator".into(), instance: None },
        );
        let (dropped, queued) = (Counter::default(), Gauge::default());
        let queue = Queue::start(publisher, Pace::default(), 2, dropped.clone(), queued.clone());
        let reason = |req: Request<Body>| async move {
            let body: serde_json::Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            body["reason"].as_str().unwrap().to_string()
        };
        // Nothing answered: sending never waits, and IN_FLIGHT requests go out in order.
        let mut flying = vec![];
        for r in ["A", "B", "C", "D"] {
            queue.send(event(r), regarding("a"));
            let (req, respond) = handle.next_request().await.expect("in flight");
            assert_eq!(reason(req).await, r);
            flying.push(respond);
        }
        // The writer holds E until a request ends; F and G fill the queue; H is dropped.
        queue.send(event("E"), regarding("a"));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for r in ["F", "G", "H"] {
            queue.send(event(r), regarding("a"));
        }
        assert_eq!((dropped.get(), queued.get()), (1, 7), "one Event beyond the queue's capacity");
        assert!(futures::FutureExt::now_or_never(handle.next_request()).is_none(), "at most IN_FLIGHT at once");
        let created = || Response::builder().status(201).body(Body::from(b"{}".to_vec())).unwrap();
        let mut next = vec![];
        for (i, respond) in flying.into_iter().enumerate() {
            respond.send_response(created());
            if i < 3 {
                let (req, respond) = handle.next_request().await.expect("the next one");
                next.push(reason(req).await);
                respond.send_response(created());
            }
        }
        assert_eq!(next, ["E", "F", "G"], "the rest in order");
        for _ in 0..100 {
            if queued.get() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(queued.get(), 0, "all published");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_waits_for_the_queued_events_but_not_beyond_its_limit() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let publisher = Publisher::new(
            Client::new(service, "default"),
            Reporter { controller: "mcp-operator".into(), instance: None },
        );
        let queued = Gauge::default();
        let queue = Queue::start(publisher, Pace::default(), 10, Counter::default(), queued.clone());
        assert_eq!(queue.flush(Duration::from_secs(5)).await, 0, "nothing queued: at once");
        for r in ["A", "B"] {
            queue.send(event(r), regarding("a"));
        }
        let created = || Response::builder().status(201).body(Body::from(b"{}".to_vec())).unwrap();
        let api = tokio::spawn(async move {
            // The first is answered after 1 s, the second never.
            let (_, first) = handle.next_request().await.expect("A");
            let (_, _second) = handle.next_request().await.expect("B");
            tokio::time::sleep(Duration::from_secs(1)).await;
            first.send_response(created());
            std::future::pending::<()>().await;
        });
        let t0 = tokio::time::Instant::now();
        assert_eq!(queue.flush(Duration::from_secs(5)).await, 1, "B is still in flight after the limit");
        assert_eq!(t0.elapsed().as_secs(), 5, "waited the whole limit, no longer");
        api.abort();
    }

    #[test]
    fn the_writer_publishes_a_burst_at_once_then_paces_and_refills_while_quiet() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Pace { qps: 2.0, burst: 3.0 }, t0);
        let waits: Vec<Duration> = (0..5).map(|_| bucket.take(t0)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(500), ms(1000)], "3 at once, then 2 a second");
        // Published at t0 + 1 s (the last wait): quiet for a minute refills the burst, no more.
        let later = t0 + Duration::from_secs(61);
        let waits: Vec<Duration> = (0..4).map(|_| bucket.take(later)).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(500)]);
        let mut unpaced = Bucket::new(Pace { qps: 0.0, burst: 0.0 }, t0);
        assert!((0..1000).all(|_| unpaced.take(t0).is_zero()), "qps 0: no limit");
    }

    #[test]
    fn a_note_over_the_limit_is_cut_at_a_character_boundary() {
        assert_eq!(fit_note("short"), "short");
        let exact = "x".repeat(MAX_NOTE);
        assert_eq!(fit_note(&exact), exact);
        for long in ["x".repeat(3000), "é".repeat(1500), format!("{}日本語", "y".repeat(1019))] {
            let cut = fit_note(&long);
            assert!(cut.len() <= MAX_NOTE && cut.ends_with(" …"), "{} bytes", cut.len());
            assert!(long.starts_with(cut.trim_end_matches(" …")), "a prefix of the note");
        }
    }

    #[test]
    fn repeats_are_counted_within_the_window_only_and_old_events_are_forgotten() {
        let mut recent = Recent::default();
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let named = |n: &'static str| move || n.to_string();
        assert_eq!(recent.claim(1, t0, named("a.1")), Publish::Create("a.1".into()));
        assert_eq!(recent.landed(1), None, "no repeat while it was created");
        assert_eq!(recent.claim(1, at(10), named("a.2")), Publish::Count("a.1".into(), 2));
        assert_eq!(recent.claim(1, at(10), named("a.3")), Publish::Nothing, "count 2 is in flight");
        assert_eq!(recent.landed(1), Some(("a.1".into(), 3)), "the repeat, once count 2 landed");
        assert_eq!(recent.landed(1), None, "nothing more");
        assert_eq!(recent.claim(1, at(10), named("a.4")), Publish::Count("a.1".into(), 4), "none in flight");
        assert_eq!(recent.landed(1), None);
        assert_eq!(recent.claim(2, at(10), named("b.1")), Publish::Create("b.1".into()), "never published");
        assert_eq!(recent.claim(2, at(11), named("b.2")), Publish::Nothing, "b.1 is being created");
        assert_eq!(recent.landed(2), Some(("b.1".into(), 2)), "the repeat, once b.1 exists");
        let late = at(11) + REPEAT_WINDOW;
        assert_eq!(recent.claim(1, late, named("a.3")), Publish::Create("a.3".into()), "the window passed");
        assert_eq!(recent.sent.len(), 1, "the old ones pruned");
    }
}
