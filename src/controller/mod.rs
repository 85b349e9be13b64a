//! The three controllers and what they share: context, errors, server-side apply, events.

pub mod cache;
mod context;
mod error;
mod events;
pub mod gateway_status;
mod guard;
pub mod mcpserver;
pub mod plugin;
pub mod securitypolicy;
mod ssa;
pub mod status;
pub mod usage;
pub mod watch;

pub use context::{Context, Scope};
pub use error::{Error, Result};
pub use events::{Pace as EventPace, Queue as EventQueue};
pub use guard::Guarded;
pub use ssa::{apply, write_status};

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::Controller;
use kube::{Api, Resource, ResourceExt};
use std::sync::Arc;

/// Reconcile a guarded object: a readable one with `reconcile`; an unreadable one gets a Warning
/// Event naming the problem (`InvalidObject`), and waits for a change.
pub async fn reconcile_guarded<K, Fut>(
    obj: Arc<Guarded<K>>,
    ctx: Arc<Context>,
    controller: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
) -> Result<kube::runtime::controller::Action>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    Fut: std::future::Future<Output = Result<Action>>,
{
    // The object is named by kube's "reconciling object" span around this.
    let started = std::time::Instant::now();
    tracing::debug!(controller, "reconcile started");
    match &obj.0 {
        Ok(valid) => {
            let res = reconcile(Arc::new(valid.clone()), ctx).await;
            tracing::debug!(controller, ok = res.is_ok(), ms = started.elapsed().as_millis() as u64, "reconcile ended");
            res
        }
        Err(invalid) => {
            let kind = K::kind(&());
            tracing::warn!(
                controller,
                object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
                error = %invalid.error,
                "{kind} cannot be read by this operator version; it is left alone until it changes"
            );
            let note = format!(
                "this {kind} cannot be read by the operator ({}); fix it or upgrade the operator",
                invalid.error
            );
            ctx.event(&*obj, EventType::Warning, "InvalidObject", "Read", note);
            release_unreadable(&obj, &ctx).await?;
            Ok(Action::await_change())
        }
    }
}

/// Deleting an object this operator cannot read is not held up by its finalizers: they are
/// dropped (its children go with it through their owner references).
async fn release_unreadable<K>(obj: &Guarded<K>, ctx: &Context) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let ours = [crate::consts::FINALIZER, crate::consts::IN_USE_FINALIZER];
    if obj.meta().deletion_timestamp.is_none() || !obj.finalizers().iter().any(|f| ours.contains(&f.as_str())) {
        return Ok(());
    }
    let keep: Vec<&String> = obj.finalizers().iter().filter(|f| !ours.contains(&f.as_str())).collect();
    let patch = serde_json::json!({"metadata": {"resourceVersion": obj.resource_version(), "finalizers": keep}});
    let api = Api::<Guarded<K>>::namespaced(ctx.client.clone(), &obj.namespace().ok_or(Error::MissingNamespace)?);
    api.patch(&obj.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    let note = format!("deleting an unreadable {}: the operator's finalizer is released", K::kind(&()));
    ctx.event(obj, EventType::Warning, "Deleted", "Delete", note);
    Ok(())
}

/// How long a reconcile may run once it started (its API calls included): a reconcile takes
/// milliseconds; one that hangs is dropped and retried instead of holding a worker for good.
pub const RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a reconcile waits for the leader fence and the caches before it is retried.
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `work` once this replica may reconcile (see [`Context::may_reconcile`]), each step within
/// its bound ([`START_TIMEOUT`], [`RECONCILE_TIMEOUT`]).
pub async fn bounded<F>(ctx: &Context, work: F) -> Result<Action>
where
    F: std::future::Future<Output = Result<Action>>,
{
    bounded_by(ctx, work, START_TIMEOUT, RECONCILE_TIMEOUT).await
}

async fn bounded_by<F>(ctx: &Context, work: F, start: std::time::Duration, run: std::time::Duration) -> Result<Action>
where
    F: std::future::Future<Output = Result<Action>>,
{
    tokio::time::timeout(start, ctx.may_reconcile())
        .await
        .map_err(|_| Error::TimedOut("waiting for the leader fence and the caches", start))?;
    tokio::select! {
        done = tokio::time::timeout(run, work) => done.map_err(|_| Error::TimedOut("the reconcile", run))?,
        () = ctx.fence.closed() => Err(Error::Fenced),
    }
}

/// Forgets an object's failure count once it reconciles (the end of every controller's stream).
fn forget_failures<K, E>(
    ctx: Arc<Context>,
    controller: &'static str,
) -> impl FnMut(std::result::Result<(ObjectRef<K>, Action), E>) -> futures::future::Ready<()>
where
    K: Resource<DynamicType = ()>,
    E: std::fmt::Display,
{
    move |res| {
        match &res {
            Ok((obj, _)) => ctx.succeeded(controller, obj),
            // Failed reconciles are logged by the error policy; this is the controller's own
            // (an object gone from the cache when its turn came, a trigger stream's error).
            Err(e) => tracing::debug!(controller, error = %e, "controller"),
        }
        futures::future::ready(())
    }
}

/// What a controller of a kind that MCPServers name (Plugin, SecurityPolicy) is fed by the
/// MCPServer controller's watches, which fill the caches: one watch per kind serves all three
/// controllers.
pub struct Feed<K> {
    /// Watch events of the kind, passed on once the cache holds them.
    pub objects: futures::channel::mpsc::UnboundedReceiver<kube::runtime::watcher::Event<Guarded<K>>>,
    /// The servers whose spec, deletion or readability changed.
    pub servers: futures::channel::mpsc::UnboundedReceiver<Guarded<crate::api::McpServer>>,
}

/// The controller of a kind that MCPServers name (Plugin, SecurityPolicy): an object is
/// reconciled when its spec, deletion or readability changes, and when the spec of a server that
/// `uses` it (or used it, by its status) changes. Objects and servers come from `feed`; reads
/// from the caches the MCPServer controller fills (`objects` is the kind's cache).
fn referenced_kind_controller<K, Fut>(
    ctx: Arc<Context>,
    objects: Store<Guarded<K>>,
    feed: Feed<K>,
    controller: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<Guarded<K>>, &Error, Arc<Context>) -> Action,
    uses: fn(&crate::api::McpServer, &K) -> bool,
) -> futures::future::BoxFuture<'static, ()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    let lookup = objects.clone();
    let changed = watch::changed_objects(feed.objects, watch::referenced_key);
    Controller::for_stream(changed.map(Ok), objects)
        .watches_stream(feed.servers.map(Ok), move |server| {
            let ns = server.namespace();
            let Ok(server) = &server.0 else { return vec![] };
            lookup
                .state()
                .into_iter()
                .filter(|o| o.namespace() == ns && o.0.as_ref().is_ok_and(|k| uses(server, k)))
                .map(|o| ObjectRef::from_obj(&*o))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            move |obj, ctx| async move {
                bounded(&ctx.clone(), reconcile_guarded(obj, ctx, controller, reconcile)).await
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(forget_failures(ctx, controller))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_hangs_is_dropped_and_reported_and_one_that_ends_passes() {
        let (service, _api) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = kube::Client::new(service, "default");
        let (caches, writers) = cache::caches();
        writers.synced.watched("Pod");
        writers.synced.filled("Pod");
        let ctx = Context::new(
            client,
            Default::default(),
            Arc::new(crate::metrics::Metrics::default()),
            None,
            Default::default(),
        )
        .with_caches(Arc::new(caches));
        let (start, run) = (Duration::from_secs(300), Duration::from_secs(60));
        let hung = bounded_by(&ctx, std::future::pending(), start, run).await;
        assert!(matches!(hung, Err(Error::TimedOut("the reconcile", d)) if d == run), "{hung:?}");
        assert_eq!(hung.unwrap_err().metric_label(), "TimedOut");
        let done = bounded_by(&ctx, async { Ok(Action::await_change()) }, start, run).await;
        assert!(done.is_ok());
        let mut fenced = ctx.clone();
        fenced.fence = crate::leader::Fence::never();
        let waited = bounded_by(&fenced, async { Ok(Action::await_change()) }, start, run).await;
        assert!(matches!(waited, Err(Error::TimedOut(_, d)) if d == start), "{waited:?}");
        // The fence closes while a reconcile runs: dropped at once, not after its bound.
        let (lead, fence) = crate::leader::Fence::controlled(true);
        let mut leading = ctx.clone();
        leading.fence = fence;
        let deposed = tokio::spawn(async move {
            let began = tokio::time::Instant::now();
            let r = bounded_by(&leading, std::future::pending(), start, run).await;
            (r, began.elapsed())
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        lead.send(false).unwrap();
        let (r, took) = deposed.await.unwrap();
        assert!(matches!(r, Err(Error::Fenced)), "{r:?}");
        assert_eq!((r.unwrap_err().metric_label(), took), ("Fenced", Duration::from_secs(5)));
    }
}
