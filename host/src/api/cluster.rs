//! The API on a cluster (`legion server --executor kube`): the operator's
//! custom resources are the one source of truth.
//!
//! - A training or packaging create becomes a `ModelTraining` or
//!   `ModelPackaging` object; the operator admits it, writes its run id
//!   into the status and records the run in the store it shares with the
//!   API (PostgreSQL). The create is answered as on one machine: 202 with
//!   the run once it is planned, 422 if the operator refused it.
//! - Reads (lists, filters, the event stream, logs) come from that store,
//!   which the operator writes — so `kubectl get modeltrainings` and
//!   `GET /api/v1/trainings` show the same runs, whoever created them.
//! - A cancel deletes the object: the operator's finalizer cancels the run
//!   and deletes its Job (as `kubectl delete modeltraining` does).
//! - Deployments are `ModelDeployment` objects, read back with their
//!   status.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api as KubeApi, Client, ResourceExt};

use super::runs::{Accepted, PLAN_WAIT};
use super::Api;
use crate::exec::kube::job::dns_label;
use crate::operator::crd::{
    ModelDeployment, ModelDeploymentSpec, ModelPackaging, ModelPackagingSpec, ModelTraining,
    ModelTrainingSpec, Toolchain,
};
use crate::operator::runs::RunResource;
use crate::operator::status::{self, phase};
use crate::store::{DeploymentRecord, DeploymentState, RunKind, RunRecord};
use crate::Error;

/// Label on the objects the API creates.
pub const CREATED_BY_LABEL: &str = "legion-platform.org/created-by";
/// Annotation naming the caller who asked for an object.
pub const REQUESTED_BY: &str = "legion-platform.org/requested-by";
/// How often a create looks at its object and run while it waits.
const LOOK: Duration = Duration::from_millis(100);

/// The cluster the API works on.
pub struct Cluster {
    client: Client,
    namespace: String,
}

impl Cluster {
    /// Connects to the cluster of `kubeconfig` (or the usual places) and
    /// checks that the namespace's custom resources answer.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: Option<String>,
    ) -> Result<Self, Error> {
        let client = crate::exec::kube::client(kubeconfig).await?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
        let c = Cluster { client, namespace };
        KubeApi::<ModelTraining>::namespaced(c.client.clone(), &c.namespace)
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|e| c.err("listing ModelTrainings (are Legion's CRDs installed?)", e))?;
        Ok(c)
    }

    /// The namespace worked in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn err(&self, doing: &str, e: kube::Error) -> Error {
        Error::Kubernetes {
            namespace: self.namespace.clone(),
            message: format!("{doing}: {e}"),
        }
    }

    fn api<K>(&self) -> KubeApi<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        KubeApi::namespaced(self.client.clone(), &self.namespace)
    }

    fn meta(&self, name: String, caller: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([(
                CREATED_BY_LABEL.into(),
                "legion-api".into(),
            )])),
            annotations: Some(BTreeMap::from([(REQUESTED_BY.into(), caller.into())])),
            ..ObjectMeta::default()
        }
    }

    /// Refuses a toolchain the namespace has no `Toolchain` object for.
    async fn check_toolchain(&self, name: &str) -> Result<(), Error> {
        match self.api::<Toolchain>().get_opt(name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Error::InvalidArgument {
                field: "toolchain".into(),
                message: format!(
                    "no Toolchain '{name}' in namespace '{}' (an admin registers it: kubectl apply a Toolchain)",
                    self.namespace
                ),
            }),
            Err(e) => Err(self.err(&format!("reading Toolchain '{name}'"), e)),
        }
    }

    /// Creates a `ModelTraining` for `spec` and waits until it is planned.
    pub async fn create_training(
        &self,
        api: &Api,
        spec: ModelTrainingSpec,
        caller: &str,
    ) -> Result<Accepted, Error> {
        let uri = &spec.source.uri;
        if !(uri.contains("://") || uri.starts_with("git@")) {
            return Err(Error::InvalidArgument {
                field: "source.uri".into(),
                message: format!(
                    "'{uri}': a pod cannot read a folder; give a git URL or an oci:// source artifact"
                ),
            });
        }
        self.check_toolchain(&spec.toolchain).await?;
        let name = object_name(&format!("{}-{}", spec.model.name, spec.model.version));
        let obj = ModelTraining {
            metadata: self.meta(name, caller),
            spec,
            status: None,
        };
        self.submit(api, obj).await
    }

    /// Creates a `ModelPackaging` for `spec`, whose training (if any) is
    /// the run `training`: the object names that run's `ModelTraining`.
    pub async fn create_packaging(
        &self,
        api: &Api,
        mut spec: ModelPackagingSpec,
        training: Option<&RunRecord>,
        caller: &str,
    ) -> Result<Accepted, Error> {
        self.check_toolchain(&spec.toolchain).await?;
        let base = match training {
            Some(run) => {
                let owner = self.object_of::<ModelTraining>(&run.id).await?;
                match (owner, pinned(run.pushed_ref.as_deref(), run.model_digest.as_deref())) {
                    (Some(t), _) => spec.training_ref = Some(t.name_any()),
                    (None, Some(m)) => {
                        spec.training_ref = None;
                        spec.model_ref = Some(m);
                    }
                    (None, None) => {
                        return Err(Error::InvalidArgument {
                            field: "trainingRef".into(),
                            message: format!(
                                "training '{}' has no ModelTraining in namespace '{}' and no model pinned by digest in a registry",
                                run.id, self.namespace
                            ),
                        })
                    }
                }
                run.model.name.clone()
            }
            None => spec
                .model_ref
                .as_deref()
                .and_then(|r| r.split('@').next())
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("model")
                .to_string(),
        };
        let obj = ModelPackaging {
            metadata: self.meta(object_name(&format!("{base}-pkg")), caller),
            spec,
            status: None,
        };
        self.submit(api, obj).await
    }

    /// Creates `obj` and waits until the operator gave it a run and the run
    /// is planned, or refused it, or [`PLAN_WAIT`] passed.
    async fn submit<K: RunResource>(&self, api: &Api, obj: K) -> Result<Accepted, Error> {
        let kind = K::kind(&()).to_string();
        let name = obj.name_any();
        let objects = self.api::<K>();
        objects
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| self.err(&format!("creating {kind} '{name}'"), e))?;
        tracing::info!(%kind, %name, "object created; waiting for the operator");
        let store = api.toolchains.store();
        let deadline = Instant::now() + PLAN_WAIT;
        let mut run = None;
        loop {
            let now = objects
                .get_opt(&name)
                .await
                .map_err(|e| self.err(&format!("reading {kind} '{name}'"), e))?;
            let Some(now) = now else {
                return Err(self.gone(&kind, &name));
            };
            let st = now.run_status().cloned().unwrap_or_default();
            match st.run_id.as_deref() {
                Some(id) => {
                    run = store.get_run(id).await?;
                    if let Some(r) = &run {
                        if r.state.is_final() {
                            return Ok(Accepted::Ended(r.clone()));
                        }
                        if r.plan.is_some() {
                            return Ok(Accepted::Planned(r.clone()));
                        }
                    }
                }
                None if st.phase.as_deref() == Some(phase::FAILED) => {
                    // Refused before a run existed: nothing ran, and an
                    // object without a run would be in `kubectl get` but
                    // in no API list — it goes; the caller has the reason.
                    let why = status::get(&st.conditions, "Accepted")
                        .map(|c| c.message.clone())
                        .unwrap_or_else(|| "refused by the operator".into());
                    self.delete_quietly::<K>(&name).await;
                    return Err(Error::InvalidArgument {
                        field: "spec".into(),
                        message: format!("{kind} refused: {why}"),
                    });
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Ok(match run {
                    Some(r) => Accepted::Planning(r),
                    None => {
                        // Not even started: called off, so that the
                        // caller's retry cannot make a second run.
                        self.delete_quietly::<K>(&name).await;
                        Accepted::Busy
                    }
                });
            }
            tokio::time::sleep(LOOK).await;
        }
    }

    fn gone(&self, kind: &str, name: &str) -> Error {
        Error::Kubernetes {
            namespace: self.namespace.clone(),
            message: format!("{kind} '{name}' was deleted before its run started"),
        }
    }

    async fn delete_quietly<K>(&self, name: &str)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        if let Err(e) = self.api::<K>().delete(name, &DeleteParams::default()).await {
            tracing::warn!(object = %name, error = %e, "cannot delete an object the API called off");
        }
    }

    /// The object whose run is `id`.
    async fn object_of<K: RunResource>(&self, id: &str) -> Result<Option<K>, Error> {
        let kind = K::kind(&()).to_string();
        let list = self
            .api::<K>()
            .list(&ListParams::default())
            .await
            .map_err(|e| self.err(&format!("listing {kind}s"), e))?;
        Ok(list
            .items
            .into_iter()
            .find(|o| o.run_status().and_then(|s| s.run_id.as_deref()) == Some(id)))
    }

    /// Cancels run `id` by deleting its object (the operator's finalizer
    /// cancels the run and deletes its Job); `false` if no object has it.
    pub async fn cancel(&self, kind: RunKind, id: &str) -> Result<bool, Error> {
        match kind {
            RunKind::Training => self.delete_run_object::<ModelTraining>(id).await,
            RunKind::Packaging => self.delete_run_object::<ModelPackaging>(id).await,
        }
    }

    async fn delete_run_object<K: RunResource>(&self, id: &str) -> Result<bool, Error> {
        let Some(obj) = self.object_of::<K>(id).await? else {
            return Ok(false);
        };
        let name = obj.name_any();
        match self
            .api::<K>()
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.err(&format!("deleting '{name}'"), e)),
        }
    }

    /// Creates a `ModelDeployment`; `None` if the name is taken.
    pub async fn create_deployment(
        &self,
        name: &str,
        spec: ModelDeploymentSpec,
        model: String,
        caller: &str,
    ) -> Result<Option<DeploymentRecord>, Error> {
        let mut metadata = self.meta(name.to_string(), caller);
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(MODEL_ANNOTATION.into(), model);
        let obj = ModelDeployment {
            metadata,
            spec,
            status: None,
        };
        match self
            .api::<ModelDeployment>()
            .create(&PostParams::default(), &obj)
            .await
        {
            Ok(created) => Ok(Some(record(&created))),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(self.err(&format!("creating ModelDeployment '{name}'"), e)),
        }
    }

    /// Every `ModelDeployment` of the namespace, by name.
    pub async fn deployments(&self) -> Result<Vec<DeploymentRecord>, Error> {
        let mut items: Vec<DeploymentRecord> = self
            .api::<ModelDeployment>()
            .list(&ListParams::default())
            .await
            .map_err(|e| self.err("listing ModelDeployments", e))?
            .items
            .iter()
            .map(record)
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    /// The `ModelDeployment` `name`.
    pub async fn deployment(&self, name: &str) -> Result<Option<DeploymentRecord>, Error> {
        self.api::<ModelDeployment>()
            .get_opt(name)
            .await
            .map(|d| d.as_ref().map(record))
            .map_err(|e| self.err(&format!("reading ModelDeployment '{name}'"), e))
    }

    /// Deletes the `ModelDeployment` `name` (the operator removes what
    /// serves it); `false` if there is none.
    pub async fn delete_deployment(&self, name: &str) -> Result<bool, Error> {
        match self
            .api::<ModelDeployment>()
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(self.err(&format!("deleting ModelDeployment '{name}'"), e)),
        }
    }
}

/// A name for a new object: `base` as a DNS label, and a random suffix.
fn object_name(base: &str) -> String {
    format!("{}-{:08x}", dns_label(base, 40), rand::random::<u32>())
}

/// A model pushed to `pushed` with manifest `digest`, pinned by digest in
/// its registry (`REPO@sha256:…`); `None` if it was not pushed.
fn pinned(pushed: Option<&str>, digest: Option<&str>) -> Option<String> {
    let pushed = pushed?;
    if pushed.contains("@sha256:") {
        return Some(pushed.to_string());
    }
    let digest = digest?;
    // REGISTRY[:PORT]/REPO[:TAG]: the tag is after the last '/'.
    let (head, last) = pushed.rsplit_once('/')?;
    let repo = last.split(':').next()?;
    Some(format!("{head}/{repo}@{digest}"))
}

/// A `ModelDeployment` as the API shows a deployment.
fn record(d: &ModelDeployment) -> DeploymentRecord {
    let st = d.status.clone().unwrap_or_default();
    let ready = status::get(&st.conditions, "Ready");
    let state = if d.metadata.deletion_timestamp.is_some() {
        DeploymentState::Deleting
    } else {
        match st.phase.as_deref() {
            Some(phase::READY) => DeploymentState::Ready,
            Some(phase::FAILED) => DeploymentState::Failed,
            _ => DeploymentState::Deploying,
        }
    };
    let ms = |t: Option<&str>| {
        t.and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond())
            .unwrap_or(0)
    };
    let created = ms(d
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .as_deref());
    DeploymentRecord {
        name: d.name_any(),
        spec: d.spec.clone(),
        model: d
            .annotations()
            .get(MODEL_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        state,
        url: st.url.clone(),
        reason: (state == DeploymentState::Failed)
            .then(|| ready.map(|c| c.message.clone()))
            .flatten(),
        owner: None,
        created_at: created,
        updated_at: ready
            .map(|c| ms(Some(&c.last_transition_time)))
            .filter(|t| *t > 0)
            .unwrap_or(created),
    }
}

/// Annotation with the model (`name:version`) a deployment's image serves.
pub const MODEL_ANNOTATION: &str = "legion-platform.org/model";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_model_is_pinned_by_its_digest() {
        assert_eq!(pinned(None, Some("sha256:ab")), None);
        assert_eq!(pinned(Some("127.0.0.1:5000/legion/models/m:1"), None), None);
        assert_eq!(
            pinned(Some("127.0.0.1:5000/legion/models/m:1"), Some("sha256:ab")).as_deref(),
            Some("127.0.0.1:5000/legion/models/m@sha256:ab")
        );
        assert_eq!(
            pinned(Some("reg/m@sha256:cd"), Some("sha256:ab")).as_deref(),
            Some("reg/m@sha256:cd")
        );
        assert!(object_name("Tiny_Model-1.0").starts_with("tiny-model-1-0-"));
    }
}
