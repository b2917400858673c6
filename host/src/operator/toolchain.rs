//! `Toolchain`: a built-in plugin of the `legion` image, checked and
//! described in its status so that trainings can name it.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::Api;

use super::crd::Toolchain;
use super::status::{self, phase, set, Status};
use super::{Context, ReconcileError};
use crate::plugin::registry::BUILTIN_TOOLCHAINS;

/// Checks a toolchain and writes what was found, when that changed (a
/// new spec, or a new legion image whose built-in has another digest).
pub async fn reconcile(tc: Arc<Toolchain>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let generation = tc.metadata.generation;
    let before = tc.status.clone().unwrap_or_default();
    let mut status = before.clone();
    let verdict = match (&tc.spec.builtin, &tc.spec.image) {
        (Some(name), _) if !BUILTIN_TOOLCHAINS.contains(&name.as_str()) => Err((
            "UnknownBuiltin",
            format!(
                "'{name}' is not a toolchain built into the legion image: use one of {}",
                BUILTIN_TOOLCHAINS.join(", ")
            ),
        )),
        (Some(name), _) => match ctx.toolchains.get(name).await {
            Ok(row) if row.builtin => Ok(row),
            Ok(_) => Err((
                "NotBuiltin",
                format!("the operator's toolchain '{name}' was registered from a file; pods run only built-ins"),
            )),
            Err(e) => Err(("BuiltinMissing", format!("the legion image lacks '{name}': {e}"))),
        },
        (None, Some(image)) => Err((
            "RegistryToolchainUnsupported",
            format!("pulling toolchains from registries ({image}) is not supported yet: register a built-in with spec.builtin"),
        )),
        (None, None) => Err((
            "InvalidSpec",
            "set spec.builtin (python, mlflow, docker-rest)".to_string(),
        )),
    };
    match verdict {
        Ok(row) => {
            status.phase = Some(phase::AVAILABLE.into());
            status.digest = Some(row.digest.clone());
            status.kinds = row.interfaces.clone();
            set(
                &mut status.conditions,
                "Ready",
                Status::True,
                "Registered",
                &format!("built-in toolchain '{}' ({})", row.name, row.digest),
                generation,
            );
        }
        Err((reason, message)) => {
            status.phase = Some(phase::FAILED.into());
            status.digest = None;
            status.kinds.clear();
            set(
                &mut status.conditions,
                "Ready",
                Status::False,
                reason,
                &message,
                generation,
            );
            if before.phase.as_deref() != Some(phase::FAILED) {
                ctx.event(
                    tc.as_ref(),
                    kube::runtime::events::EventType::Warning,
                    reason,
                    message,
                )
                .await;
            }
        }
    }
    status.observed_generation = generation;
    if status != before {
        super::write_status(&ctx, tc.as_ref(), &status).await?;
    }
    Ok(Action::await_change())
}

/// Retries a failed reconcile after a pause.
pub fn error_policy(_: Arc<Toolchain>, e: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "toolchain reconcile failed");
    Action::requeue(std::time::Duration::from_secs(10))
}

/// The builtin a `Toolchain` object stands for, or why a run cannot use it
/// (reason, message, whether to wait for it).
pub async fn builtin_of(
    ctx: &Context,
    name: &str,
) -> Result<Result<String, (&'static str, String, bool)>, kube::Error> {
    let api = Api::<Toolchain>::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(tc) = api.get_opt(name).await? else {
        return Ok(Err((
            "ToolchainNotFound",
            format!(
                "no Toolchain '{name}' in namespace '{}' (kubectl get toolchains): register it and create this object again",
                ctx.namespace
            ),
            false,
        )));
    };
    let ready = tc
        .status
        .as_ref()
        .and_then(|s| status::get(&s.conditions, "Ready"))
        .map(|c| (c.status.clone(), c.message.clone()));
    Ok(match (ready, tc.spec.builtin) {
        (Some((s, _)), Some(builtin)) if s == "True" => Ok(builtin),
        (Some((s, message)), _) if s == "False" => Err((
            "ToolchainNotReady",
            format!("Toolchain '{name}' is not ready: {message}"),
            false,
        )),
        _ => Err((
            "ToolchainPending",
            format!("waiting for Toolchain '{name}' to be checked"),
            true,
        )),
    })
}
