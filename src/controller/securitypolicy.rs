//! SecurityPolicy controller: validates referenced Secrets and settings, reports phase and usedBy
//! (no finalizer: see `usage`). Rendering into each server's config is done by the MCPServer
//! controller, which watches policies.

use super::usage::release_finalizer;
use super::{write_status, Context, Error, Result};
use crate::api::policy_condition_types::VALID;
use crate::api::{condition, set_condition, McpServer, SecurityPolicy, SecurityPolicyPhase, SecurityPolicyStatus};
use crate::consts::IN_USE_FINALIZER;
use crate::issue::{co_owned, due_for_renewal, issued_secret, secrets_to_issue, Issue};
use crate::policy::{required_secrets, validate_policy};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "securitypolicy";

/// MCPServers that name `policy`, sorted.
pub fn used_by(policy: &str, servers: &[McpServer]) -> Vec<String> {
    let mut names: Vec<String> =
        servers.iter().filter(|s| s.spec.security_policy.as_deref() == Some(policy)).map(|s| s.name_any()).collect();
    names.sort();
    names
}

/// Computes a policy's status from its validation problems and users.
pub fn policy_status(policy: &SecurityPolicy, problems: &[String], used_by: Vec<String>) -> SecurityPolicyStatus {
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let valid = if problems.is_empty() {
        condition(VALID, true, "Valid", "every referenced Secret exists and holds its keys", generation)
    } else {
        condition(VALID, false, "Invalid", problems.join("; "), generation)
    };
    let mut conditions = vec![];
    set_condition(&mut conditions, &previous.conditions, valid);
    let phase = if !policy.spec.enabled {
        SecurityPolicyPhase::Inactive
    } else if !problems.is_empty() {
        SecurityPolicyPhase::Error
    } else {
        SecurityPolicyPhase::Active
    };
    SecurityPolicyStatus {
        phase: Some(phase),
        used_by_count: used_by.len() as i32,
        used_by,
        tls: Some(match policy.spec.encryption.as_ref().filter(|e| e.tls_enabled) {
            Some(e) => e.tls_version.as_str().to_string(),
            None => "off".to_string(),
        }),
        observed_generation: generation,
        conditions,
    }
}

/// Reconciles one SecurityPolicy.
pub async fn reconcile(policy: Arc<SecurityPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let ns = policy.namespace().ok_or(Error::MissingNamespace)?;
    let name = policy.name_any();
    let api: Api<SecurityPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let servers = ctx.caches.servers(&ns);
    let users = used_by(&name, &servers);
    if release_finalizer(&api, &*policy, IN_USE_FINALIZER).await? && policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // The one place Secrets are read: each named one with `get`, on every policy reconcile (they
    // are not watched). The servers read them from the cache; a change is passed on to them.
    let names: BTreeSet<String> = required_secrets(&policy.spec)
        .into_iter()
        .map(|n| n.name)
        .chain(secrets_to_issue(&policy.spec).iter().map(|i| i.secret().to_string()))
        .collect();
    let mut changed = ctx.caches.secrets.refresh(&ctx.client, &ns, &names).await?;
    changed |= issue_secrets(&ctx, &policy, &ctx.caches.secrets.get(&ctx.client, &ns, &names).await?).await?;
    let secrets = ctx.caches.secrets.get(&ctx.client, &ns, &names).await?;
    if changed {
        ctx.trigger_servers_of_policy(&ns, &name);
    }
    let problems = validate_policy(&policy.spec, &secrets);
    let status = policy_status(&policy, &problems, users);
    let previous = policy.status.clone().unwrap_or_default();
    if status != previous {
        write_status(&api, &name, &status).await?;
        if status.phase != previous.phase {
            match status.phase {
                Some(SecurityPolicyPhase::Error) => {
                    ctx.event(&*policy, EventType::Warning, "Invalid", "Validate", problems.join("; "))
                }
                Some(phase) => {
                    let note = format!("SecurityPolicy is {phase:?}");
                    ctx.event(&*policy, EventType::Normal, &format!("{phase:?}"), "Validate", note)
                }
                None => {}
            }
        }
    }
    // Secrets are not watched (no cluster-wide Secret watch): look again on a timer.
    let wait = if problems.is_empty() { 120 } else { 15 };
    Ok(Action::requeue(Duration::from_secs(wait)))
}

/// Creates the Secrets the policy asks the operator to issue when they are missing, and renews
/// an issued certificate before it expires (`known`: the Secrets as just read). Never touches a
/// Secret the operator did not issue. True when it wrote one.
async fn issue_secrets(ctx: &Context, policy: &SecurityPolicy, known: &BTreeMap<String, Secret>) -> Result<bool> {
    let ns = policy.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let now = jiff::Timestamp::now();
    let mut wrote = false;
    for issue in secrets_to_issue(&policy.spec) {
        let name = issue.secret();
        let existing = known.get(name).cloned();
        let verb = match &existing {
            None => "Issued",
            Some(existing) if due_for_renewal(existing, now) => "Renewed",
            Some(existing) => {
                // Shared by several policies (the examples share theirs): each one owns it.
                if let Some(shared) = co_owned(existing, policy) {
                    let stored = api.replace(name, &PostParams::default(), &shared).await?;
                    wrote |= ctx.caches.secrets.put(&ns, name, Some(stored));
                }
                continue;
            }
        };
        let mut secret =
            issued_secret(policy, &issue, now).map_err(|e| Error::Refused(format!("{}: {e:#}", issue.field())))?;
        if let Some(existing) = existing {
            // Optimistically locked: a renewal never overwrites a change made meanwhile; the
            // other policies sharing it keep owning it.
            secret.metadata.resource_version = existing.resource_version();
            let mine = secret.metadata.owner_references.take().unwrap_or_default();
            let mut owners = existing.metadata.owner_references.unwrap_or_default();
            owners.retain(|o| !mine.iter().any(|m| m.uid == o.uid));
            for o in owners.iter_mut() {
                o.controller = None;
            }
            owners.extend(mine);
            secret.metadata.owner_references = Some(owners);
        }
        let written = if verb == "Issued" {
            api.create(&PostParams::default(), &secret).await
        } else {
            api.replace(name, &PostParams::default(), &secret).await
        };
        match written {
            Ok(stored) => {
                ctx.caches.secrets.put(&ns, name, Some(stored));
                wrote = true;
            }
            // Another policy issued it meanwhile: theirs is as good.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
        // One reason per kind: the event recorder folds Events of equal reason into one series.
        let (what, reason) = match (&issue, verb) {
            (Issue::SelfSignedTls { .. }, "Issued") => {
                ("a self-signed certificate for the namespace's Services", "CertificateIssued")
            }
            (Issue::SelfSignedTls { .. }, _) => {
                ("a self-signed certificate for the namespace's Services", "CertificateRenewed")
            }
            (Issue::JwtKey { .. }, _) => ("a random HS256 key", "JwtKeyIssued"),
        };
        let note = format!("{verb} Secret {name:?} with {what} ({})", issue.field());
        ctx.event(policy, EventType::Normal, reason, "Issue", note);
    }
    Ok(wrote)
}

/// Requeue policy after a failed reconcile.
pub fn error_policy<K: kube::Resource<DynamicType = ()>>(policy: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(CONTROLLER, &*policy, err)
}

/// Runs the SecurityPolicy controller until shutdown, fed by the MCPServer controller's watches.
pub fn controller(ctx: Arc<Context>, feed: super::Feed<SecurityPolicy>) -> impl std::future::Future<Output = ()> {
    let objects = ctx.caches.policies.clone();
    super::referenced_kind_controller(ctx, objects, feed, CONTROLLER, reconcile, error_policy, uses)
}

/// Whether `server` uses `policy` now (it names it) or did (the policy lists it as a user).
fn uses(server: &McpServer, policy: &SecurityPolicy) -> bool {
    server.spec.security_policy.as_deref() == Some(policy.name_any().as_str())
        || policy.status.as_ref().is_some_and(|s| s.used_by.iter().any(|u| *u == server.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{policy, server};

    #[test]
    fn used_by_lists_servers_naming_it() {
        let s = |n: &str, p: &str| {
            server(&format!("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: {n}}}\nspec: {{securityPolicy: {p}}}\n"))
        };
        let servers = vec![s("b", "default-policy"), s("a", "default-policy"), s("c", "other")];
        assert_eq!(used_by("default-policy", &servers), vec!["a", "b"]);
    }

    #[test]
    fn phases() {
        let p = policy("{enabled: true}");
        assert_eq!(policy_status(&p, &[], vec![]).phase, Some(SecurityPolicyPhase::Active));
        assert_eq!(policy_status(&p, &[], vec![]).tls.as_deref(), Some("off"));
        let tls = policy("{encryption: {tlsEnabled: true, tlsVersion: \"1.2\", certSecretName: c}}");
        assert_eq!(policy_status(&tls, &[], vec![]).tls.as_deref(), Some("1.2"));
        let st = policy_status(&p, &["spec.encryption.certSecretName: Secret \"x\" not found".into()], vec![]);
        assert_eq!(st.phase, Some(SecurityPolicyPhase::Error));
        assert_eq!(st.conditions[0].message, "spec.encryption.certSecretName: Secret \"x\" not found");
        let off = policy("{enabled: false}");
        assert_eq!(policy_status(&off, &[], vec!["s".into()]).phase, Some(SecurityPolicyPhase::Inactive));
    }
}
