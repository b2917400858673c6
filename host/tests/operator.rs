//! `legion operator run` as API-contract tests: the real `legion` binary as
//! the operator, a real registry, and the Kubernetes API emulator
//! (`tests/kube/emulator.py`) in place of a cluster. The test creates
//! Legion's custom resources through the API as `kubectl apply` would, and
//! plays the Job controller and the kubelet; a training pod's own phases
//! are the real `legion step fetch|collect` run with the spec its Job
//! carries (a packaging pod's, the real `legion step package`), so what the
//! status reports is what the pod really pushed.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{condition, path, run_id, Cluster, Operator, NS};
use common::emulator::{container, done, status, step_spec};
use common::Legion;
use serde_json::{json, Value};

#[test]
fn a_training_goes_through_every_phase_to_succeeded_with_its_digest() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let health = common::free_port();
    let listen = format!("127.0.0.1:{health}");
    let op = Operator::start(&l, &cluster, &["--health-listen", &listen]);
    // The probes the chart's Deployment points at.
    for path in ["/healthz", "/readyz"] {
        let url = format!("http://{listen}{path}");
        let deadline = Instant::now() + Duration::from_secs(300);
        while reqwest::blocking::get(&url)
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(
                Instant::now() < deadline,
                "{url} never answered:\n{}",
                op.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    cluster.toolchain("python", "python");
    let tc = cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    let digest = l.json(&["toolchain", "show", "python"])["digest"].clone();
    assert_eq!(tc["status"]["digest"], digest);
    assert_eq!(tc["status"]["kinds"], json!(["trainer", "batch"]));
    assert_eq!(condition(&tc, "Ready")["status"], "True");

    cluster.training("tiny-1", "python");
    let mt = cluster.started(&op, "modeltrainings", "tiny-1");
    assert!(
        mt["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("legion-platform.org/cleanup"))),
        "{mt:#}"
    );
    assert_eq!(condition(&mt, "Accepted")["status"], "True");
    let id = run_id(&mt);
    let job = cluster.wait_job(&op, &id);
    let running = cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Running");
    assert_eq!(running["status"]["jobName"], job["metadata"]["name"]);
    let succeeded = condition(&running, "Succeeded");
    assert_eq!(
        (succeeded["status"].as_str(), succeeded["reason"].as_str()),
        (Some("Unknown"), Some("JobRunning"))
    );
    assert_eq!(succeeded["observedGeneration"], 1);
    // The Job is the Kubernetes executor's: the source from the git repo
    // went to the registry, the model goes under the registry's prefix.
    let spec = step_spec(container(&job, "fetch"));
    assert_eq!(
        spec["push"],
        format!("{}/legion/models/tiny:1", cluster.registry.addr)
    );

    let report = cluster.succeed_training(&job);
    let done = cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Succeeded");
    let st = &done["status"];
    assert_eq!(st["modelDigest"], report["modelDigest"]);
    assert_eq!(st["modelRef"], report["pushedRef"]);
    assert_eq!(st["runId"], id.as_str());
    assert!(
        st["completionTime"].is_string() && st["startTime"].is_string(),
        "{st}"
    );
    let c = condition(&done, "Succeeded");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("Succeeded"))
    );
    assert!(c["message"]
        .as_str()
        .unwrap()
        .contains(report["modelDigest"].as_str().unwrap()));
    // Events say what happened.
    let reasons: Vec<String> = cluster.events("tiny-1").into_iter().map(|e| e.1).collect();
    assert!(reasons.contains(&"Started".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Succeeded".to_string()), "{reasons:?}");
    // The run is a Legion run like any other: its log has the pod's.
    let logs = l.ok(&["runs", "logs", &id]);
    assert!(logs.contains("[collect] stored"), "{logs}");
    assert_eq!(cluster.jobs().len(), 1, "one Job for one training");
}

#[test]
fn a_failing_training_says_why_in_its_condition() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let op = Operator::start(&l, &cluster, &[]);
    cluster.toolchain("python", "python");
    cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    cluster.training("tiny-1", "python");
    let mt = cluster.started(&op, "modeltrainings", "tiny-1");
    let job = cluster.wait_job(&op, &run_id(&mt));
    cluster.rt.block_on(async {
        let pod = cluster
            .emu
            .pod_for_job(&job, &[("step-train", "loading\nValueError: bad column\n")])
            .await;
        cluster
            .emu
            .kubelet(
                NS,
                &pod,
                json!({"phase": "Failed", "initContainerStatuses": [
                    status("fetch", done(0, "Completed", "")),
                    status("step-train", done(3, "Error", "ValueError: bad column\n"))]}),
            )
            .await;
    });
    let failed = cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Failed");
    let c = condition(&failed, "Succeeded");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("StepFailed"))
    );
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("container 'step-train' exited with code 3: ValueError: bad column"),
        "{message}"
    );
    assert!(
        message.contains("[step-train] loading"),
        "the last log lines: {message}"
    );
    let warnings: Vec<_> = cluster
        .events("tiny-1")
        .into_iter()
        .filter(|e| e.0 == "Warning")
        .collect();
    assert!(warnings.iter().any(|e| e.1 == "StepFailed"), "{warnings:?}");
}

#[test]
fn bad_input_fails_with_a_clear_condition_and_no_job() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        r#"{"allowedImages": ["registry.example/*"]}"#,
    )
    .unwrap();
    let op = Operator::start(&l, &cluster, &["--policy", policy.path().to_str().unwrap()]);

    // A toolchain that does not exist.
    cluster.training("no-toolchain", "nope");
    let failed = cluster.wait_phase(&op, &path("modeltrainings", "no-toolchain"), "Failed");
    let c = condition(&failed, "Succeeded");
    assert_eq!(c["reason"], "ToolchainNotFound");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("no Toolchain 'nope' in namespace 'ml'"),
        "{c}"
    );
    assert_eq!(condition(&failed, "Accepted")["status"], "False");

    // A builtin that is not one.
    cluster.toolchain("torch", "pytorch");
    let tc = cluster.wait_phase(&op, &path("toolchains", "torch"), "Failed");
    assert_eq!(condition(&tc, "Ready")["reason"], "UnknownBuiltin");
    assert!(condition(&tc, "Ready")["message"]
        .as_str()
        .unwrap()
        .contains("python, mlflow, docker-rest"));
    cluster.training("bad-toolchain", "torch");
    let failed = cluster.wait_phase(&op, &path("modeltrainings", "bad-toolchain"), "Failed");
    assert_eq!(
        condition(&failed, "Succeeded")["reason"],
        "ToolchainNotReady"
    );

    // A plan the admin's policy refuses (its image is not allowed).
    cluster.toolchain("python", "python");
    cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    cluster.training("refused", "python");
    let failed = cluster.wait_phase(&op, &path("modeltrainings", "refused"), "Failed");
    let c = condition(&failed, "Succeeded");
    assert_eq!(c["reason"], "PolicyViolation", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("is not in the allowed images"),
        "{c}"
    );

    assert_eq!(cluster.jobs(), Vec::<Value>::new(), "no Job was created");
}

#[test]
fn deleting_a_training_cancels_it_and_its_finalizer_removes_the_job() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let op = Operator::start(&l, &cluster, &[]);
    cluster.toolchain("python", "python");
    cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    cluster.training("tiny-1", "python");
    let mt = cluster.started(&op, "modeltrainings", "tiny-1");
    let id = run_id(&mt);
    cluster.wait_job(&op, &id);
    cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Running");
    cluster
        .rt
        .block_on(cluster.emu.delete(&path("modeltrainings", "tiny-1")));
    let deadline = Instant::now() + Duration::from_secs(300);
    while cluster.get(&path("modeltrainings", "tiny-1")).is_some() || !cluster.jobs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the training or its Job stayed:\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = l.json(&["runs", "show", &id]);
    assert_eq!(run["state"], "cancelled", "{run}");
}

#[test]
fn an_operator_restarted_mid_run_finds_the_job_by_label_and_finishes() {
    let cluster = Cluster::start();
    let first = Legion::new();
    let mut op = Operator::start(&first, &cluster, &[]);
    cluster.toolchain("python", "python");
    cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    cluster.training("tiny-1", "python");
    let mt = cluster.started(&op, "modeltrainings", "tiny-1");
    let id = run_id(&mt);
    let job = cluster.wait_job(&op, &id);
    cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Running");
    op.kill();

    // A new operator, with a data directory of its own (a pod without a
    // volume): it knows the run only from the status and the Job's label.
    let second = Legion::new();
    let op = Operator::start(&second, &cluster, &[]);
    let report = cluster.succeed_training(&job);
    let done = cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Succeeded");
    assert_eq!(
        done["status"]["runId"],
        id.as_str(),
        "the same run, not a new one"
    );
    assert_eq!(done["status"]["modelDigest"], report["modelDigest"]);
    assert_eq!(cluster.jobs().len(), 1, "no second Job");
    let events = cluster.events("tiny-1");
    assert!(events.iter().any(|e| e.1 == "Resumed"), "{events:?}");
    let logs = second.ok(&["runs", "logs", &id]);
    assert!(logs.contains("[collect] stored"), "{logs}");
}

#[test]
fn of_two_operator_replicas_one_leads_and_the_other_takes_over() {
    let cluster = Cluster::start();
    let (la, lb) = (Legion::new(), Legion::new());
    let election = [
        "--leader-election",
        "--lease-duration",
        "4s",
        "--lease-renew",
        "1s",
    ];
    let mut a = Operator::start(
        &la,
        &cluster,
        &[&election[..], &["--identity", "a"]].concat(),
    );
    // `a` leads before `b` starts: then which one leads is known.
    let lease = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/legion-operator");
    cluster.wait(&a, &lease, "held by a", |l| {
        l["spec"]["holderIdentity"] == "a"
    });
    let b = Operator::start(
        &lb,
        &cluster,
        &[&election[..], &["--identity", "b"]].concat(),
    );
    cluster.toolchain("python", "python");
    cluster.wait_phase(&a, &path("toolchains", "python"), "Ready");
    cluster.training("tiny-1", "python");
    let mt = cluster.started(&a, "modeltrainings", "tiny-1");
    cluster.wait_job(&a, &run_id(&mt));
    assert!(b.log().contains("another replica leads"), "{}", b.log());
    assert!(!b.log().contains("leading: reconciling"), "{}", b.log());
    assert_eq!(
        lb.json(&["runs", "ls"]),
        json!([]),
        "the standby ran nothing"
    );

    // The leader dies; the standby takes the lease and the training on.
    a.kill();
    cluster.wait(&b, &lease, "taken by b", |l| {
        l["spec"]["holderIdentity"] == "b"
    });
    let job = cluster.jobs().remove(0);
    let report = cluster.succeed_training(&job);
    let done = cluster.wait_phase(&b, &path("modeltrainings", "tiny-1"), "Succeeded");
    assert_eq!(done["status"]["modelDigest"], report["modelDigest"]);
    assert_eq!(cluster.jobs().len(), 1, "one Job in all");
    let lease = cluster.get(&lease).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
}

#[test]
fn a_leader_stopped_by_sigterm_releases_its_lease_and_leaves_its_runs_going() {
    let cluster = Cluster::start();
    let l = Legion::new();
    // A long lease: only a release lets another replica in soon.
    let election = [
        "--leader-election",
        "--identity",
        "a",
        "--lease-duration",
        "600s",
        "--lease-renew",
        "1s",
    ];
    let mut a = Operator::start(&l, &cluster, &election);
    let lease = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/legion-operator");
    cluster.wait(&a, &lease, "held by a", |l| {
        l["spec"]["holderIdentity"] == "a"
    });
    cluster.toolchain("python", "python");
    cluster.wait_phase(&a, &path("toolchains", "python"), "Ready");
    cluster.training("tiny-1", "python");
    let mt = cluster.started(&a, "modeltrainings", "tiny-1");
    cluster.wait_job(&a, &run_id(&mt));
    cluster.wait_phase(&a, &path("modeltrainings", "tiny-1"), "Running");
    let exit = a.terminate();
    assert!(exit.success(), "{exit}: {}", a.log());
    let released = cluster.get(&lease).unwrap();
    assert!(
        released["spec"]["holderIdentity"].is_null(),
        "the lease is released before the process ends: {released}"
    );
    // The run goes on: its Job is still there, the training still Running.
    assert_eq!(cluster.jobs().len(), 1);
    assert_eq!(
        cluster.get(&path("modeltrainings", "tiny-1")).unwrap()["status"]["phase"],
        "Running"
    );
}

/// A training `tiny-1` whose pod succeeded; returns collect's report.
fn trained(cluster: &Cluster, op: &Operator) -> Value {
    cluster.training("tiny-1", "python");
    let mt = cluster.started(op, "modeltrainings", "tiny-1");
    let job = cluster.wait_job(op, &run_id(&mt));
    cluster.succeed_training(&job)
}

#[test]
fn a_packaging_waits_for_its_training_and_its_pod_pushes_the_image() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let op = Operator::start(&l, &cluster, &[]);
    cluster.toolchain("python", "python");
    cluster.toolchain("docker-rest", "docker-rest");
    cluster.wait_phase(&op, &path("toolchains", "python"), "Ready");
    let packager = cluster.wait_phase(&op, &path("toolchains", "docker-rest"), "Ready");
    assert_eq!(packager["status"]["kinds"], json!(["packager", "server"]));
    // Created before its training exists: it waits, and says so.
    cluster.create(
        "modelpackagings",
        "ModelPackaging",
        "tiny-1",
        json!({"trainingRef": "tiny-1", "base": cluster.base}),
    );
    let waiting = cluster.wait(&op, &path("modelpackagings", "tiny-1"), "waiting", |o| {
        o["status"]["conditions"].is_array()
    });
    assert_eq!(waiting["status"]["phase"], "Pending", "{waiting:#}");
    let accepted = condition(&waiting, "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "TrainingNotFound", "{waiting:#}");
    assert_eq!(condition(&waiting, "Succeeded")["status"], "Unknown");
    let report = trained(&cluster, &op);
    cluster.wait_phase(&op, &path("modeltrainings", "tiny-1"), "Succeeded");

    let mp = cluster.started(&op, "modelpackagings", "tiny-1");
    let job = cluster.wait_job(&op, &run_id(&mp));
    let spec = step_spec(container(&job, "package"));
    // The model the training pushed, pinned by its digest.
    let model = spec["model"].as_str().unwrap();
    assert!(
        model.ends_with(report["modelDigest"].as_str().unwrap()),
        "{model}"
    );

    // The pod: a fresh data dir, the real packaging.
    let image = cluster.succeed_packaging(&job);
    let done = cluster.wait_phase(&op, &path("modelpackagings", "tiny-1"), "Succeeded");
    assert_eq!(done["status"]["imageDigest"], image["imageDigest"]);
    assert_eq!(done["status"]["imageRef"], image["imageRef"]);
    use sha2::Digest as _;
    let raw = cluster.registry.raw_manifest("legion/images/tiny:1");
    assert_eq!(
        image["imageDigest"],
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)))
    );
}

/// Trains `tiny:1` on this machine and packages it into the registry as
/// `legion/images/tiny:1`; returns the image's reference and digest.
fn packaged_image(cluster: &Cluster, l: &Legion) -> (String, String) {
    common::train_tiny(l, "tiny", "1");
    let image = format!("{}/legion/images/tiny:1", cluster.registry.addr);
    l.ok(&[
        "package",
        "tiny:1",
        "--base",
        &cluster.base,
        "--push",
        &image,
    ]);
    use sha2::Digest as _;
    let raw = cluster.registry.raw_manifest("legion/images/tiny:1");
    (
        image,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw))),
    )
}

#[test]
fn a_deployment_is_ready_only_when_its_replicas_are_available_and_reports_a_crash_loop() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let (image, digest) = packaged_image(&cluster, &l);
    let op = Operator::start(&l, &cluster, &[]);
    cluster.toolchain("docker-rest", "docker-rest");
    cluster.wait_phase(&op, &path("toolchains", "docker-rest"), "Ready");
    cluster.create(
        "modeldeployments",
        "ModelDeployment",
        "tiny",
        json!({"image": image, "minReplicas": 1, "maxReplicas": 3, "resources": {"cpu": "500m", "memory": "256Mi"}}),
    );
    let deploying = cluster.wait_phase(&op, &path("modeldeployments", "tiny"), "Deploying");
    assert_eq!(deploying["status"]["imageDigest"], digest.as_str());
    let ready = condition(&deploying, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("RollingOut"))
    );
    assert_eq!(
        deploying["status"]["url"],
        "http://tiny.ml.svc.cluster.local"
    );

    // The objects, from the packager's service plan.
    let deployment = cluster
        .get(&format!("/apis/apps/v1/namespaces/{NS}/deployments/tiny"))
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let pinned = format!("{}/legion/images/tiny@{digest}", cluster.registry.addr);
    assert_eq!(c["image"], pinned.as_str(), "the image pinned by digest");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/v2/health/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/v2/health/live");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["kind"],
        "ModelDeployment"
    );
    let service = cluster
        .get(&format!("/api/v1/namespaces/{NS}/services/tiny"))
        .expect("a Service");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let hpa = cluster
        .get(&format!(
            "/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/tiny"
        ))
        .expect("an autoscaler: minReplicas < maxReplicas");
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].as_i64(),
            hpa["spec"]["maxReplicas"].as_i64()
        ),
        (Some(1), Some(3))
    );
    let mut objects: Vec<Value> = vec![deployment.clone(), service, hpa];
    for o in &mut objects {
        // What the API server adds is not the operator's to validate.
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            o["metadata"].as_object_mut().unwrap().remove(k);
        }
        o.as_object_mut().unwrap().remove("status");
    }
    let (valid, report) = common::kube_validate_all(&objects);
    assert!(valid, "{report}");

    // The server crash-loops: the condition says so, with its last line.
    let labels = deployment["spec"]["template"]["metadata"]["labels"].clone();
    cluster.rt.block_on(cluster.emu.post(
        &format!("/api/v1/namespaces/{NS}/pods"),
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "tiny-abc", "namespace": NS, "labels": labels,
                         "annotations": {"legion.test/log.model": "loading tiny\nKeyError: 'model'\n"}},
            "spec": pod,
            "status": {"phase": "Running", "containerStatuses": [{"name": "model", "image": pinned, "imageID": "",
                "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1}}}]}}),
    ));
    let failed = cluster.wait_phase(&op, &path("modeldeployments", "tiny"), "Failed");
    let c = condition(&failed, "Ready");
    assert_eq!(c["reason"], "CrashLoop", "{c}");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("KeyError: 'model'") && message.contains("4 restarts"),
        "{message}"
    );

    // Fixed: the pod goes, the rollout completes; Ready only then.
    cluster.rt.block_on(
        cluster
            .emu
            .delete(&format!("/api/v1/namespaces/{NS}/pods/tiny-abc")),
    );
    let back = cluster.wait_phase(&op, &path("modeldeployments", "tiny"), "Deploying");
    assert_eq!(condition(&back, "Ready")["status"], "False");
    cluster.rt.block_on(cluster.emu.patch(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/tiny/status"),
        &json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}}),
    ));
    // Once the operator has seen two available replicas (written with the
    // phase), the phase must not be Ready: one of them is old.
    let still = cluster.wait(
        &op,
        &path("modeldeployments", "tiny"),
        "seeing 2 available replicas",
        |o| o["status"]["availableReplicas"] == 2,
    );
    assert_ne!(
        still["status"]["phase"], "Ready",
        "an old replica is still there: {still:#}"
    );
    cluster.rt.block_on(cluster.emu.patch(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/tiny/status"),
        &json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}),
    ));
    let ready = cluster.wait_phase(&op, &path("modeldeployments", "tiny"), "Ready");
    assert_eq!(ready["status"]["availableReplicas"], 1);
    assert_eq!(condition(&ready, "Ready")["status"], "True");

    // Deleted: its objects go with it.
    cluster
        .rt
        .block_on(cluster.emu.delete(&path("modeldeployments", "tiny")));
    let gone = |p: &str| cluster.get(p).is_none();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !(gone(&path("modeldeployments", "tiny"))
        && gone(&format!("/apis/apps/v1/namespaces/{NS}/deployments/tiny"))
        && gone(&format!("/api/v1/namespaces/{NS}/services/tiny"))
        && gone(&format!(
            "/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/tiny"
        )))
    {
        assert!(Instant::now() < deadline, "something stayed:\n{}", op.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deployment_of_an_image_that_does_not_exist_fails_and_creates_nothing() {
    let cluster = Cluster::start();
    let l = Legion::new();
    let op = Operator::start(&l, &cluster, &[]);
    cluster.toolchain("docker-rest", "docker-rest");
    cluster.wait_phase(&op, &path("toolchains", "docker-rest"), "Ready");
    let image = format!("{}/legion/images/nope:1", cluster.registry.addr);
    cluster.create(
        "modeldeployments",
        "ModelDeployment",
        "nope",
        json!({"image": image}),
    );
    let failed = cluster.wait_phase(&op, &path("modeldeployments", "nope"), "Failed");
    let c = condition(&failed, "Ready");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("ImageNotFound"))
    );
    assert!(c["message"].as_str().unwrap().contains(&image), "{c}");
    for list in [
        format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        format!("/api/v1/namespaces/{NS}/services"),
        format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"),
    ] {
        assert_eq!(cluster.get(&list).unwrap()["items"], json!([]), "{list}");
    }
    let warnings = cluster.events("nope");
    assert!(
        warnings
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "ImageNotFound"),
        "{warnings:?}"
    );
}
