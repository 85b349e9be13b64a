//! The three controllers and what they share: context, errors, server-side apply, events.

mod context;
mod error;
pub mod gateway_status;
pub mod mcpserver;
pub mod plugin;
pub mod securitypolicy;
mod ssa;
pub mod status;
pub mod usage;

pub use context::{Context, Scope};
pub use error::{Error, Result};
pub use ssa::{apply, apply_status};

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use std::sync::Arc;

/// Forgets an object's failure count once it reconciles (the end of every controller's stream).
fn forget_failures<K, E>(
    ctx: Arc<Context>,
    controller: &'static str,
) -> impl FnMut(std::result::Result<(ObjectRef<K>, Action), E>) -> futures::future::Ready<()>
where
    K: Resource<DynamicType = ()>,
{
    move |res| {
        if let Ok((obj, _)) = &res {
            ctx.succeeded(controller, obj);
        }
        futures::future::ready(())
    }
}

/// The controller of a kind that MCPServers name (Plugin, SecurityPolicy): a change of any
/// MCPServer re-reconciles every object of the kind in its namespace, since its usage (and, for
/// a server that switched away, its former usage) may have changed.
fn referenced_kind_controller<K, Fut>(
    ctx: Arc<Context>,
    scope: &Scope,
    controller: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> Action,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>)
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
    let client = ctx.client.clone();
    let main = Controller::new(scope.api::<K>(&client), watcher::Config::default());
    let store = main.store();
    let objects = store.clone();
    let fut = main
        .watches(scope.api::<crate::api::McpServer>(&client), watcher::Config::default(), move |server| {
            let ns = server.namespace();
            objects
                .state()
                .into_iter()
                .filter(|o| o.namespace() == ns)
                .map(|o| ObjectRef::from_obj(&*o))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(forget_failures(ctx, controller))
        .boxed();
    (store, fut)
}
