//! `legion toolchain …`: register, list, show, remove, and try a plugin's
//! calls on a JSON request (the author's harness).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use sha2::Digest;

use super::output;
use super::Format;
use crate::names::ToolchainName;
use crate::plan::{parse_key_value, PackagingRequest, ServingRequest, TrainingRequest};
use crate::plugin::registry::{AddToolchain, ToolchainImage};
use crate::plugin::scaffold::Kind;
use crate::plugin::trust;
use crate::plugin::{Interface, ToolchainRecord, Toolchains};
use crate::Error;

/// `legion toolchain` subcommands.
#[derive(Debug, Subcommand)]
pub enum ToolchainCommand {
    /// Validate, compile and register a toolchain component, from a file or
    /// a registry.
    Add {
        /// The component: a `.wasm` file built for wasm32-wasip2, or one in a
        /// registry, `REGISTRY/REPO:TAG` (resolved to its digest now, and
        /// pinned) or `REGISTRY/REPO@sha256:…`.
        #[arg(value_name = "PATH|REFERENCE")]
        source: String,
        /// Name to register under (default: the name the toolchain gives itself).
        #[arg(long)]
        name: Option<ToolchainName>,
        /// Configuration the toolchain reads with `host.config` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// Replace a toolchain already registered under this name.
        #[arg(long)]
        replace: bool,
    },
    /// Create a new toolchain plugin crate (SDK vendored, builds for
    /// wasm32-wasip2 and registers without edits).
    New {
        /// The toolchain's name (also the crate's).
        name: ToolchainName,
        /// What it does.
        #[arg(long, value_enum, default_value = "trainer")]
        kind: crate::plugin::scaffold::Kind,
        /// The folder to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Publish a toolchain component to a registry, in the wasm OCI layout
    /// (`wkg oci pull` and skopeo read it).
    Push {
        /// The component (`.wasm`); checked as `add` checks it.
        path: PathBuf,
        /// Where: `REGISTRY/REPO:TAG`.
        reference: String,
    },
    /// Make an ed25519 key pair for signing toolchains: PREFIX.key (keep it
    /// secret) and PREFIX.pub (give it to admins).
    Keygen {
        /// Where: PREFIX.key and PREFIX.pub.
        prefix: PathBuf,
    },
    /// Sign a toolchain in a registry; the signature is pushed beside it (an
    /// OCI referrer of its manifest).
    Sign {
        /// `REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:…` (the signature
        /// is pushed as a referrer), or a `.wasm` file (written beside it
        /// as FILE.sig).
        reference: String,
        /// The private key (from `keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a toolchain in a registry is signed by a trusted key (the
    /// trust policy's, or those given).
    Verify {
        /// `REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:…`, or a `.wasm`
        /// file with its FILE.sig.
        reference: String,
        /// Public keys to check against instead of the trust policy's
        /// (repeatable).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// The trust policy: with a trusted key, toolchains are registered only
    /// from a registry and signed by one.
    Trust {
        #[command(subcommand)]
        cmd: TrustCommand,
    },
    /// List registered toolchains.
    #[command(alias = "list")]
    Ls,
    /// Show one toolchain.
    Show {
        /// Toolchain name.
        name: String,
    },
    /// Remove a toolchain.
    #[command(alias = "remove")]
    Rm {
        /// Toolchain name.
        name: String,
    },
    /// Run one of a toolchain's calls on a JSON request and print the result.
    Plan {
        /// Toolchain name.
        name: String,
        /// Request file (JSON; `-` for stdin).
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Which call (default: `training` for trainers, else `packaging`).
        #[arg(long, value_enum)]
        call: Option<Call>,
        /// Source folder preopened at /source for `training` (default: the
        /// request's `source.uri` when it is a local folder).
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Output folder preopened at /output for `collect` (with `--source`, if given, at /source).
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Model folder preopened at /model for `packaging` and `batch`.
        #[arg(long, value_name = "DIR")]
        model_dir: Option<PathBuf>,
    },
}

/// `legion toolchain trust` subcommands.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a public key (from `keygen`).
    Add {
        /// The `.pub` file.
        path: PathBuf,
    },
    /// The trusted keys' ids.
    Ls,
    /// Stop trusting a key.
    Rm {
        /// Its id.
        key_id: String,
    },
}

/// A plugin call the harness can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Call {
    /// `trainer.plan-training`.
    Training,
    /// `trainer.collect-training`.
    Collect,
    /// `packager.plan-packaging`.
    Packaging,
    /// `server.plan-serving`.
    Serving,
    /// `batch.plan-batch-inference` (contract 0.2.0).
    Batch,
}

pub(super) async fn run(
    cmd: ToolchainCommand,
    toolchains: &Toolchains,
    format: Format,
) -> Result<(), Error> {
    match cmd {
        ToolchainCommand::Add {
            source,
            name,
            config,
            replace,
        } => {
            let config: BTreeMap<_, _> = config.into_iter().collect();
            let row = if !Path::new(&source).exists() && ToolchainImage::looks_like(&source) {
                let image = ToolchainImage::parse("REFERENCE", &source)?;
                toolchains
                    .add_from_registry(&image, name.as_ref(), config, replace)
                    .await?
            } else {
                toolchains
                    .add(&AddToolchain {
                        path: PathBuf::from(source),
                        name,
                        config,
                        replace,
                    })
                    .await?
            };
            print_record(format, &row);
        }
        // Handled before the registry is opened (`Cli::run`).
        ToolchainCommand::New { .. } => {}
        ToolchainCommand::Push { path, reference } => {
            let image = ToolchainImage::parse("REFERENCE", &reference)?;
            if image.0.digest().is_some() {
                return Err(Error::InvalidArgument {
                    field: "REFERENCE".into(),
                    message: format!("'{reference}' names a digest; push to a tag (the digest is the registry's answer)"),
                });
            }
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let (report, info) = toolchains
                .push(&bytes, &path.display().to_string(), &image.0)
                .await?;
            if format == Format::Json {
                output::json(&serde_json::json!({"push": report, "toolchain": info}));
            } else {
                let pinned = format!(
                    "{}/{}@{}",
                    image.0.registry(),
                    image.0.repository(),
                    report.digest
                );
                println!(
                    "pushed toolchain '{}' {} to {}",
                    info.name, info.version, report.reference
                );
                println!("  digest: {}", report.digest);
                println!(
                    "  {} blob(s) uploaded, {} already there",
                    report.blobs_pushed, report.blobs_skipped
                );
                println!("  register it with: legion toolchain add {pinned}");
            }
        }
        ToolchainCommand::Keygen { prefix } => {
            let (id, private, public) = trust::keygen(&prefix)?;
            if format == Format::Json {
                output::json(
                    &serde_json::json!({"keyId": id, "private": private, "public": public}),
                );
            } else {
                println!("key {id}");
                println!("  private: {} (keep it secret)", private.display());
                println!(
                    "  public:  {} (admins trust it: legion toolchain trust add {})",
                    public.display(),
                    public.display()
                );
            }
        }
        ToolchainCommand::Sign { reference, key } => {
            let signed = if Path::new(&reference).is_file() {
                trust::sign_file(Path::new(&reference), &key)?
            } else {
                let image = ToolchainImage::parse("REFERENCE", &reference)?;
                trust::sign(&image, &key).await?
            };
            if format == Format::Json {
                output::json(&signed);
            } else {
                println!(
                    "signed {} ({}) with key {}",
                    reference, signed.subject, signed.key_id
                );
                println!("  signature: {}", signed.signature);
            }
        }
        ToolchainCommand::Verify { reference, keys } => {
            let policy = if keys.is_empty() {
                trust::Trust::load(toolchains.home())?
            } else {
                trust::Trust::of(&keys)?
            };
            if !policy.is_set() {
                return Err(Error::InvalidArgument {
                    field: "--key".into(),
                    message: "no key to verify with: give --key KEY.pub, or trust one (legion toolchain trust add KEY.pub)".into(),
                });
            }
            let (subject, key) = if Path::new(&reference).is_file() {
                let file = Path::new(&reference);
                let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
                let key = trust::verify_file(&policy, file, &bytes)?;
                (
                    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
                    key,
                )
            } else {
                let image = ToolchainImage::parse("REFERENCE", &reference)?;
                trust::verify(&image, &policy).await?
            };
            if format == Format::Json {
                output::json(&serde_json::json!({"subject": subject, "keyId": key}));
            } else {
                println!("{reference} ({subject}) is signed by trusted key {key}");
            }
        }
        ToolchainCommand::Trust { cmd } => match cmd {
            TrustCommand::Add { path } => {
                let id = trust::Trust::add(toolchains.home(), &path)?;
                if format == Format::Json {
                    output::json(&serde_json::json!({"keyId": id}));
                } else {
                    println!("trusted key {id}: toolchains are now registered only from a registry, signed by a trusted key");
                }
            }
            TrustCommand::Ls => {
                let ids = trust::Trust::load(toolchains.home())?.ids();
                if format == Format::Json {
                    output::json(&serde_json::json!({"keyIds": ids}));
                } else if ids.is_empty() {
                    println!("no trusted keys: no trust policy (any toolchain an admin adds is registered)");
                } else {
                    for id in ids {
                        println!("{id}");
                    }
                }
            }
            TrustCommand::Rm { key_id } => {
                trust::Trust::remove(toolchains.home(), &key_id)?;
                if format == Format::Json {
                    output::json(&serde_json::json!({"removed": key_id}));
                } else {
                    println!("no longer trusting key {key_id}");
                }
            }
        },
        ToolchainCommand::Ls => print_toolchains(&toolchains.list().await?, format),
        ToolchainCommand::Show { name } => {
            let row = toolchains.get(&name).await?;
            print_record(format, &row);
        }
        ToolchainCommand::Rm { name } => {
            let row = toolchains.remove(&name).await?;
            if format == Format::Json {
                output::json(&row);
            } else {
                println!("removed toolchain '{}' ({})", row.name, row.digest);
            }
        }
        ToolchainCommand::Plan {
            name,
            request,
            call,
            source,
            output_dir,
            model_dir,
        } => {
            let plugin = toolchains.load(&name).await?;
            let call = call.unwrap_or(if plugin.interfaces().contains(&Interface::Trainer) {
                Call::Training
            } else {
                Call::Packaging
            });
            let policy = crate::plan::Policy::load(&toolchains.home().policy())?;
            // Plugin calls are synchronous and may take up to the deadline;
            // they run on the blocking pool, off the async workers.
            tokio::task::spawn_blocking(move || -> Result<(), Error> {
                match call {
                    Call::Training => {
                        let req: TrainingRequest = read_request(&request)?;
                        let dir = source.or_else(|| local_source(&req)).ok_or_else(|| Error::InvalidArgument {
                            field: "--source".into(),
                            message: "plan-training preopens the source folder: pass --source DIR or set source.uri to a local folder".into(),
                        })?;
                        existing_dir("--source", &dir)?;
                        let plan = plugin.plan_training(&req, &dir)?;
                        output::json(&plan);
                        // The checks `legion train` makes before anything
                        // runs: what the plan must be, then the admin's rules.
                        policy.check(plugin.name(), &plan)
                    }
                    Call::Collect => {
                        let req: TrainingRequest = read_request(&request)?;
                        let dir = output_dir.ok_or_else(|| {
                            required(
                                "--output-dir",
                                "collect-training preopens the run's output folder",
                            )
                        })?;
                        existing_dir("--output-dir", &dir)?;
                        // The source is optional here; an empty folder stands in.
                        let empty =
                            tempfile::tempdir().map_err(|e| Error::io(Path::new("/tmp"), e))?;
                        let src = source
                            .or_else(|| local_source(&req))
                            .unwrap_or_else(|| empty.path().to_path_buf());
                        existing_dir("--source", &src)?;
                        let manifest = plugin.collect_training(&req, &src, &dir)?;
                        output::json(&manifest);
                        // What `legion train` checks of a collected model.
                        let model =
                            crate::train::phases::model_dir(plugin.name(), &dir, &manifest.model_path)?;
                        crate::train::phases::servable(plugin.name(), &manifest, &model)
                    }
                    Call::Packaging => {
                        let req: PackagingRequest = read_request(&request)?;
                        let dir = model_dir.ok_or_else(|| {
                            required("--model-dir", "plan-packaging preopens the model's folder")
                        })?;
                        existing_dir("--model-dir", &dir)?;
                        let plan = plugin.plan_packaging(&req, &dir)?;
                        output::json(&plan);
                        policy.check_image(plugin.name(), &plan)
                    }
                    Call::Batch => {
                        let req: crate::plan::BatchRequest = read_request(&request)?;
                        let dir = model_dir.ok_or_else(|| {
                            required("--model-dir", "plan-batch-inference preopens the model's folder")
                        })?;
                        existing_dir("--model-dir", &dir)?;
                        let plan = plugin.plan_batch_inference(&req, &dir)?;
                        output::json(&plan);
                        policy.check(plugin.name(), &plan)
                    }
                    Call::Serving => {
                        let req: ServingRequest = read_request(&request)?;
                        output::json(&plugin.plan_serving(&req)?);
                        Ok(())
                    }
                }
            })
            .await
            .map_err(|e| Error::Engine {
                context: "a toolchain call",
                source: e.into(),
            })??;
        }
    }
    Ok(())
}

fn required(flag: &str, why: &str) -> Error {
    Error::InvalidArgument {
        field: flag.to_string(),
        message: format!("required: {why}"),
    }
}

fn existing_dir(flag: &str, dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            field: flag.to_string(),
            message: format!("{} is not a folder", dir.display()),
        })
    }
}

fn local_source(req: &TrainingRequest) -> Option<PathBuf> {
    let uri = req
        .source
        .uri
        .strip_prefix("file://")
        .unwrap_or(&req.source.uri);
    let path = PathBuf::from(uri);
    (!uri.is_empty() && path.is_dir()).then_some(path)
}

/// Reads a JSON request, naming the file and the field path on error.
pub fn read_request<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let file = path.display().to_string();
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io(path, e))?
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?
    };
    crate::plan::parse_json(&text, &file)
}

fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// Toolchains as a table.
pub(super) fn print_toolchains(rows: &[ToolchainRecord], format: Format) {
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.info.version.clone(),
                r.interfaces.join(","),
                r.contract.clone(),
                short(&r.digest),
                if r.builtin { "builtin" } else { "" }.to_string(),
            ]
        })
        .collect();
    output::table(
        format,
        rows,
        &["name", "version", "interfaces", "contract", "digest", ""],
        table,
    );
}

pub(super) fn print_record(format: Format, r: &ToolchainRecord) {
    let mut pairs = vec![
        ("name", r.name.clone()),
        ("digest", r.digest.clone()),
        ("interfaces", r.interfaces.join(", ")),
        ("contract", r.contract.clone()),
        ("version", r.info.version.clone()),
        ("description", r.info.description.clone()),
        ("default image", r.info.default_image.clone()),
        ("size", format!("{} bytes", r.size)),
        ("builtin", r.builtin.to_string()),
    ];
    if let Some(origin) = &r.origin {
        pairs.push(("origin", origin.clone()));
    }
    for (k, v) in &r.config {
        pairs.push(("config", format!("{k}={v}")));
    }
    for p in &r.info.parameters {
        let default = p
            .default
            .as_deref()
            .map(|d| format!(" (default {d})"))
            .unwrap_or_default();
        pairs.push((
            "parameter",
            format!("{} <{}>{default}: {}", p.name, p.kind, p.description),
        ));
    }
    output::fields(format, r, pairs);
}

/// `legion toolchain new`: writes the crate and says what to run next.
pub(super) fn new(
    name: &ToolchainName,
    kind: Kind,
    dir: Option<PathBuf>,
    format: Format,
) -> Result<(), Error> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name.as_str()));
    let files = crate::plugin::scaffold::create(&dir, name, kind)?;
    if format == Format::Json {
        output::json(&serde_json::json!({
            "name": name.as_str(),
            "dir": dir,
            "contract": format!("legion:toolchain@{}", crate::plugin::scaffold::CONTRACT),
            "files": files,
        }));
        return Ok(());
    }
    println!(
        "created toolchain crate '{}' in {} (legion:toolchain@{}, {} files)",
        name,
        dir.display(),
        crate::plugin::scaffold::CONTRACT,
        files.len()
    );
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  cargo build --release --target wasm32-wasip2");
    println!(
        "  legion toolchain add target/wasm32-wasip2/release/{}.wasm",
        name.as_str().replace('-', "_")
    );
    Ok(())
}
