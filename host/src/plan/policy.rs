//! The admin's policy: rules every plan must obey before anything runs.
//! A plan that breaks one is refused with every violation listed; it is
//! never patched into shape.
//!
//! The policy lives in `<data>/policy.json`; without one, only the rules
//! that keep a plan inside its sandbox apply.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::{ImagePlan, Layer, Plan};
use crate::oci::layer::image_path;
use crate::Error;

/// Admin rules for plans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Policy {
    /// Images steps may use: exact references, or prefixes ending in `*`
    /// (`registry.local/ml/*`). Empty allows any image.
    pub allowed_images: Vec<String>,
    /// Most CPU a step may ask for, in thousandths of a core.
    pub max_cpu_millis: Option<u32>,
    /// Most memory a step may ask for, in bytes.
    pub max_memory_bytes: Option<u64>,
    /// Most GPUs a step may ask for.
    pub max_gpus: Option<u32>,
    /// Most steps in one plan.
    pub max_steps: Option<usize>,
}

/// Variables the host sets for every step; a plan may not redefine them.
const RESERVED_ENV: &[&str] = &[
    "LEGION_RUN_ID",
    "LEGION_WORKSPACE",
    "LEGION_SOURCE_DIR",
    "LEGION_DATA_DIR",
    "LEGION_OUTPUT_DIR",
    "LEGION_MODEL_NAME",
    "LEGION_MODEL_VERSION",
    "LEGION_MODEL_DIR",
    "PATH",
    "VIRTUAL_ENV",
];

impl Policy {
    /// Reads the policy file, or the default policy if there is none.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => super::parse_json(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Checks `plan` from `toolchain`; every violation is listed.
    pub fn check(&self, toolchain: &str, plan: &Plan) -> Result<(), Error> {
        let problems = plan_problems(plan);
        if !problems.is_empty() {
            return Err(Error::BadPlan {
                toolchain: toolchain.to_string(),
                problems,
            });
        }
        let mut v = Vec::new();
        if let Some(max) = self.max_steps {
            if plan.steps.len() > max {
                v.push(format!(
                    "{} steps, more than the {max} allowed",
                    plan.steps.len()
                ));
            }
        }
        for (i, s) in plan.steps.iter().enumerate() {
            let at = format!("steps[{i}] '{}'", s.name);
            if let Some(why) = self.refused_image(&s.image) {
                v.push(format!("{at}: {why}"));
            }
            let r = &s.resources;
            if let (Some(max), Some(asked)) = (self.max_cpu_millis, r.cpu_millis) {
                if asked > max {
                    v.push(format!("{at}: cpuMillis {asked} exceeds the cap of {max}"));
                }
            }
            if let (Some(max), Some(asked)) = (self.max_memory_bytes, r.memory_bytes) {
                if asked > max {
                    v.push(format!(
                        "{at}: memoryBytes {asked} exceeds the cap of {max}"
                    ));
                }
            }
            if let (Some(max), Some(asked)) = (self.max_gpus, r.gpus) {
                if asked > max {
                    v.push(format!("{at}: gpus {asked} exceeds the cap of {max}"));
                }
            }
        }
        verdict(toolchain, v)
    }

    /// Why `image` may not be used, when an allow-list is set and it is
    /// not on it.
    fn refused_image(&self, image: &str) -> Option<String> {
        (!self.allowed_images.is_empty()
            && !self.allowed_images.iter().any(|p| image_matches(p, image)))
        .then(|| {
            format!(
                "image '{image}' is not in the allowed images ({})",
                self.allowed_images.join(", ")
            )
        })
    }
}

impl Policy {
    /// Checks an image plan: the base is an allowed image, every path it
    /// places files at stays inside the image, the model and server layers
    /// appear at most once, env names are valid, requirements carry no pip
    /// options, and the image runs as a user other than root.
    pub fn check_image(&self, toolchain: &str, plan: &ImagePlan) -> Result<(), Error> {
        let mut v = Vec::new();
        if plan.base.trim().is_empty() {
            v.push("the base image is empty".to_string());
        } else if let Some(why) = self.refused_image(&plan.base) {
            v.push(format!("base {why}"));
        }
        let (mut models, mut servers) = (0, 0);
        let check_path = |at: String, path: &str, v: &mut Vec<String>| {
            if let Err(e) = image_path(path) {
                v.push(format!("{at}: {e}"));
            }
        };
        for (i, layer) in plan.layers.iter().enumerate() {
            match layer {
                Layer::Model => models += 1,
                Layer::LegionServer(path) => {
                    servers += 1;
                    check_path(format!("layers[{i}] legionServer"), path, &mut v);
                }
                Layer::Files(files) => {
                    for (j, f) in files.iter().enumerate() {
                        check_path(format!("layers[{i}] files[{j}]"), &f.path, &mut v);
                    }
                }
                Layer::PythonPackages {
                    target,
                    requirements,
                } => {
                    check_path(format!("layers[{i}] pythonPackages"), target, &mut v);
                    refuse_pip_options(&format!("layers[{i}] "), requirements, &mut v);
                }
            }
        }
        if models > 1 {
            v.push(format!("the model layer appears {models} times"));
        }
        if servers > 1 {
            v.push(format!("the server layer appears {servers} times"));
        }
        for e in &plan.env {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                v.push(format!("env name '{}' is not valid", e.name));
            }
        }
        match plan.user.as_deref().map(str::trim) {
            None | Some("") => v.push("the image names no user: it would run as root".into()),
            Some(u) if matches!(u.split(':').next(), Some("0" | "root")) => {
                v.push(format!("user '{u}' is root; images run unprivileged"))
            }
            Some(_) => {}
        }
        verdict(toolchain, v)
    }
}

/// Pip options (`--index-url`, `-e`, `-r`) would let a plan choose where
/// code comes from; only plain requirement lines pass.
fn refuse_pip_options(at: &str, requirements: &[String], v: &mut Vec<String>) {
    for r in requirements {
        if r.trim_start().starts_with('-') {
            v.push(format!(
                "{at}python requirement '{r}': pip options are not allowed in a plan"
            ));
        }
    }
}

/// The plan passes when nothing was found; else every violation is listed.
/// What makes a training plan one Legion cannot run, whatever the admin
/// allows: no steps, unnamed or twice-named steps, an empty command, a
/// working folder outside the source, env names that are invalid or the
/// host's own, pip options among the requirements. These are faults of the
/// toolchain (`Error::BadPlan`), told apart from the admin's rules.
pub fn plan_problems(plan: &Plan) -> Vec<String> {
    let mut v = Vec::new();
    if plan.steps.is_empty() {
        v.push("the plan has no steps".to_string());
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let at = format!("steps[{i}] '{}'", s.name);
        if s.name.trim().is_empty() {
            v.push(format!("steps[{i}]: the name is empty"));
        } else if !names.insert(s.name.as_str()) {
            v.push(format!("{at}: the name is used twice"));
        }
        if s.command.first().is_none_or(|c| c.trim().is_empty()) {
            v.push(format!("{at}: the command is empty"));
        }
        if let Some(dir) = &s.working_dir {
            if !stays_inside(dir) {
                v.push(format!("{at}: workingDir '{dir}' leaves the source folder"));
            }
        }
        for e in &s.env {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                v.push(format!("{at}: env name '{}' is not valid", e.name));
            } else if RESERVED_ENV.contains(&e.name.as_str()) {
                v.push(format!(
                    "{at}: env {} is set by the host and cannot be changed",
                    e.name
                ));
            }
        }
    }
    if let Some(py) = &plan.python {
        refuse_pip_options("", &py.requirements, &mut v);
    }
    v
}

fn verdict(toolchain: &str, violations: Vec<String>) -> Result<(), Error> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::Policy {
            toolchain: toolchain.to_string(),
            violations,
        })
    }
}

fn stays_inside(dir: &str) -> bool {
    let mut depth = 0i32;
    for c in Path::new(dir).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn image_matches(pattern: &str, image: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix),
        None => pattern == image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{EnvVar, PythonEnvironment, Step};

    fn step(name: &str, image: &str) -> Step {
        Step {
            name: name.into(),
            image: image.into(),
            command: vec!["python".into()],
            ..Step::default()
        }
    }

    #[test]
    fn image_plans_that_escape_or_run_as_root_are_refused() {
        use crate::plan::FileEntry;
        let plan = ImagePlan {
            base: "python:3.11".into(),
            layers: vec![
                Layer::Model,
                Layer::Model,
                Layer::Files(vec![FileEntry {
                    path: "/../etc/passwd".into(),
                    contents: vec![],
                    mode: 0o644,
                }]),
                Layer::LegionServer("relative/serve".into()),
            ],
            user: Some("0:0".into()),
            ..ImagePlan::default()
        };
        let policy = Policy {
            allowed_images: vec!["registry.local/*".into()],
            ..Policy::default()
        };
        let err = policy
            .check_image("docker-rest", &plan)
            .unwrap_err()
            .to_string();
        for needle in [
            "base image 'python:3.11' is not in the allowed images",
            "layers[2] files[0]: image plan: path '/../etc/passwd' is refused: it escapes",
            "layers[3] legionServer: image plan: path 'relative/serve' is refused: it is not absolute",
            "the model layer appears 2 times",
            "user '0:0' is root",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let ok = ImagePlan {
            base: "registry.local/python".into(),
            layers: vec![
                Layer::Model,
                Layer::LegionServer("/opt/legion/bin/legion-serve".into()),
            ],
            user: Some("1000:1000".into()),
            ..ImagePlan::default()
        };
        policy.check_image("docker-rest", &ok).unwrap();
    }

    #[test]
    fn default_policy_accepts_a_plain_plan() {
        let plan = Plan {
            steps: vec![step("train", "python:3.11")],
            python: None,
        };
        Policy::default().check("t", &plan).unwrap();
    }

    #[test]
    fn sandbox_rules_apply_without_a_policy_file() {
        let mut bad = step("train", "img");
        bad.working_dir = Some("../../etc".into());
        bad.env.push(EnvVar {
            name: "LEGION_OUTPUT_DIR".into(),
            value: "/tmp".into(),
        });
        let mut empty = step("train", "img");
        empty.command.clear();
        let plan = Plan {
            steps: vec![bad, empty],
            python: Some(PythonEnvironment {
                python_version: None,
                requirements: vec!["--extra-index-url http://x".into()],
            }),
        };
        let err = Policy::default()
            .check("tc", &plan)
            .unwrap_err()
            .to_string();
        for expected in [
            "leaves the source folder",
            "LEGION_OUTPUT_DIR is set by the host",
            "used twice",
            "command is empty",
            "pip options are not allowed",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in {err}");
        }
        assert!(
            err.starts_with("toolchain 'tc' returned a plan Legion cannot run"),
            "{err}"
        );
        assert!(!err.contains("policy"), "not an admin rule: {err}");
    }

    #[test]
    fn admin_rules_images_and_caps() {
        let p = Policy {
            allowed_images: vec!["registry.local/ml/*".into(), "python:3.11".into()],
            max_cpu_millis: Some(1000),
            ..Policy::default()
        };
        let mut s = step("train", "registry.local/ml/trainer:1");
        s.resources.cpu_millis = Some(500);
        p.check(
            "t",
            &Plan {
                steps: vec![s.clone()],
                python: None,
            },
        )
        .unwrap();
        s.image = "docker.io/evil:latest".into();
        s.resources.cpu_millis = Some(4000);
        let err = p
            .check(
                "t",
                &Plan {
                    steps: vec![s],
                    python: None,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image 'docker.io/evil:latest' is not in the allowed images"),
            "{err}"
        );
        assert!(
            err.contains("cpuMillis 4000 exceeds the cap of 1000"),
            "{err}"
        );
    }

    #[test]
    fn working_dir_inside_is_fine() {
        assert!(stays_inside("src/train"));
        assert!(stays_inside("a/../b"));
        assert!(!stays_inside("a/../../b"));
        assert!(!stays_inside("/abs"));
    }
}
