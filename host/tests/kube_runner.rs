//! API-contract tests of the Kubernetes Job runner against an API server
//! emulator (kmock, `tests/kube/emulator.py`), not a cluster: the runner
//! talks to it with the real kube client (lists, watches, logs, deletes);
//! the test plays the Job controller and the kubelet by creating the pod
//! and patching statuses through the same HTTP API. What a real kubelet
//! and controller would do is only as faithful as these patches.

mod common;

use std::time::Duration;

use common::emulator::{done, status, Emulator};
use legion::exec::kube::job::{job_name, training_job, ClusterSettings, TrainingJob};
use legion::exec::kube::runner::{JobEnd, JobRunner};
use legion::exec::RunLog;
use legion::oci::model::ToolchainRef;
use legion::plan::{Plan, Step, TrainingRequest};
use legion::train::phases::StepSpec;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const NS: &str = "legion";

fn job(run_id: &str) -> k8s_openapi::api::batch::v1::Job {
    let spec = StepSpec {
        run_id: run_id.into(),
        toolchain: ToolchainRef {
            name: "python".into(),
            digest: "sha256:00".into(),
        },
        request: TrainingRequest::default(),
        push: None,
    };
    let plan = Plan {
        steps: vec![Step {
            name: "train".into(),
            image: "python:3.11-slim".into(),
            command: vec!["python".into(), "train.py".into()],
            ..Default::default()
        }],
        python: None,
    };
    training_job(
        &TrainingJob {
            spec: &spec,
            plan: &plan,
            step_images: &["python:3.11-slim".to_string()],
            deadline_seconds: 600,
        },
        &ClusterSettings {
            namespace: NS.into(),
            legion_image: "legion:test".into(),
            ttl_seconds_after_finished: 3600,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Plays the Job controller for the run's Job.
async fn pod_for(emu: &Emulator, run_id: &str, logs: &[(&str, &str)]) -> String {
    let job = emu
        .wait_for(&format!(
            "/apis/batch/v1/namespaces/{NS}/jobs/{}",
            job_name(run_id)
        ))
        .await;
    emu.pod_for_job(&job, logs).await
}

async fn kubelet(emu: &Emulator, pod: &str, status: Value) {
    emu.kubelet(NS, pod, status).await
}

struct Run {
    log: RunLog,
    _dir: tempfile::TempDir,
}

fn run_log() -> Run {
    let dir = tempfile::tempdir().unwrap();
    Run {
        log: RunLog::open(&dir.path().join("legion.log")).unwrap(),
        _dir: dir,
    }
}

fn log_text(r: &Run) -> String {
    std::fs::read_to_string(r.log.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_through_every_phase_succeeds_with_the_digest_from_the_termination_message() {
    let emu = Emulator::start(&[NS]);
    let runner = JobRunner::new(emu.client().await, NS);
    let run = run_log();
    let (log, j) = (run.log.clone(), job("iris-00000001"));
    let task = tokio::spawn(async move {
        runner
            .run(&j, "iris-00000001", &log, CancellationToken::new())
            .await
    });
    let pod = pod_for(
        &emu,
        "iris-00000001",
        &[
            ("fetch", "fetching\n"),
            ("step-train", "epoch 1\nepoch 2\n"),
            ("collect", "stored\n"),
        ],
    )
    .await;
    // The Job is labelled for finding it again.
    let created = emu
        .get(&format!(
            "/apis/batch/v1/namespaces/{NS}/jobs/{}",
            job_name("iris-00000001")
        ))
        .await
        .unwrap();
    assert_eq!(
        created["metadata"]["labels"]["legion-platform.org/run-id"],
        "iris-00000001"
    );
    let report =
        r#"{"modelDigest":"sha256:abc","modelRef":"iris:1","pushedRef":"r/iris:1@sha256:abc"}"#;
    kubelet(&emu, &pod, json!({"phase": "Pending", "initContainerStatuses": [
        status("fetch", json!({"running": {}})), status("step-train", json!({"waiting": {"reason": "PodInitializing"}}))]})).await;
    kubelet(
        &emu,
        &pod,
        json!({"phase": "Pending", "initContainerStatuses": [
        status("fetch", done(0, "Completed", "")), status("step-train", json!({"running": {}}))]}),
    )
    .await;
    kubelet(&emu, &pod, json!({"phase": "Succeeded",
        "initContainerStatuses": [status("fetch", done(0, "Completed", "")), status("step-train", done(0, "Completed", ""))],
        "containerStatuses": [status("collect", done(0, "Completed", report))]})).await;
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    let JobEnd::Succeeded(collected) = end else {
        panic!("{end:?}")
    };
    assert_eq!(collected.model_digest, "sha256:abc");
    assert_eq!(collected.pushed_ref.as_deref(), Some("r/iris:1@sha256:abc"));
    let text = log_text(&run);
    for line in [
        "[fetch] fetching",
        "[step-train] epoch 1",
        "[step-train] epoch 2",
        "[collect] stored",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

/// Runs a Job whose pod ends in `final_status`; returns how the run ended
/// and its log.
async fn ends_with(final_status: Value, logs: &[(&str, &str)]) -> (JobEnd, String) {
    let emu = Emulator::start(&[NS]);
    let runner = JobRunner::new(emu.client().await, NS);
    let run = run_log();
    let (log, j) = (run.log.clone(), job("wine-00000002"));
    let task = tokio::spawn(async move {
        runner
            .run(&j, "wine-00000002", &log, CancellationToken::new())
            .await
    });
    let pod = pod_for(&emu, "wine-00000002", logs).await;
    kubelet(&emu, &pod, final_status).await;
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    (end, log_text(&run))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_names_its_exit_code_and_keeps_its_log() {
    let (end, log) = ends_with(
        json!({"phase": "Failed", "initContainerStatuses": [
            status("fetch", done(0, "Completed", "")),
            status("step-train", done(3, "Error", "ValueError: bad column\n"))]}),
        &[(
            "step-train",
            "loading\nTraceback (most recent call last):\nValueError: bad column\n",
        )],
    )
    .await;
    assert_eq!(
        end,
        JobEnd::Failed {
            container: "step-train".into(),
            exit_code: Some(3),
            message: "exited with code 3: ValueError: bad column".into()
        }
    );
    assert!(log.contains("[step-train] ValueError: bad column"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_pull_failures_and_oom_kills_are_named() {
    let (end, _) = ends_with(
        json!({"phase": "Pending", "initContainerStatuses": [
            status("fetch", done(0, "Completed", "")),
            status("step-train", json!({"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}))]}),
        &[],
    )
    .await;
    assert!(
        matches!(&end, JobEnd::Failed { container, message, .. } if container == "step-train" && message.contains("image pull failure (ErrImagePull)") && message.contains("manifest unknown")),
        "{end:?}"
    );
    let (end, _) = ends_with(
        json!({"phase": "Failed", "initContainerStatuses": [
            status("fetch", done(0, "Completed", "")),
            status("step-train", done(137, "OOMKilled", ""))]}),
        &[],
    )
    .await;
    assert!(
        matches!(&end, JobEnd::Failed { exit_code: Some(137), message, .. } if message.contains("OOMKilled")),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_a_cancel_and_a_deleted_job_each_end_the_run() {
    // Deadline: the Job controller marks the Job failed.
    let emu = Emulator::start(&[NS]);
    let runner = JobRunner::new(emu.client().await, NS);
    let run = run_log();
    let (log, j, r) = (run.log.clone(), job("slow-00000003"), runner.clone());
    let task = tokio::spawn(async move {
        r.run(&j, "slow-00000003", &log, CancellationToken::new())
            .await
    });
    let path = format!(
        "/apis/batch/v1/namespaces/{NS}/jobs/{}",
        job_name("slow-00000003")
    );
    // The controller kills the running step and marks the Job: the step's
    // exit code and the Job's condition arrive in either order; the
    // deadline is the reason.
    let pod = pod_for(&emu, "slow-00000003", &[]).await;
    emu.patch(&format!("{path}/status"), &json!({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}}))
        .await;
    kubelet(
        &emu,
        &pod,
        json!({"phase": "Failed", "initContainerStatuses": [
        status("fetch", done(0, "Completed", "")), status("step-train", done(137, "Error", ""))]}),
    )
    .await;
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    assert_eq!(end, JobEnd::DeadlineExceeded);

    // Cancel: the runner deletes its Job.
    let cancel = CancellationToken::new();
    let (log, j, r, c) = (
        run.log.clone(),
        job("stop-00000004"),
        runner.clone(),
        cancel.clone(),
    );
    let task = tokio::spawn(async move { r.run(&j, "stop-00000004", &log, c).await });
    let path = format!(
        "/apis/batch/v1/namespaces/{NS}/jobs/{}",
        job_name("stop-00000004")
    );
    emu.wait_for(&path).await;
    cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    assert_eq!(end, JobEnd::Cancelled);
    assert!(emu.get(&path).await.is_none(), "the Job is gone");

    // Someone else deletes the Job: the run does not stay running.
    let (log, j, r) = (run.log.clone(), job("gone-00000005"), runner.clone());
    let task = tokio::spawn(async move {
        r.run(&j, "gone-00000005", &log, CancellationToken::new())
            .await
    });
    let path = format!(
        "/apis/batch/v1/namespaces/{NS}/jobs/{}",
        job_name("gone-00000005")
    );
    emu.wait_for(&path).await;
    emu.delete(&path).await;
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    assert_eq!(end, JobEnd::Deleted);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_finds_its_job_again_and_a_missing_namespace_creates_nothing() {
    let emu = Emulator::start(&[NS]);
    let runner = JobRunner::new(emu.client().await, NS);
    // The Job exists from before the host restarted.
    let existing = serde_json::to_value(job("back-00000006")).unwrap();
    emu.post(&format!("/apis/batch/v1/namespaces/{NS}/jobs"), &existing)
        .await;
    let run = run_log();
    let (log, r) = (run.log.clone(), runner.clone());
    let task = tokio::spawn(async move {
        r.follow(
            &job_name("back-00000006"),
            "back-00000006",
            &log,
            CancellationToken::new(),
        )
        .await
    });
    let pod = pod_for(&emu, "back-00000006", &[]).await;
    kubelet(&emu, &pod, json!({"phase": "Succeeded",
        "containerStatuses": [status("collect", done(0, "Completed", r#"{"modelDigest":"sha256:9","modelRef":"b:1"}"#))]})).await;
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    assert!(
        matches!(end, JobEnd::Succeeded(ref c) if c.model_digest == "sha256:9"),
        "{end:?}"
    );

    // A namespace that does not exist: a clear error, no Job.
    let elsewhere = JobRunner::new(emu.client().await, "nope");
    let mut j = job("lost-00000007");
    j.metadata.namespace = Some("nope".into());
    let err = elsewhere
        .run(&j, "lost-00000007", &run.log, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("namespace nope") && err.contains("not found"),
        "{err}"
    );
    let jobs = emu.get("/apis/batch/v1/jobs").await.unwrap();
    assert!(
        jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["metadata"]["name"] != job_name("lost-00000007")),
        "{jobs:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_api_server_is_a_clear_error() {
    let emu = Emulator::start(&[NS]);
    let client = emu.client().await;
    drop(emu);
    let run = run_log();
    let err = JobRunner::new(client, NS)
        .run(
            &job("dead-00000008"),
            "dead-00000008",
            &run.log,
            CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kubernetes (namespace legion): creating the Job"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_unschedulable_past_the_limit_fails_the_run_and_its_job_is_deleted() {
    let emu = Emulator::start(&[NS]);
    // The limit is what is under test: nothing else races it.
    let runner = JobRunner::new(emu.client().await, NS).unschedulable_after(Duration::from_secs(1));
    let run = run_log();
    let (log, j) = (run.log.clone(), job("gpu-00000009"));
    let task = tokio::spawn(async move {
        runner
            .run(&j, "gpu-00000009", &log, CancellationToken::new())
            .await
    });
    let pod = pod_for(&emu, "gpu-00000009", &[]).await;
    kubelet(
        &emu,
        &pod,
        json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
    )
    .await;
    let end = tokio::time::timeout(Duration::from_secs(300), task)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    let JobEnd::Failed {
        container, message, ..
    } = end
    else {
        panic!("{end:?}")
    };
    assert_eq!(container, "pod");
    assert_eq!(
        message,
        "the pod could not be scheduled for 1s: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    );
    assert!(
        emu.get(&format!(
            "/apis/batch/v1/namespaces/{NS}/jobs/{}",
            job_name("gpu-00000009")
        ))
        .await
        .is_none(),
        "the Job is deleted so it cannot start unwatched later"
    );
    assert!(log_text(&run).contains("cannot be scheduled: 0/3 nodes"));
}
