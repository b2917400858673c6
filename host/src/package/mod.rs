//! A packaging, end to end: the one code path behind `legion package` (and,
//! later, the API and the operator).
//!
//! ```text
//! check the request -> record the run (queued) -> find the model (pull it)
//!  -> plugin.plan-packaging -> policy.check_image -> resolve the base to a digest
//!  -> layers: model (its stored blob, reused) + spec, server, files, python deps (cached)
//!  -> config + manifest -> push to a registry | name it in the local image layout
//!  -> succeeded
//! ```
//!
//! Nothing is named (no registry tag, no layout entry) until every blob the
//! manifest refers to is in place, so a failure never leaves a name
//! pointing at a half-built image. A failed packaging keeps its log.

pub mod assemble;
pub mod deps;
pub mod server;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use tokio_util::sync::CancellationToken;

use crate::exec::kube::executor::ClusterExecutor;
use crate::exec::{RunEvents, RunLog, Workspace};
use crate::home::Home;
use crate::oci::image::{
    compose, parse_layout_reference, python_in_layers, BaseImage, BaseSource, ImageSettings,
    NewLayer, REF_NAME_LABEL,
};
use crate::oci::layer::{build_files_layer, Contents, ImageFile, LayerBlob};
use crate::oci::layout::Layout;
use crate::oci::model::ToolchainRef;
use crate::oci::registry::{
    names_tag, parse_reference, BaseBlobs, BlobOutcome, BlobPushed, PushReport, Registry,
};
use crate::oci::LAYER_GZIP_MEDIA_TYPE;
use crate::plan::{ImagePlan, ImageTarget, Layer, ModelId, PackagingRequest, Pairs, Policy};
use crate::plugin::{Interface, Plugin, Toolchains};
use crate::serve::{find_model, model_spec, serving_requirements, unpack_model, FoundModel};
use crate::store::{JobRef, RunKind, RunPlan, RunRecord, RunRequest, RunState};
use crate::train::{
    begin_attempt, blocking, cancellable, job_ended, now_ms, start_when_allowed, Stop,
};
use crate::Error;

/// The packager used when none is named.
pub const DEFAULT_PACKAGER: &str = "docker-rest";

/// Default time a packaging on a cluster may run.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// What `legion package` asks for.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// `name:version`, a digest, or a registry reference.
    pub model: String,
    /// Packager toolchain.
    pub toolchain: String,
    /// Base image override (`REGISTRY/REPO[:TAG|@DIGEST]` or `oci:DIR:NAME`).
    pub base: Option<String>,
    /// `REGISTRY/REPO[:TAG]` to push to; `None` keeps the image in the local layout.
    pub push: Option<String>,
    /// Packager arguments.
    pub arguments: Pairs,
    /// Time a packaging on a cluster may run.
    pub timeout: std::time::Duration,
    /// The run's id, chosen by the caller (as [`crate::train::TrainOptions::run_id`]).
    pub run_id: Option<String>,
    /// The API replica holding the run, when the API started it.
    pub lease: Option<crate::store::Lease>,
    /// Runs that may execute at once (as [`crate::train::TrainOptions::gate`]).
    pub gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl Default for PackageOptions {
    fn default() -> Self {
        PackageOptions {
            model: String::new(),
            toolchain: String::new(),
            base: None,
            push: None,
            arguments: Pairs::new(),
            timeout: DEFAULT_TIMEOUT,
            run_id: None,
            lease: None,
            gate: None,
        }
    }
}

/// One layer of the built image, for the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// `base`, `model`, `model-spec`, `legion-server`, `files`, `python-packages`.
    pub kind: String,
    /// Blob digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Whether it was reused (the model's stored blob, a cached dependency
    /// layer, a base layer) rather than built now.
    pub reused: bool,
}

/// A finished packaging.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Packaged {
    /// The run as recorded.
    pub run: RunRecord,
    /// The image's layers, base first.
    pub layers: Vec<LayerReport>,
    /// What the push moved, when pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushReport>,
}

/// Packages models for one data directory.
pub struct Packager<'a> {
    toolchains: &'a Toolchains,
    home: &'a Home,
    cluster: Option<&'a ClusterExecutor>,
}

impl<'a> Packager<'a> {
    /// A packager over `toolchains` in `home`.
    pub fn new(toolchains: &'a Toolchains, home: &'a Home) -> Self {
        Packager {
            toolchains,
            home,
            cluster: None,
        }
    }

    /// A packager that builds each image in a Job on `cluster`.
    pub fn on_cluster(
        toolchains: &'a Toolchains,
        home: &'a Home,
        cluster: &'a ClusterExecutor,
    ) -> Self {
        Packager {
            toolchains,
            home,
            cluster: Some(cluster),
        }
    }

    /// What a cluster packaging would create, without creating it or
    /// recording a run (the model is not pushed; the Job names the
    /// reference it would have).
    pub async fn dry_run(
        &self,
        opts: PackageOptions,
    ) -> Result<k8s_openapi::api::batch::v1::Job, Error> {
        let Some(cluster) = self.cluster else {
            return Err(Error::InvalidArgument {
                field: "--dry-run".into(),
                message: "a dry run shows the objects of a cluster run: add --executor kube".into(),
            });
        };
        let c = self.check(&opts).await?;
        let dir = tempfile::tempdir().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        let log = RunLog::open(&dir.path().join("legion.log"))?;
        let cancel = CancellationToken::new();
        let job = Job {
            home: self.home,
            store: self.toolchains.store(),
            packager_digest: &c.row.digest,
            plugin: &c.plugin,
            policy: &c.policy,
            found: &c.found,
            request: c.request.clone(),
            push: c.push.as_ref(),
            log: &log,
            events: &crate::exec::Quiet,
            cancel: &cancel,
            cluster: self.cluster,
            timeout: opts.timeout,
            gate: opts.gate.as_ref(),
        };
        let plan = job.plan().await.map_err(Stop::into_error)?;
        c.policy.check_image(c.plugin.name(), &plan)?;
        let toolchain = ToolchainRef {
            name: c.row.name.clone(),
            digest: c.row.digest.clone(),
        };
        cluster
            .prepare_packaging(
                &format!(
                    "{}-dryrun",
                    c.model.name.chars().take(36).collect::<String>()
                ),
                toolchain,
                &c.found,
                c.request.base_image.clone(),
                c.push.as_ref(),
                c.request.arguments.clone(),
                opts.timeout,
                &log,
            )
            .await
    }

    /// Everything that can be checked before a run exists.
    async fn check(&self, opts: &PackageOptions) -> Result<Checked, Error> {
        if let Some(cluster) = self.cluster {
            cluster.check_registry()?;
        }
        let row = self.toolchains.get(&opts.toolchain).await?;
        crate::plan::parameters::check(&row.name, &row.info.parameters, &opts.arguments, "--arg")?;
        let plugin = self.toolchains.load_record(&row).await?;
        if !plugin.interfaces().contains(&Interface::Packager) {
            return Err(Error::NotExported {
                toolchain: row.name.clone(),
                interface: "packager".into(),
                call: "package models".into(),
            });
        }
        let push = opts
            .push
            .as_deref()
            .map(|p| parse_reference(p, "latest"))
            .transpose()?;
        let policy = Policy::load(&self.home.policy())?;
        let found = find_model(self.home, &opts.model, "MODEL").await?;
        let model = ModelId {
            name: found.config.name.clone(),
            version: found.config.version.clone(),
        };
        // Without a tag, the image is tagged with the model's version.
        let push = match (&push, opts.push.as_deref()) {
            (Some(_), Some(text)) => Some(parse_reference(text, &tag_of(&model.version))?),
            _ => None,
        };
        let target = match &push {
            Some(r) => ImageTarget {
                registry: r.resolve_registry().to_string(),
                repository: r.repository().to_string(),
                tag: names_tag(opts.push.as_deref().unwrap_or_default())
                    .then(|| r.tag().unwrap_or_default().to_string()),
            },
            None => ImageTarget {
                registry: "local".into(),
                repository: self.home.images().display().to_string(),
                tag: None,
            },
        };
        let request = PackagingRequest {
            model: model.clone(),
            model_digest: found.desc.digest.clone(),
            manifest: found.config.manifest.clone(),
            target,
            base_image: opts.base.clone(),
            arguments: opts.arguments.clone(),
        };

        Ok(Checked {
            row,
            plugin,
            push,
            policy,
            found,
            model,
            request,
        })
    }

    /// Packages. Returns `Err` only for input refused before the run was
    /// recorded; once recorded, the run comes back in whatever state it
    /// ended.
    pub async fn package(
        &self,
        opts: PackageOptions,
        events: &dyn RunEvents,
        cancel: CancellationToken,
    ) -> Result<Packaged, Error> {
        // --- checks that leave no trace ---
        events.phase("find model");
        let Checked {
            row,
            plugin,
            push,
            policy,
            found,
            model,
            request,
        } = self.check(&opts).await?;

        // --- the run exists from here on ---
        let id = opts
            .run_id
            .clone()
            .unwrap_or_else(|| crate::names::packaging_id(&model.name));
        let workspace = Workspace::new(self.home.run_dir(&id));
        let log_path = workspace.root.join("legion.log");
        let mut run = RunRecord {
            id: id.clone(),
            toolchain: row.name.clone(),
            toolchain_digest: row.digest.clone(),
            kind: RunKind::Packaging,
            model: model.clone(),
            state: RunState::Queued,
            request: RunRequest::Packaging(request.clone()),
            plan: None,
            exit_code: None,
            reason: None,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            model_digest: Some(found.desc.digest.clone()),
            model_ref: Some(format!("{}:{}", model.name, model.version)),
            pushed_ref: None,
            image_ref: None,
            image_digest: None,
            source_commit: found.config.source.commit.clone(),
            workspace: workspace.root.display().to_string(),
            log_path: log_path.display().to_string(),
            pid: Some(std::process::id()),
            job: None,
            owner: None,
        };
        let store = self.toolchains.store();
        let fresh = opts.run_id.is_none();
        let again = begin_attempt(store, &mut run, &workspace, opts.lease.as_ref(), fresh).await?;
        let log = RunLog::open(&log_path)?;
        if again {
            log.note(&format!("run {id}: its host stopped; starting it again"));
        }
        events.recorded(&run);
        log.note(&format!(
            "run {id}: packaging {}:{} ({}) with toolchain {} ({})",
            model.name, model.version, found.desc.digest, row.name, row.digest
        ));
        let mut out = Packaged {
            run: run.clone(),
            layers: Vec::new(),
            push: None,
        };
        let job = Job {
            home: self.home,
            store,
            packager_digest: &row.digest,
            plugin: &plugin,
            policy: &policy,
            found: &found,
            request,
            push: push.as_ref(),
            log: &log,
            events,
            cancel: &cancel,
            cluster: self.cluster,
            timeout: opts.timeout,
            gate: opts.gate.as_ref(),
        };
        match job.drive(&mut run, &mut out).await {
            Ok(()) => run.state = RunState::Succeeded,
            Err(stop) => stop.record(&mut run),
        }
        log.note(&format!(
            "run {} {}{}",
            run.id,
            run.state.as_str(),
            run.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
        run.finished_at = Some(now_ms());
        store.update_run(&run).await?;
        out.run = run;
        Ok(out)
    }
}

use crate::exec::kube::executor::tag_of;

/// What the checks before a run exists found.
struct Checked {
    row: crate::store::ToolchainRow,
    plugin: Plugin,
    push: Option<Reference>,
    policy: Policy,
    found: FoundModel,
    model: ModelId,
    request: PackagingRequest,
}

/// One packaging's inputs while it runs.
struct Job<'a> {
    home: &'a Home,
    store: &'a crate::store::Store,
    packager_digest: &'a str,
    plugin: &'a Plugin,
    policy: &'a Policy,
    found: &'a FoundModel,
    request: PackagingRequest,
    push: Option<&'a Reference>,
    log: &'a RunLog,
    events: &'a dyn RunEvents,
    cancel: &'a CancellationToken,
    cluster: Option<&'a ClusterExecutor>,
    timeout: std::time::Duration,
    gate: Option<&'a std::sync::Arc<tokio::sync::Semaphore>>,
}

impl Job<'_> {
    async fn drive(&self, run: &mut RunRecord, out: &mut Packaged) -> Result<(), Stop> {
        let plan = self.plan().await?;
        run.plan = Some(RunPlan::Packaging(plan.clone()));
        self.store.update_run(run).await?;
        self.policy.check_image(self.plugin.name(), &plan)?;
        self.events.planned(run);
        let _permit =
            start_when_allowed(self.gate, run, self.store, self.events, self.cancel, || {
                Ok(())
            })
            .await?;

        if let Some(cluster) = self.cluster {
            return self.drive_on_cluster(cluster, run).await;
        }

        let images = Layout::open(self.home.images())?;
        self.events.phase("base image");
        let base = cancellable(self.cancel, resolve_base(&plan.base)).await?;
        self.log.note(&format!(
            "base image {} resolved to {} ({} layers)",
            base.name,
            base.digest,
            base.layers.len()
        ));
        let base_blobs = push_sources(&base, &images)?;
        if base.python_from_config().is_none() {
            self.events
                .phase("base image: looking for Python in its layers");
        }
        let python = cancellable(self.cancel, base_python(&base, &images)).await?;
        self.log.note(&format!("base image Python: {python}"));
        out.layers.extend(base.layers.iter().map(|l| LayerReport {
            kind: "base".into(),
            digest: l.digest.clone(),
            size: l.size.max(0) as u64,
            reused: true,
        }));

        let mut layers = Vec::new();
        for layer in &plan.layers {
            for (new, reused, kind) in self.build_layer(layer, &base, &python, &images).await? {
                self.events.phase(&format!(
                    "layer {kind}: {} ({})",
                    short(&new.desc.digest),
                    if reused { "reused" } else { "built" }
                ));
                out.layers.push(LayerReport {
                    kind: kind.to_string(),
                    digest: new.desc.digest.clone(),
                    size: new.desc.size.max(0) as u64,
                    reused,
                });
                layers.push(new);
            }
        }

        let settings = self.settings(&plan, &base);
        let image = compose(&base, &layers, &settings)?;
        images.put_blob(&image.config)?;
        self.log.note(&format!(
            "image {} ({} layers, config {})",
            image.digest,
            image.blobs.len() - 1,
            image.blobs[0].digest
        ));

        match self.push {
            Some(target) => {
                let total = image.blobs.len();
                let (done, up, skipped) =
                    (AtomicUsize::new(0), AtomicU64::new(0), AtomicUsize::new(0));
                let events = self.events;
                let progress = |b: &BlobPushed| {
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    match b.outcome {
                        BlobOutcome::Uploaded => {
                            up.fetch_add(b.size, Ordering::Relaxed);
                        }
                        BlobOutcome::Present | BlobOutcome::Mounted => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    events.phase(&format!(
                        "push: {n}/{total} blobs, {} uploaded, {} already there",
                        mib(up.load(Ordering::Relaxed)),
                        skipped.load(Ordering::Relaxed)
                    ));
                };
                let report = cancellable(
                    self.cancel,
                    Registry::for_reference(target).push_manifest(
                        &images,
                        &image.blobs,
                        &image.manifest,
                        target,
                        base_blobs.as_ref(),
                        &progress,
                    ),
                )
                .await?;
                self.log.note(&format!(
                    "pushed {}: {} blobs uploaded ({} bytes), {} already there, {} mounted ({} bytes not sent)",
                    report.reference,
                    report.blobs_pushed,
                    report.bytes_pushed,
                    report.blobs_skipped,
                    report.blobs_mounted,
                    report.bytes_skipped
                ));
                let name = target.whole();
                let name = name.split('@').next().unwrap_or_default();
                run.image_ref = Some(format!("{name}@{}", image.digest));
                run.pushed_ref = run.image_ref.clone();
                out.push = Some(report);
            }
            None => {
                self.events.phase("store image");
                self.fetch_base_layers(&base, &images).await?;
                let name = settings
                    .labels
                    .get(REF_NAME_LABEL)
                    .cloned()
                    .unwrap_or_else(|| format!("{}:{}", run.model.name, run.model.version));
                images.put_manifest(&image.manifest, &name, BTreeMap::new())?;
                run.image_ref = Some(format!("oci:{}:{name}", images.root().display()));
                self.log.note(&format!(
                    "stored image {name} ({}) in {}",
                    image.digest,
                    images.root().display()
                ));
            }
        }
        run.image_digest = Some(image.digest.clone());
        Ok(())
    }

    /// Unpacks the model and asks the packager for its plan.
    async fn plan(&self) -> Result<ImagePlan, Stop> {
        self.events.phase("unpack model");
        let (home, found) = (self.home.clone(), self.found.clone());
        let root = blocking(move || unpack_model(&home, &found)).await?;

        self.events.phase("plan");
        let (p, req, dir) = (
            self.plugin.clone(),
            self.request.clone(),
            root.join(legion_serve::model::FILES_DIR),
        );
        let plan = blocking(move || p.plan_packaging(&req, &dir)).await?;
        self.log.note(&format!("plan: {}", plan_summary(&plan)));
        Ok(plan)
    }

    /// The planned, policy-checked packaging as a Job on `cluster`: the
    /// pod runs this very packaging (`legion step package`) and pushes the
    /// image; the host follows it.
    async fn drive_on_cluster(
        &self,
        cluster: &ClusterExecutor,
        run: &mut RunRecord,
    ) -> Result<(), Stop> {
        self.events.phase("prepare the Job (push the model)");
        let toolchain = ToolchainRef {
            name: run.toolchain.clone(),
            digest: run.toolchain_digest.clone(),
        };
        let job = cancellable(
            self.cancel,
            cluster.prepare_packaging(
                &run.id,
                toolchain,
                self.found,
                self.request.base_image.clone(),
                self.push,
                self.request.arguments.clone(),
                self.timeout,
                self.log,
            ),
        )
        .await?;
        let name = job.metadata.name.clone().unwrap_or_default();
        run.job = Some(JobRef {
            namespace: cluster.namespace().to_string(),
            name: name.clone(),
        });
        self.store.update_run(run).await?;
        self.events
            .phase(&format!("Job {}/{name}", cluster.namespace()));
        self.events.job_created(cluster.namespace(), &name);
        let end = cluster
            .runner()?
            .run(&job, &run.id, self.log, self.cancel.clone())
            .await?;
        job_ended(run, end, self.log)
    }

    async fn fetch_base_layers(&self, base: &BaseImage, images: &Layout) -> Result<(), Stop> {
        cancellable(self.cancel, fetch_base_layers(base, images)).await
    }

    /// The layers one plan layer becomes, with whether each was reused and
    /// its kind.
    async fn build_layer(
        &self,
        layer: &Layer,
        base: &BaseImage,
        python: &str,
        images: &Layout,
    ) -> Result<Vec<(NewLayer, bool, &'static str)>, Stop> {
        let tmp = images.root().join("tmp");
        Ok(match layer {
            Layer::Model => {
                // The stored model's own blob, byte for byte.
                let desc =
                    self.found
                        .manifest
                        .layers
                        .first()
                        .cloned()
                        .ok_or_else(|| Error::Package {
                            message: format!("model {} has no layer", self.found.desc.digest),
                        })?;
                images.link_blob_from(&self.found.layout, &desc.digest)?;
                let model = NewLayer {
                    desc: OciDescriptor {
                        media_type: LAYER_GZIP_MEDIA_TYPE.to_string(),
                        annotations: None,
                        ..desc
                    },
                    diff_id: self.found.config.layer_diff_id.clone(),
                    created_by: format!("legion model {}", self.found.desc.digest),
                };
                let spec = model_spec(&self.found.config, &self.found.desc.digest)?;
                let bytes = serde_json::to_vec_pretty(&spec)
                    .map_err(|e| Error::json(std::path::Path::new("legion-model.json"), e))?;
                let files = vec![ImageFile {
                    path: format!("/{}", legion_serve::model::SPEC_FILE),
                    contents: Contents::Bytes(bytes),
                    mode: 0o644,
                }];
                let spec_layer = self
                    .files_layer(files, "legion model spec", &tmp, images)
                    .await?;
                vec![(model, true, "model"), (spec_layer, false, "model-spec")]
            }
            Layer::LegionServer(path) => {
                let bin = server::find_server_binary()?;
                let files = vec![ImageFile {
                    path: path.clone(),
                    contents: Contents::File(bin),
                    mode: 0o755,
                }];
                let by = format!("legion-serve {}", env!("CARGO_PKG_VERSION"));
                vec![(
                    self.files_layer(files, &by, &tmp, images).await?,
                    false,
                    "legion-server",
                )]
            }
            Layer::Files(entries) => {
                let files = entries
                    .iter()
                    .map(|f| ImageFile {
                        path: f.path.clone(),
                        contents: Contents::Bytes(f.contents.clone()),
                        mode: f.mode,
                    })
                    .collect();
                vec![(
                    self.files_layer(files, "toolchain files", &tmp, images)
                        .await?,
                    false,
                    "files",
                )]
            }
            Layer::PythonPackages {
                target,
                requirements,
            } => {
                self.events.phase("layer python-packages: pip install");
                let requirements = serving_requirements(requirements);
                let req = deps::DepsRequest {
                    target,
                    requirements: &requirements,
                    python_version: python,
                    platforms: base.pip_platforms()?,
                };
                let (layer, cached) = cancellable(
                    self.cancel,
                    deps::python_layer(&req, &self.home.python_layers(), images, self.log),
                )
                .await?;
                vec![(layer, cached, "python-packages")]
            }
        })
    }

    async fn files_layer(
        &self,
        files: Vec<ImageFile>,
        created_by: &str,
        tmp: &std::path::Path,
        images: &Layout,
    ) -> Result<NewLayer, Stop> {
        let (tmp, by, images) = (tmp.to_path_buf(), created_by.to_string(), images.clone());
        blocking(move || files_layer(&files, &by, &tmp, &images)).await
    }

    /// The image's runtime settings: the plan's, plus the labels only the
    /// host can vouch for (which win over the plan's).
    fn settings(&self, plan: &ImagePlan, base: &BaseImage) -> ImageSettings {
        let mut labels = plan.labels.clone();
        let config = &self.found.config;
        for (k, v) in [
            ("org.legion-platform.model.name", config.name.clone()),
            ("org.legion-platform.model.version", config.version.clone()),
            (
                "org.legion-platform.model.digest",
                self.found.desc.digest.clone(),
            ),
            (
                "org.legion-platform.trainer",
                format!("{}@{}", config.toolchain.name, config.toolchain.digest),
            ),
            (
                "org.legion-platform.packager",
                format!("{}@{}", self.plugin.name(), self.packager_digest),
            ),
            ("org.opencontainers.image.base.digest", base.digest.clone()),
        ] {
            labels.insert(k.to_string(), v);
        }
        if let Some(commit) = &config.source.commit {
            labels.insert("org.opencontainers.image.revision".into(), commit.clone());
        }
        ImageSettings {
            entrypoint: plan.entrypoint.clone(),
            cmd: plan.cmd.clone(),
            env: plan
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            exposed_ports: plan.exposed_ports.clone(),
            labels,
            working_dir: plan.working_dir.clone(),
            user: plan.user.clone(),
        }
    }
}

/// Packs `files` as one layer into `images` (built in `tmp`).
pub fn files_layer(
    files: &[ImageFile],
    created_by: &str,
    tmp: &std::path::Path,
    images: &Layout,
) -> Result<NewLayer, Error> {
    let blob: LayerBlob = build_files_layer(files, tmp)?;
    let new = NewLayer {
        desc: OciDescriptor {
            media_type: LAYER_GZIP_MEDIA_TYPE.to_string(),
            digest: blob.digest.clone(),
            size: blob.size as i64,
            urls: None,
            annotations: None,
            artifact_type: None,
        },
        diff_id: blob.diff_id.clone(),
        created_by: created_by.to_string(),
    };
    images.put_blob_file(blob.file, &new.desc.digest)?;
    Ok(new)
}

/// Where a push finds the base's layers: a base in a layout is linked into
/// `images` (cheap, local); a base in a registry is named, so its layers
/// are mounted or skipped there and fetched only if they must travel.
pub fn push_sources(base: &BaseImage, images: &Layout) -> Result<Option<BaseBlobs>, Error> {
    match &base.source {
        BaseSource::Registry(r) => Ok(Some(BaseBlobs {
            reference: r.clone(),
            layers: base.layers.iter().map(|l| l.digest.clone()).collect(),
        })),
        BaseSource::Layout(from) => {
            for l in &base.layers {
                images.link_blob_from(from, &l.digest)?;
            }
            Ok(None)
        }
    }
}

/// Makes every base layer present in `images`: linked from a base layout,
/// or fetched from the base's registry (digest checked).
pub async fn fetch_base_layers(base: &BaseImage, images: &Layout) -> Result<(), Error> {
    match &base.source {
        BaseSource::Registry(r) => {
            let registry = Registry::for_reference(r);
            for l in &base.layers {
                registry.fetch_blob(images, r, l).await?;
            }
        }
        BaseSource::Layout(from) => {
            for l in &base.layers {
                images.link_blob_from(from, &l.digest)?;
            }
        }
    }
    Ok(())
}

/// The base's Python as `major.minor`: from its config's `PYTHON_VERSION`,
/// else from the standard library found in its layers (fetched into
/// `images` for that). A base with neither has no Python.
pub async fn base_python(base: &BaseImage, images: &Layout) -> Result<String, Error> {
    if let Some(v) = base.python_from_config() {
        return Ok(v);
    }
    fetch_base_layers(base, images).await?;
    let paths: Vec<_> = base
        .layers
        .iter()
        .map(|l| images.blob_path(&l.digest))
        .collect();
    tokio::task::spawn_blocking(move || python_in_layers(&paths))
        .await
        .map_err(|e| Error::Engine {
            context: "scanning base layers",
            source: e.into(),
        })??
        .ok_or_else(|| Error::BaseImage {
            base: base.name.clone(),
            message: "it has no Python: its config names no PYTHON_VERSION and no layer holds a usr/lib/python3.N or usr/local/lib/python3.N standard library".into(),
        })
}

/// Resolves a base: `oci:DIR:NAME` in a local layout, else a registry
/// reference (Docker Hub names like `python:3.11-slim` included).
pub async fn resolve_base(name: &str) -> Result<BaseImage, Error> {
    if let Some((dir, tag)) = parse_layout_reference(name) {
        return BaseImage::from_layout(name, &dir, &tag);
    }
    let reference = Reference::from_str(name).map_err(|e| Error::BaseImage {
        base: name.to_string(),
        message: format!("not an image reference: {e}"),
    })?;
    Registry::for_reference(&reference)
        .resolve_image(name, &reference)
        .await
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The plan for the log, with file contents reduced to their sizes.
fn plan_summary(plan: &ImagePlan) -> String {
    let mut p = plan.clone();
    for l in &mut p.layers {
        if let Layer::Files(files) = l {
            for f in files {
                f.contents = format!("<{} bytes>", f.contents.len()).into_bytes();
            }
        }
    }
    serde_json::to_string(&p).unwrap_or_default()
}
