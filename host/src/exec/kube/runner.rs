//! Running one Job on a cluster: create it, follow it by watches (never a
//! polling loop), keep every container's log in the run's log as it is
//! written, and say how it ended — with the reason named: a step's exit
//! code, an image that cannot be pulled, OOMKilled, an eviction, the
//! deadline, a Job deleted under it, a cancel.
//!
//! [`analyze`] reads a pod's state into a verdict; it is pure, and unit
//! tested on pods as the kubelet reports them.

use std::collections::BTreeSet;

use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{DeleteParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::job::{job_name, RUN_ID_LABEL};
use crate::exec::RunLog;
use crate::train::phases::{Collected, PackagedImage};
use crate::Error;

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// The collect container reported the stored model.
    Succeeded(Collected),
    /// The package container reported the pushed image.
    Packaged(PackagedImage),
    /// A container failed.
    Failed {
        /// The container (`fetch`, `step-<name>`, `collect`).
        container: String,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// Why, in words.
        message: String,
    },
    /// `activeDeadlineSeconds` passed.
    DeadlineExceeded,
    /// The Job was deleted by someone else before it finished.
    Deleted,
    /// Cancelled here; the Job was deleted.
    Cancelled,
}

/// What a pod's state says so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodVerdict {
    /// Still going.
    Running,
    /// Over.
    Ended(JobEnd),
}

const PULL_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

fn container_verdict(s: &ContainerStatus) -> Option<JobEnd> {
    let state = s.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or_default();
        if PULL_FAILURES.contains(&reason) {
            return Some(JobEnd::Failed {
                container: s.name.clone(),
                exit_code: None,
                message: format!(
                    "image pull failure ({reason}) for {}: {}",
                    s.image,
                    w.message.as_deref().unwrap_or("no message")
                ),
            });
        }
    }
    let t = state.terminated.as_ref()?;
    let reason = t.reason.as_deref().unwrap_or_default();
    if reason == "OOMKilled" {
        return Some(JobEnd::Failed {
            container: s.name.clone(),
            exit_code: Some(t.exit_code),
            message: "was killed for exceeding its memory limit (OOMKilled)".into(),
        });
    }
    if t.exit_code != 0 {
        let tail = t
            .message
            .as_deref()
            .map(|m| format!(": {}", m.trim()))
            .unwrap_or_default();
        return Some(JobEnd::Failed {
            container: s.name.clone(),
            exit_code: Some(t.exit_code),
            message: format!("exited with code {}{tail}", t.exit_code),
        });
    }
    None
}

/// Reads a pod's status: the first failing container in run order (init
/// containers, then collect), an eviction, or collect's report.
pub fn analyze(pod: &Pod) -> PodVerdict {
    let Some(status) = &pod.status else {
        return PodVerdict::Running;
    };
    let inits = status.init_container_statuses.iter().flatten();
    let mains = status.container_statuses.iter().flatten();
    for s in inits.chain(mains.clone()) {
        if let Some(end) = container_verdict(s) {
            return PodVerdict::Ended(end);
        }
    }
    if status.reason.as_deref() == Some("Evicted") {
        return PodVerdict::Ended(JobEnd::Failed {
            container: "pod".into(),
            exit_code: None,
            message: format!(
                "the pod was evicted: {}",
                status.message.as_deref().unwrap_or("no message")
            ),
        });
    }
    for s in mains {
        let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) else {
            continue;
        };
        if t.exit_code == 0 {
            let text = t.message.as_deref().unwrap_or_default();
            let end = if s.name == "package" {
                serde_json::from_str::<PackagedImage>(text).map(JobEnd::Packaged)
            } else {
                serde_json::from_str::<Collected>(text).map(JobEnd::Succeeded)
            };
            return PodVerdict::Ended(end.unwrap_or_else(|e| JobEnd::Failed {
                container: s.name.clone(),
                exit_code: Some(0),
                message: format!("its termination message is not a report ({e}): {text:?}"),
            }));
        }
    }
    PodVerdict::Running
}

/// Whether a Job's conditions say its deadline passed.
fn deadline_exceeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Failed"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("DeadlineExceeded")
            })
        })
}

/// Containers of a pod that have started (running or ended): their logs
/// can be read.
fn started(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter(|s| {
            s.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
        })
        .map(|s| s.name.clone())
        .collect()
}

/// Why a pod cannot be scheduled, if its `PodScheduled` condition says
/// `Unschedulable` (not enough CPU, memory or GPUs; no node matching the
/// selector or tolerating the taints).
pub fn unschedulable(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| c.message.clone().unwrap_or_else(|| "no message".into()))
}

/// How long a pod may stay unschedulable before its run fails, unless set.
pub const DEFAULT_UNSCHEDULABLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs Jobs in one namespace.
#[derive(Clone)]
pub struct JobRunner {
    client: Client,
    namespace: String,
    unschedulable_after: std::time::Duration,
}

impl JobRunner {
    /// A runner on `client`'s cluster, in `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        JobRunner {
            client,
            namespace: namespace.into(),
            unschedulable_after: DEFAULT_UNSCHEDULABLE,
        }
    }

    /// Fails a run whose pod stays unschedulable for `after` (and deletes
    /// its Job, so it does not start unwatched later). Ten minutes unless set.
    pub fn unschedulable_after(mut self, after: std::time::Duration) -> Self {
        self.unschedulable_after = after;
        self
    }

    async fn delete(&self, jobs: &Api<Job>, name: &str) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match jobs.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err("deleting the Job", e)),
        }
    }

    fn err(&self, what: &str, e: kube::Error) -> Error {
        Error::Kubernetes {
            namespace: self.namespace.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// Creates `job` (whose pods carry the run-id label) and follows it to
    /// its end; every container's log goes into `log` as `[container] line`.
    pub async fn run(
        &self,
        job: &Job,
        run_id: &str,
        log: &RunLog,
        cancel: CancellationToken,
    ) -> Result<JobEnd, Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        jobs.create(&PostParams::default(), job)
            .await
            .map_err(|e| self.err("creating the Job", e))?;
        let name = job_name(run_id);
        log.note(&format!("created Job {}/{name}", self.namespace));
        self.follow(&name, run_id, log, cancel).await
    }

    /// Follows the Job `name` (created earlier, perhaps by another process)
    /// to its end.
    pub async fn follow(
        &self,
        name: &str,
        run_id: &str,
        log: &RunLog,
        cancel: CancellationToken,
    ) -> Result<JobEnd, Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let job_events = watcher::watcher(
            jobs.clone(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .map_ok(|e| Change::Job(Box::new(e)));
        let pod_events = watcher::watcher(
            pods.clone(),
            watcher::Config::default().labels(&format!("{RUN_ID_LABEL}={run_id}")),
        )
        .map_ok(|e| Change::Pod(Box::new(e)));
        let mut events = futures_util::stream::select(job_events.boxed(), pod_events.boxed());
        let mut followed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut readers = Vec::new();
        let mut seen_job = false;
        // Since when, and why, the pod cannot be scheduled.
        let mut pending: Option<(tokio::time::Instant, String)> = None;
        let end = loop {
            let give_up = pending
                .as_ref()
                .map(|(since, _)| *since + self.unschedulable_after);
            let next = tokio::select! {
                e = events.next() => e,
                _ = sleep_until(give_up) => {
                    let why = pending.take().map(|(_, w)| w).unwrap_or_default();
                    self.delete(&jobs, name).await?;
                    log.note(&format!("unschedulable: deleted Job {}/{name}", self.namespace));
                    break JobEnd::Failed {
                        container: "pod".into(),
                        exit_code: None,
                        message: format!(
                            "the pod could not be scheduled for {}s: {why}",
                            self.unschedulable_after.as_secs()
                        ),
                    };
                }
                _ = cancel.cancelled() => {
                    self.delete(&jobs, name).await?;
                    log.note(&format!("cancelled: deleted Job {}/{name}", self.namespace));
                    break JobEnd::Cancelled;
                }
            };
            let Some(event) = next else {
                return Err(Error::Kubernetes {
                    namespace: self.namespace.clone(),
                    message: "the watch ended".into(),
                });
            };
            let event = event.map_err(|e| Error::Kubernetes {
                namespace: self.namespace.clone(),
                message: format!("watching Job {name}: {e}"),
            })?;
            match event {
                Change::Job(e) => match *e {
                    Event::Apply(j) | Event::InitApply(j) => {
                        seen_job = true;
                        if deadline_exceeded(&j) {
                            break JobEnd::DeadlineExceeded;
                        }
                    }
                    Event::Delete(_) => break JobEnd::Deleted,
                    Event::InitDone if !seen_job => break JobEnd::Deleted,
                    _ => {}
                },
                Change::Pod(e) => {
                    let (Event::Apply(p) | Event::InitApply(p)) = *e else {
                        continue;
                    };
                    let pod_name = p.metadata.name.clone().unwrap_or_default();
                    match (unschedulable(&p), &pending) {
                        (Some(why), None) => {
                            log.note(&format!("pod {pod_name} cannot be scheduled: {why}"));
                            pending = Some((tokio::time::Instant::now(), why));
                        }
                        (Some(why), Some((since, _))) => pending = Some((*since, why)),
                        (None, _) => pending = None,
                    }
                    for c in started(&p) {
                        if followed.insert((pod_name.clone(), c.clone())) {
                            readers.push(tokio::spawn(copy_log(
                                pods.clone(),
                                pod_name.clone(),
                                c,
                                log.clone(),
                            )));
                        }
                    }
                    if let PodVerdict::Ended(end) = analyze(&p) {
                        // A step killed at the deadline may show up as its
                        // exit code before the Job's condition arrives:
                        // the Job's word wins.
                        if matches!(end, JobEnd::Failed { .. }) {
                            if let Ok(j) = jobs.get(name).await {
                                if deadline_exceeded(&j) {
                                    break JobEnd::DeadlineExceeded;
                                }
                            }
                        }
                        break end;
                    }
                }
            }
        };
        // The logs of containers that ended are complete once their
        // streams end; wait for them before the run is reported.
        for r in readers {
            let _ = r.await;
        }
        Ok(end)
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

enum Change {
    Job(Box<Event<Job>>),
    Pod(Box<Event<Pod>>),
}

/// Copies one container's log into the run's log, line by line, as it is
/// written (`follow`), until the container ends.
async fn copy_log(pods: Api<Pod>, pod: String, container: String, log: RunLog) {
    let params = LogParams {
        container: Some(container.clone()),
        follow: true,
        ..LogParams::default()
    };
    match pods.log_stream(&pod, &params).await {
        Ok(stream) => {
            let mut lines = stream.lines();
            while let Some(line) = lines.next().await {
                match line {
                    Ok(l) => log.line(&format!("[{container}] {l}")),
                    Err(e) => {
                        log.note(&format!("[{container}] log stream broken: {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => log.note(&format!("[{container}] cannot read its log: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": status,
        }))
        .unwrap()
    }

    fn term(name: &str, code: i32, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}}})
    }

    #[test]
    fn pods_read_as_the_kubelet_reports_them() {
        assert_eq!(
            analyze(&pod(serde_json::json!({"phase": "Pending"}))),
            PodVerdict::Running
        );
        let pulling = pod(serde_json::json!({"initContainerStatuses": [
            {"name": "fetch", "image": "legion:x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}));
        let PodVerdict::Ended(JobEnd::Failed {
            container, message, ..
        }) = analyze(&pulling)
        else {
            panic!()
        };
        assert_eq!(container, "fetch");
        assert!(message.contains("image pull failure (ImagePullBackOff) for legion:x: not found"));

        let failed = pod(serde_json::json!({"initContainerStatuses": [
            term("fetch", 0, "Completed", ""), term("step-train", 3, "Error", "Traceback: boom\n")]}));
        assert_eq!(
            analyze(&failed),
            PodVerdict::Ended(JobEnd::Failed {
                container: "step-train".into(),
                exit_code: Some(3),
                message: "exited with code 3: Traceback: boom".into()
            })
        );
        let oom = pod(
            serde_json::json!({"initContainerStatuses": [term("step-train", 137, "OOMKilled", "")]}),
        );
        assert!(
            matches!(analyze(&oom), PodVerdict::Ended(JobEnd::Failed { exit_code: Some(137), ref message, .. }) if message.contains("OOMKilled"))
        );
        let evicted = pod(
            serde_json::json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
        );
        assert!(
            matches!(analyze(&evicted), PodVerdict::Ended(JobEnd::Failed { ref message, .. }) if message.contains("evicted: low on memory"))
        );

        let report = r#"{"modelDigest":"sha256:1","modelRef":"m:1"}"#;
        let done = pod(serde_json::json!({
            "initContainerStatuses": [term("fetch", 0, "Completed", "")],
            "containerStatuses": [term("collect", 0, "Completed", report)]}));
        assert_eq!(
            analyze(&done),
            PodVerdict::Ended(JobEnd::Succeeded(Collected {
                model_digest: "sha256:1".into(),
                model_ref: "m:1".into(),
                pushed_ref: None
            }))
        );
        let garbled = pod(
            serde_json::json!({"containerStatuses": [term("collect", 0, "Completed", "oops")]}),
        );
        assert!(
            matches!(analyze(&garbled), PodVerdict::Ended(JobEnd::Failed { ref container, .. }) if container == "collect")
        );
    }
}
