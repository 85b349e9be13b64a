//! Waits on watched conditions with generous deadlines: never bare sleeps.

use anyhow::{anyhow, Result};
use kube::runtime::wait::{await_condition, Condition};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// How long any single wait may take: the machine is noisy, so this is generous.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Waits until `cond` holds for the object `name`, watching it; fails with the last state seen.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(anyhow!("{name}: deleted while waiting for {what}")),
        Ok(Err(e)) => Err(anyhow!("{name}: watch failed while waiting for {what}: {e}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            Err(anyhow!("{name}: timed out after {DEADLINE:?} waiting for {what}; last seen: {last:#?}"))
        }
    }
}

/// Waits until the object `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let cond = |o: Option<&K>| o.is_none();
    match tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("{name}: watch failed while waiting for deletion: {e}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            Err(anyhow!("{name}: still exists after {DEADLINE:?}: {last:#?}"))
        }
    }
}

/// Polls an async check until it returns Some, for state no single watch covers.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    let mut last_err = None;
    while start.elapsed() < DEADLINE {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(anyhow!("timed out after {DEADLINE:?} waiting for {what}; last error: {last_err:?}"))
}
