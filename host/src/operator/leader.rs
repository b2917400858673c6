//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas exactly one reconciles and the others wait to take
//! over. kube-rs has no elector of its own; this is the client-go
//! protocol: the holder renews `renewTime` every `renew` interval; a lease
//! not renewed for `duration` may be taken by another replica. Writes carry
//! the `resourceVersion` read, so two replicas racing for an expired lease
//! cannot both win on a real API server (the loser gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// How a replica takes part in the election.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (the pod's name).
    pub identity: String,
    /// A lease not renewed for this long is free.
    pub duration: Duration,
    /// How often the holder renews, and a candidate retries.
    pub renew: Duration,
}

impl LeaseOptions {
    /// The defaults of client-go's elector: 15 s lease, renewed every 5 s.
    pub fn new(identity: String) -> Self {
        LeaseOptions {
            name: "legion-operator".into(),
            identity,
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// This process's identity without one given: `POD_NAME`, else host and pid.
pub fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    opts: LeaseOptions,
}

/// What a look at the lease found.
#[derive(Debug, PartialEq, Eq)]
enum Try {
    /// This replica holds it now.
    Held,
    /// Another live replica does.
    Taken(String),
}

impl Elector {
    /// An elector on the lease `opts.name` in `namespace`.
    pub fn new(client: Client, namespace: &str, opts: LeaseOptions) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            opts,
        }
    }

    /// Waits until this replica holds the lease (`true`), or `stop` fires
    /// first (`false`).
    pub async fn acquire(&self, stop: &CancellationToken) -> Result<bool, Error> {
        let mut last_holder = None;
        loop {
            match self.try_once().await {
                Ok(Try::Held) => return Ok(true),
                Ok(Try::Taken(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(%holder, "another replica leads; standing by");
                        last_holder = Some(holder);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read or write the lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.opts.renew) => {}
                _ = stop.cancelled() => return Ok(false),
            }
        }
    }

    /// Renews the lease until `stop` fires or the lease is lost (another
    /// replica holds it, or it could not be renewed for its duration).
    /// On `stop` the lease is released, so a standby takes over at once.
    pub async fn keep(&self, stop: &CancellationToken) {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.opts.renew) => {}
                _ = stop.cancelled() => {
                    self.release().await;
                    return;
                }
            }
            match self.try_once().await {
                Ok(Try::Held) => renewed = tokio::time::Instant::now(),
                Ok(Try::Taken(holder)) => {
                    tracing::error!(%holder, "the lease was taken by another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if renewed.elapsed() >= self.opts.duration {
                        tracing::error!("the lease expired before it could be renewed");
                        return;
                    }
                }
            }
        }
    }

    /// Reads the lease, and takes or renews it when it is free or ours.
    async fn try_once(&self) -> Result<Try, Error> {
        let now = Timestamp::now();
        let me = &self.opts.identity;
        let Some(lease) = self
            .api
            .get_opt(&self.opts.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Try::Held),
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Try::Taken("?".into())),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder == *me {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.write(&lease, self.spec(acquired, now, transitions))
                .await?;
            return Ok(Try::Held);
        }
        if !holder.is_empty() && !expired(&spec, now) {
            return Ok(Try::Taken(holder));
        }
        self.write(&lease, self.spec(now, now, transitions + 1))
            .await?;
        Ok(Try::Held)
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.opts.identity.clone()),
            lease_duration_seconds: Some(self.opts.duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Writes `spec` over `lease`, on condition that it did not change
    /// since it was read (its `resourceVersion`).
    async fn write(&self, lease: &Lease, spec: LeaseSpec) -> Result<(), Error> {
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": spec,
        });
        self.api
            .patch(
                &self.opts.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Gives the lease up (on shutdown), if still ours.
    async fn release(&self) {
        if let Ok(Some(lease)) = self.api.get_opt(&self.opts.name).await {
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() == Some(self.opts.identity.as_str()) {
                let patch = json!({
                    "metadata": {"resourceVersion": lease.metadata.resource_version},
                    "spec": {"holderIdentity": null, "renewTime": null},
                });
                let _ = self
                    .api
                    .patch(
                        &self.opts.name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
    }

    fn err(&self, e: kube::Error) -> Error {
        Error::Kubernetes {
            namespace: self.namespace.clone(),
            message: format!("lease {}: {e}", self.opts.name),
        }
    }
}

/// Whether a lease was not renewed within its duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    now.as_second() - renewed.as_second() >= duration
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_when_not_renewed_within_its_duration() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let spec = |renewed: i64| LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..Default::default()
        };
        assert!(!expired(&spec(1_000_000 - 14), now));
        assert!(expired(&spec(1_000_000 - 15), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
