//! `legion package` and `legion images …`: stored models into runnable
//! images, and the images made.

use clap::{Args, Subcommand};

use super::output;
use super::train::{cancel_on_ctrl_c, Progress};
use super::Format;
use crate::home::Home;
use crate::names::ToolchainName;
use crate::oci::catalog::ImageEntry;
use crate::oci::image::ImageSettings;
use crate::oci::layout::Layout;
use crate::package::assemble::{assemble, Assembly, Target};
use crate::package::{PackageOptions, Packaged, Packager, DEFAULT_PACKAGER};
use crate::plugin::Toolchains;
use crate::store::{RunRecord, RunState};
use crate::Error;

/// `legion package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The model: `name:version`, a digest (or its first 12+ hex digits),
    /// or a registry reference (pulled first).
    #[arg(value_name = "MODEL-REF")]
    pub model: String,
    /// Packager toolchain.
    #[arg(long, default_value = DEFAULT_PACKAGER)]
    pub toolchain: ToolchainName,
    /// Base image: `REGISTRY/REPO[:TAG|@DIGEST]`, or `oci:DIR:NAME` for an
    /// image layout folder. Default: the packager's.
    #[arg(long, value_name = "IMAGE-REF")]
    pub base: Option<String>,
    /// Push the image to `REGISTRY/REPO[:TAG]` instead of keeping it in the
    /// local image store.
    #[arg(long, value_name = "REGISTRY/REPO[:TAG]")]
    pub push: Option<String>,
    /// A packager argument (repeatable); `legion toolchain show docker-rest`
    /// lists them.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = crate::plan::parse_key_value)]
    pub args: Vec<(String, String)>,
    /// Time a packaging on a cluster may run, e.g. 30m.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub cluster: super::cluster::ClusterArgs,
}

/// `legion images …`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Images in the local store and images pushed by packagings.
    #[command(alias = "list")]
    Ls,
    /// Build an image of files on a base, as one deterministic layer (no
    /// build container; the same inputs give the same digest). The
    /// platform image is made with it (scripts/platform-image.sh).
    Build(Box<BuildArgs>),
}

/// `legion images build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Base image: `REGISTRY/REPO[:TAG|@DIGEST]` or `oci:DIR:NAME`.
    #[arg(long, value_name = "IMAGE-REF")]
    pub base: String,
    /// A file or folder to copy in (repeatable): HOST_PATH=IMAGE_PATH.
    #[arg(long, value_name = "HOST=IMAGE", value_parser = crate::plan::parse_key_value)]
    pub add: Vec<(String, String)>,
    /// The entrypoint, one argument per use.
    #[arg(long, value_name = "ARG")]
    pub entrypoint: Vec<String>,
    /// Default arguments, one per use.
    #[arg(long, value_name = "ARG")]
    pub cmd: Vec<String>,
    /// An environment variable (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::plan::parse_key_value)]
    pub env: Vec<(String, String)>,
    /// A label (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = crate::plan::parse_key_value)]
    pub label: Vec<(String, String)>,
    /// The user the image runs as (`UID[:GID]`).
    #[arg(long)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Push to `REGISTRY/REPO[:TAG]`.
    #[arg(long, value_name = "REGISTRY/REPO[:TAG]", conflicts_with = "tag")]
    pub push: Option<String>,
    /// Or keep it in the local image store under this name.
    #[arg(long, value_name = "NAME[:TAG]", required_unless_present = "push")]
    pub tag: Option<String>,
}

/// Runs `legion package`; returns the exit code.
pub async fn run(
    args: PackageArgs,
    home: &Home,
    toolchains: &Toolchains,
    format: Format,
) -> Result<i32, Error> {
    let arguments = crate::plan::unique_pairs("--arg", args.args)?;
    let opts = PackageOptions {
        model: args.model,
        toolchain: args.toolchain.to_string(),
        base: args.base,
        push: args.push,
        arguments,
        timeout: args.timeout,
        run_id: None,
        lease: None,
        gate: None,
    };
    let cluster = args.cluster.connect().await?;
    let packager = match &cluster {
        Some(c) => Packager::on_cluster(toolchains, home, c),
        None => Packager::new(toolchains, home),
    };
    if args.cluster.dry_run {
        let job = packager.dry_run(opts).await?;
        print!("{}", crate::exec::kube::executor::yaml_documents(&[&job])?);
        return Ok(0);
    }
    let (cancel, watcher) = cancel_on_ctrl_c();
    let progress = Progress::new();
    let result = packager.package(opts, &progress, cancel).await;
    progress.finish();
    watcher.abort();
    let packaged = result?;
    report(&packaged, format);
    Ok(super::train::exit_code(packaged.run.state))
}

fn report(p: &Packaged, format: Format) {
    if format == Format::Json {
        return output::json(p);
    }
    if !report_run(&p.run) {
        return;
    }
    let built: Vec<_> = p.layers.iter().filter(|l| !l.reused).collect();
    println!(
        "layers  {} ({} built, {} reused)",
        p.layers.len(),
        built.len(),
        p.layers.len() - built.len()
    );
    if let Some(r) = &p.push {
        println!(
            "pushed  {} uploaded in {} blobs; {} blobs already there, {} mounted ({} not sent)",
            bytes(r.bytes_pushed),
            r.blobs_pushed,
            r.blobs_skipped,
            r.blobs_mounted,
            bytes(r.bytes_skipped)
        );
    }
}

/// Images as a table.
pub(super) fn print_images(rows: &[ImageEntry], format: Format) {
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.reference.clone(),
                r.digest.chars().take(19).collect(),
                r.model.clone(),
                r.location.clone(),
                if r.size > 0 {
                    bytes(r.size)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    output::table(
        format,
        rows,
        &["image", "digest", "model", "where", "size"],
        table,
    );
}

/// A packaging's outcome for a person; whether it succeeded.
pub(super) fn report_run(run: &RunRecord) -> bool {
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => format!(" in {:.1}s", (f - s) as f64 / 1000.0),
        _ => String::new(),
    };
    if run.state != RunState::Succeeded {
        eprintln!(
            "run {} {}{took}: {}",
            run.id,
            run.state.as_str(),
            run.reason.as_deref().unwrap_or("")
        );
        eprintln!("full log: {}  (legion runs logs {})", run.log_path, run.id);
        return false;
    }
    println!("run {} succeeded{took}", run.id);
    println!("image   {}", run.image_ref.as_deref().unwrap_or_default());
    println!(
        "digest  {}",
        run.image_digest.as_deref().unwrap_or_default()
    );
    true
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// Runs `legion images …`.
pub async fn images(
    cmd: ImagesCommand,
    home: &Home,
    toolchains: &Toolchains,
    format: Format,
) -> Result<(), Error> {
    match cmd {
        ImagesCommand::Build(args) => {
            let args = *args;
            let layout = Layout::open(home.images())?;
            let assembly = Assembly {
                base: args.base,
                add: args
                    .add
                    .into_iter()
                    .map(|(h, i)| (std::path::PathBuf::from(h), i))
                    .collect(),
                settings: ImageSettings {
                    entrypoint: args.entrypoint,
                    cmd: args.cmd,
                    env: args.env,
                    exposed_ports: Vec::new(),
                    labels: args.label.into_iter().collect(),
                    working_dir: args.workdir,
                    user: args.user,
                },
            };
            let target = match (args.push, args.tag) {
                (Some(r), _) => Target::Push(r),
                (None, Some(name)) => Target::Layout(layout.clone(), name),
                (None, None) => {
                    return Err(Error::InvalidArgument {
                        field: "--push".into(),
                        message: "give --push REF or --tag NAME".into(),
                    })
                }
            };
            let made = assemble(&layout, &assembly, &target).await?;
            output::table(
                format,
                &made,
                &["image", "digest", "files"],
                vec![vec![
                    made.reference.clone(),
                    made.digest.clone(),
                    made.files.to_string(),
                ]],
            );
        }
        ImagesCommand::Ls => print_images(
            &crate::oci::catalog::images(home, toolchains.store()).await?,
            format,
        ),
    }
    Ok(())
}
