//! Step images: on a cluster a plan's Python environment is baked into the
//! image its steps run in — the step's base image plus one dependency
//! layer, made by the packaging builder (`package::deps`) and pushed to the
//! configured registry — so a pod never pip-installs at run time.
//!
//! A step image is named by a hash of what it is made of (the base's
//! digest, the Python version, the requirement lines, the platform tags):
//! `REPOSITORY:step-<hash>`. When the registry already has that tag the
//! image is reused as it is, and nothing is built or uploaded.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::exec::RunLog;
use crate::home::Home;
use crate::oci::image::{compose, BaseImage, ImageSettings};
use crate::oci::layout::Layout;
use crate::oci::registry::{parse_reference, Registry};
use crate::package::deps::{python_layer, DepsRequest};
use crate::package::{base_python, push_sources, resolve_base};
use crate::plan::PythonEnvironment;
use crate::Error;

/// Where the dependencies go in a step image (on `PYTHONPATH`; console
/// scripts such as `mlflow` in its `bin/`, on `PATH`).
pub const STEP_PYTHON: &str = "/opt/legion/python";

/// A step image ready in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepImage {
    /// `REPOSITORY@sha256:…`: pinned, as every runtime accepts it.
    pub reference: String,
    /// `REPOSITORY:step-<hash>`: the tag it is found by.
    pub tag: String,
    /// Whether it was already there (nothing built, nothing uploaded).
    pub reused: bool,
}

fn key(base: &BaseImage, python: &str, requirements: &[String], platforms: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "step-image v1\n{}\n{python}\n{}",
        base.digest,
        platforms.join(",")
    ));
    for r in requirements {
        h.update(b"\n");
        h.update(r.trim());
    }
    hex::encode(&h.finalize()[..12])
}

/// The step image for `env` on `step_base`, in `repository`
/// (`REGISTRY/REPO`): found by its hash, or else — with `build` — built
/// and pushed. Without `build` (a dry run) nothing is built or pushed: a
/// missing image comes back named by the tag a run would push, with
/// `reused: false`. The base is resolved either way (a registry read).
pub async fn step_image(
    home: &Home,
    step_base: &str,
    env: &PythonEnvironment,
    repository: &str,
    build: bool,
    log: &RunLog,
) -> Result<StepImage, Error> {
    let base = resolve_base(step_base).await?;
    let images = Layout::open(home.images())?;
    let python = match &env.python_version {
        Some(v) => crate::oci::image::major_minor(v).ok_or_else(|| Error::InvalidArgument {
            field: "python version".into(),
            message: format!("'{v}' is not MAJOR.MINOR"),
        })?,
        None => base_python(&base, &images).await?,
    };
    let platforms = base.pip_platforms()?;
    let tag = format!("step-{}", key(&base, &python, &env.requirements, platforms));
    let target = parse_reference(&format!("{repository}:{tag}"), &tag)?;
    let registry = Registry::for_reference(&target);
    if let Some(digest) = registry.manifest_digest(&target).await? {
        log.note(&format!(
            "step image {}@{digest} (already built)",
            target.whole()
        ));
        return Ok(StepImage {
            reference: format!("{repository}@{digest}"),
            tag: target.whole(),
            reused: true,
        });
    }
    if !build {
        return Ok(StepImage {
            reference: target.whole(),
            tag: target.whole(),
            reused: false,
        });
    }
    log.note(&format!(
        "building step image {} on {} for Python {python}",
        target.whole(),
        base.name
    ));
    let (layer, _) = python_layer(
        &DepsRequest {
            target: STEP_PYTHON,
            requirements: &env.requirements,
            python_version: &python,
            platforms,
        },
        &home.python_layers(),
        &images,
        log,
    )
    .await?;
    let path = base
        .config
        .env("PATH")
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let settings = ImageSettings {
        env: vec![
            ("PATH".into(), format!("{STEP_PYTHON}/bin:{path}")),
            ("PYTHONPATH".into(), STEP_PYTHON.into()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ],
        labels: BTreeMap::from([
            ("org.legion-platform.step.base".into(), base.name.clone()),
            (
                "org.legion-platform.step.requirements".into(),
                env.requirements.join(" "),
            ),
        ]),
        ..Default::default()
    };
    let image = compose(&base, &[layer], &settings)?;
    images.put_blob(&image.config)?;
    let base_blobs = push_sources(&base, &images)?;
    let report = registry
        .push_manifest(
            &images,
            &image.blobs,
            &image.manifest,
            &target,
            base_blobs.as_ref(),
            &|_| {},
        )
        .await?;
    log.note(&format!(
        "pushed step image {} ({} bytes uploaded)",
        report.reference, report.bytes_pushed
    ));
    Ok(StepImage {
        reference: format!("{repository}@{}", image.digest),
        tag: target.whole(),
        reused: false,
    })
}
