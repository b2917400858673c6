//! The Helm chart `helms/legion/`, rendered by real Helm (Helm v4's Go SDK
//! through `helm-python-sdk` from PyPI, no `helm` binary) with default and
//! non-default values; every rendered object and every CRD validated by
//! `kubernetes-validate --strict`; values that break `values.schema.json`
//! refused; the RBAC rules checked against what the operator uses; the
//! checked-in CRDs checked against `legion operator crds`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{kube_validate_all, legion_bin, repo_root, test_venv};
use serde_json::{json, Value};

/// Renders the chart with `values` as release `legion` in namespace `ml`.
/// `Ok(objects)` or `Err(Helm's message)`: a schema violation or a
/// template's `required`.
fn render(values: &Value) -> Result<(Vec<Value>, String), String> {
    const SCRIPT: &str = r#"
import json, sys, helm_python
chart = helm_python.Chart.load(sys.argv[1])
values = json.loads(sys.argv[2])
try:
    chart.validate_schema(values)
    out = chart.render(values, name="legion", namespace="ml", is_install=True)
except helm_python.HelmError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
print(json.dumps({"manifests": out}))
"#;
    let python = test_venv("test-helm", &["helm-python-sdk==0.2.2"]).join("bin/python");
    let out = Command::new(python)
        .args(["-c", SCRIPT])
        .arg(repo_root().join("helms/legion"))
        .arg(values.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm-python-sdk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Some(e) = answer["error"].as_str() {
        return Err(e.to_string());
    }
    let manifests: BTreeMap<String, String> =
        serde_json::from_value(answer["manifests"].clone()).unwrap();
    let mut objects = Vec::new();
    let mut notes = String::new();
    for (path, text) in manifests {
        if path.ends_with("NOTES.txt") {
            notes = text;
            continue;
        }
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}\n{text}"));
            if !v.is_null() {
                objects.push(v);
            }
        }
    }
    Ok((objects, notes))
}

fn rendered(values: &Value) -> (Vec<Value>, String) {
    render(values).unwrap_or_else(|e| panic!("the chart did not render: {e}"))
}

fn validate(objects: &[Value]) {
    let (ok, out) = kube_validate_all(objects);
    assert!(ok, "kubernetes-validate --strict refused:\n{out}");
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment").expect("a Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    serde_json::from_value(container(objects)["args"].clone()).unwrap()
}

fn env(objects: &[Value], name: &str) -> Option<Value> {
    container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

const REGISTRY: &str = "registry.example.com/ml";

#[test]
fn checked_in_crds_are_what_the_operator_generates_and_validate() {
    let out = Command::new(legion_bin())
        .args(["operator", "crds"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = repo_root().join("helms/legion/crds/legion-platform.org.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap();
    assert!(
        generated == checked_in,
        "{} is stale: run `legion operator crds > helms/legion/crds/legion-platform.org.yaml`",
        path.display()
    );
    let crds: Vec<Value> = serde_norway::Deserializer::from_str(&generated)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "toolchains.legion-platform.org",
            "modeltrainings.legion-platform.org",
            "modelpackagings.legion-platform.org",
            "modeldeployments.legion-platform.org"
        ]
    );
    for crd in &crds {
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"]["status"], json!({}), "{crd}");
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
        let conditions = &status["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        assert!(status["properties"]["phase"].is_object());
        assert!(!crd["spec"]["names"]["shortNames"][0].is_null());
        assert!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .len()
                >= 3
        );
    }
    // A started training or packaging is never silently re-run: the API
    // server refuses a changed spec.
    for kind in [1, 2] {
        let rules = &crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
            ["spec"]["x-kubernetes-validations"];
        assert!(
            rules
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["rule"] == "self == oldSelf"),
            "{rules}"
        );
    }
    validate(&crds);
    // The chart ships exactly these.
    let chart = std::fs::read_dir(repo_root().join("helms/legion/crds"))
        .unwrap()
        .count();
    assert_eq!(chart, 1);
}

#[test]
fn default_values_render_objects_that_validate() {
    let (objects, notes) = rendered(&json!({"registry": {"url": REGISTRY}}));
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "ConfigMap",
            "Deployment",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    validate(&objects);
    for o in &objects {
        assert_eq!(o["metadata"]["namespace"], "ml", "{o}");
    }
    let deployment = find(&objects, "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "legion");
    let c = container(&objects);
    assert_eq!(c["image"], "ghcr.io/legion-platform/legion:0.1.0");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let a = args(&objects);
    for want in [
        "operator",
        "run",
        "--namespace=ml",
        "--registry=registry.example.com/ml",
        "--legion-image=ghcr.io/legion-platform/legion:0.1.0",
        "--policy=/etc/legion/policy.json",
        "--leader-election",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
    }
    assert!(env(&objects, "LEGION_INSECURE_REGISTRIES").is_none());
    assert!(env(&objects, "LEGION_REGISTRY_USERNAME").is_none());
    assert_eq!(
        pod["volumes"][0],
        json!({"name": "data", "emptyDir": {}}),
        "no persistence by default"
    );
    // The default policy is valid policy for the host (unknown fields are
    // refused there).
    let policy: legion::plan::Policy = serde_json::from_str(
        find(&objects, "ConfigMap").unwrap()["data"]["policy.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(policy, legion::plan::Policy::default());
    // NOTES say how to register the built-ins and start a training.
    for builtin in ["builtin: python", "builtin: mlflow", "builtin: docker-rest"] {
        assert!(notes.contains(builtin), "{notes}");
    }
    assert!(notes.contains("kind: ModelTraining"), "{notes}");
    assert!(notes.contains("kubectl -n ml"), "{notes}");
}

#[test]
fn non_default_values_render_what_they_say_and_validate() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let values = json!({
        "image": {"repository": "registry.internal:5000/platform/legion", "digest": digest, "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "operator": {
            "replicas": 2,
            "leaderElection": true,
            "logLevel": "legion=debug",
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        },
        "registry": {"url": "registry.internal:5000/ml", "insecure": true, "credentialsSecret": "registry-creds"},
        "policy": {"allowedImages": ["registry.internal:5000/*"], "maxCpuMillis": 4000, "maxMemoryBytes": 8589934592u64, "maxGpus": 1},
        "jobs": {"ttlSecondsAfterFinished": 600, "unschedulableTimeout": "2m"},
        "persistence": {"enabled": true, "size": "20Gi", "storageClass": "fast"},
        "serviceAccount": {"create": false, "name": "legion-operator"},
    });
    let (objects, _) = rendered(&values);
    validate(&objects);
    assert!(find(&objects, "ServiceAccount").is_none());
    let binding = find(&objects, "RoleBinding").unwrap();
    assert_eq!(binding["subjects"][0]["name"], "legion-operator");
    let pvc = find(&objects, "PersistentVolumeClaim").expect("a claim");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "20Gi");
    let deployment = find(&objects, "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    assert_eq!(pod["nodeSelector"], json!({"pool": "system"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "pull"}]));
    let image = format!("registry.internal:5000/platform/legion@{digest}");
    assert_eq!(container(&objects)["image"], image.as_str());
    let a = args(&objects);
    assert!(a.contains(&format!("--legion-image={image}")), "{a:?}");
    assert!(a.contains(&"--ttl-seconds-after-finished=600".to_string()));
    assert!(a.contains(&"--unschedulable-timeout=2m".to_string()));
    assert!(
        a.contains(&"--registry-secret=registry-creds".to_string()),
        "the pods get the credentials too"
    );
    assert_eq!(
        env(&objects, "LEGION_INSECURE_REGISTRIES").unwrap()["value"],
        "registry.internal:5000"
    );
    assert_eq!(
        env(&objects, "LEGION_REGISTRY_PASSWORD").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "registry-creds", "key": "password"})
    );
    assert_eq!(env(&objects, "RUST_LOG").unwrap()["value"], "legion=debug");
    let policy: legion::plan::Policy = serde_json::from_str(
        find(&objects, "ConfigMap").unwrap()["data"]["policy.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(policy.allowed_images, ["registry.internal:5000/*"]);
    assert_eq!(policy.max_cpu_millis, Some(4000));
    assert_eq!(policy.max_memory_bytes, Some(8589934592));
    assert_eq!(policy.max_gpus, Some(1));
    assert_eq!(policy.max_steps, None);

    // Without leader election the flag is gone.
    let (objects, _) =
        rendered(&json!({"registry": {"url": REGISTRY}, "operator": {"leaderElection": false}}));
    assert!(!args(&objects).contains(&"--leader-election".to_string()));
}

#[test]
fn values_that_break_the_schema_are_refused_naming_the_value() {
    let cases = [
        (
            json!({"registry": {"url": REGISTRY}, "imageTag": "x"}),
            "imageTag",
        ),
        (
            json!({"registry": {"url": "Not A Registry"}}),
            "/registry/url",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "image": {"pullPolicy": "Sometimes"}}),
            "/image/pullPolicy",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "operator": {"replicas": -1}}),
            "/operator/replicas",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "image": {"digest": "latest"}}),
            "/image/digest",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "policy": {"maxGpus": "two"}}),
            "/policy/maxGpus",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "policy": {"maxSteps": 0}}),
            "/policy/maxSteps",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "jobs": {"unschedulableTimeout": "soon"}}),
            "/jobs/unschedulableTimeout",
        ),
        (
            json!({"registry": {"url": REGISTRY}, "persistence": {"size": "lots"}}),
            "/persistence/size",
        ),
    ];
    for (values, named) in cases {
        let e = render(&values).expect_err(&format!("{values} rendered"));
        assert!(
            e.contains(named),
            "{values}: the error does not name {named}: {e}"
        );
    }
    // The registry is required, and the message says what it is for.
    let e = render(&json!({})).expect_err("rendered without a registry");
    assert!(e.contains("registry.url is required"), "{e}");
}

/// What the operator does on the cluster, and so all its Role grants:
/// (API group, resources, verbs). Nothing cluster-wide; no `update`, no
/// secrets, no `*`.
const OPERATOR_RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "legion-platform.org",
        &[
            "toolchains",
            "modeltrainings",
            "modelpackagings",
            "modeldeployments",
        ],
        &["get", "list", "watch", "patch"],
    ),
    (
        "legion-platform.org",
        &[
            "toolchains/status",
            "modeltrainings/status",
            "modelpackagings/status",
            "modeldeployments/status",
        ],
        &["get", "patch"],
    ),
    (
        "batch",
        &["jobs"],
        &["get", "list", "watch", "create", "delete"],
    ),
    ("", &["pods"], &["get", "list", "watch"]),
    ("", &["pods/log"], &["get"]),
    (
        "apps",
        &["deployments"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "",
        &["services"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "autoscaling",
        &["horizontalpodautoscalers"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("events.k8s.io", &["events"], &["create", "patch"]),
    (
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "patch"],
    ),
];

type Rule = (String, Vec<String>, Vec<String>);

/// A Role's rules as (API group, resources, verbs), one group a rule.
fn rules_of(role: &Value) -> Vec<Rule> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let groups: Vec<String> = serde_json::from_value(r["apiGroups"].clone()).unwrap();
            assert_eq!(groups.len(), 1, "one API group a rule: {r}");
            (
                groups[0].clone(),
                serde_json::from_value(r["resources"].clone()).unwrap(),
                serde_json::from_value(r["verbs"].clone()).unwrap(),
            )
        })
        .collect()
}

fn owned(rules: &[(&str, &[&str], &[&str])]) -> Vec<Rule> {
    rules
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.iter().map(|s| s.to_string()).collect(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn rbac_grants_only_what_the_operator_uses_in_its_namespace() {
    let (objects, _) = rendered(&json!({"registry": {"url": REGISTRY}}));
    assert!(find(&objects, "ClusterRole").is_none());
    assert!(find(&objects, "ClusterRoleBinding").is_none());
    let role = find(&objects, "Role").unwrap();
    assert_eq!(rules_of(role), owned(OPERATOR_RULES));
    let binding = find(&objects, "RoleBinding").unwrap();
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
}

/// What the API does on the cluster (`host/src/api/cluster.rs`), and so
/// all its Role grants.
const API_RULES: &[(&str, &[&str], &[&str])] = &[
    (
        "legion-platform.org",
        &["modeltrainings", "modelpackagings", "modeldeployments"],
        &["get", "list", "create", "delete"],
    ),
    ("legion-platform.org", &["toolchains"], &["get"]),
];

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_api_is_deployed_on_the_operators_database_with_its_own_least_rights() {
    let values = json!({
        "registry": {"url": REGISTRY},
        "database": {"urlSecret": "legion-db"},
        "api": {"enabled": true, "tokensSecret": "legion-tokens", "service": {"port": 8080}},
    });
    let (objects, _) = rendered(&values);
    validate(&objects);
    let deployment = named(&objects, "Deployment", "legion-api");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "legion-api");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let c = &pod["containers"][0];
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    assert_eq!(
        args,
        [
            "server",
            "--executor=kube",
            "--namespace=ml",
            "--listen=0.0.0.0:8080",
            "--tokens=/etc/legion-api/tokens.json"
        ]
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let database = json!({"name": "LEGION_DATABASE", "valueFrom": {"secretKeyRef": {"name": "legion-db", "key": "url"}}});
    let env = c["env"].as_array().unwrap();
    assert!(env.contains(&database), "{env:?}");
    // The operator writes the runs the API reads: the same database.
    let op = &named(&objects, "Deployment", "legion-operator")["spec"]["template"]["spec"]
        ["containers"][0];
    assert!(op["env"].as_array().unwrap().contains(&database), "{op:#}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    let service = named(&objects, "Service", "legion-api");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_ne!(
        deployment["spec"]["selector"]["matchLabels"],
        named(&objects, "Deployment", "legion-operator")["spec"]["selector"]["matchLabels"],
        "the API's Service must not select the operator's pods"
    );
    let role = named(&objects, "Role", "legion-api");
    assert_eq!(rules_of(role), owned(API_RULES));
    assert_eq!(
        named(&objects, "RoleBinding", "legion-api")["subjects"][0]["name"],
        "legion-api"
    );

    // JWTs instead of tokens: the identity provider's URL, issuer, audience.
    let (objects, _) = rendered(&json!({
        "registry": {"url": REGISTRY},
        "database": {"urlSecret": "legion-db"},
        "api": {"enabled": true, "jwt": {"jwksUrl": "https://sso.example/realms/ml/protocol/openid-connect/certs",
                 "issuer": "https://sso.example/realms/ml", "audience": "legion", "rolesClaim": "realm_access.roles"}},
    }));
    validate(&objects);
    let c =
        &named(&objects, "Deployment", "legion-api")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    for want in [
        "--jwks=https://sso.example/realms/ml/protocol/openid-connect/certs",
        "--jwt-issuer=https://sso.example/realms/ml",
        "--jwt-audience=legion",
        "--jwt-roles-claim=realm_access.roles",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    assert!(!args.iter().any(|a| a.starts_with("--tokens")), "{args:?}");

    // What the API cannot run without is refused, saying what for.
    let e = render(
        &json!({"registry": {"url": REGISTRY}, "api": {"enabled": true, "tokensSecret": "t"}}),
    )
    .expect_err("an API without a database rendered");
    assert!(e.contains("database.urlSecret is required"), "{e}");
    let e = render(&json!({"registry": {"url": REGISTRY}, "database": {"urlSecret": "db"}, "api": {"enabled": true}}))
        .expect_err("an API without authentication rendered");
    assert!(e.contains("api.tokensSecret or api.jwt.jwksUrl"), "{e}");
    let e = render(
        &json!({"registry": {"url": REGISTRY}, "database": {"urlSecret": "db"},
        "api": {"enabled": true, "jwt": {"jwksUrl": "https://sso/certs"}}}),
    )
    .expect_err("a JWKS without an issuer rendered");
    assert!(e.contains("api.jwt.issuer is required"), "{e}");
    // Off by default: the default render has no API objects.
    let (objects, _) = rendered(&json!({"registry": {"url": REGISTRY}}));
    assert!(objects
        .iter()
        .all(|o| !o["metadata"]["name"].as_str().unwrap().ends_with("-api")));
}

#[test]
fn trusted_keys_are_mounted_into_the_operator_and_the_api() {
    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let values = json!({
        "registry": {"url": REGISTRY},
        "database": {"urlSecret": "legion-db"},
        "api": {"enabled": true, "tokensSecret": "legion-tokens"},
        "trust": {"keys": {"ci": PEM}},
    });
    let (objects, _) = rendered(&values);
    validate(&objects);
    let keys = named(&objects, "ConfigMap", "legion-trusted-keys");
    assert_eq!(keys["data"]["ci.pub"], PEM);
    for deployment in ["legion-operator", "legion-api"] {
        let pod = &named(&objects, "Deployment", deployment)["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let variable = json!({"name": "LEGION_TRUSTED_KEYS", "value": "/etc/legion-trust"});
        assert!(
            c["env"].as_array().unwrap().contains(&variable),
            "{deployment}: {c:#}"
        );
        let mount =
            json!({"name": "trusted-keys", "mountPath": "/etc/legion-trust", "readOnly": true});
        assert!(
            c["volumeMounts"].as_array().unwrap().contains(&mount),
            "{deployment}: {c:#}"
        );
        let volume = json!({"name": "trusted-keys", "configMap": {"name": "legion-trusted-keys"}});
        assert!(
            pod["volumes"].as_array().unwrap().contains(&volume),
            "{deployment}: {pod:#}"
        );
    }
    // Without keys: no ConfigMap, no variable.
    let (objects, _) = rendered(&json!({"registry": {"url": REGISTRY}}));
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["name"] == "legion-trusted-keys"));
    assert!(env(&objects, "LEGION_TRUSTED_KEYS").is_none());
    // Not a public key: refused by the schema, naming it.
    let err = render(&json!({"registry": {"url": REGISTRY}, "trust": {"keys": {"ci": "hello"}}}))
        .unwrap_err();
    assert!(err.contains("trust") && err.contains("ci"), "{err}");
}
