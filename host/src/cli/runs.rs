//! `legion runs …` and `legion models …`: what ran and what it made.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use clap::Subcommand;

use super::output;
use super::Format;
use crate::exec::kube::executor::ClusterOptions;
use crate::home::Home;
use crate::oci::catalog::ModelEntry;
use crate::oci::layout::Layout;
use crate::oci::model::read_model;
use crate::store::{RunRecord, RunRequest, Store};
use crate::Error;

/// `legion runs` subcommands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    #[command(alias = "list")]
    Ls {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one run.
    Show {
        /// Run id.
        id: String,
    },
    /// Print a run's full log.
    Logs {
        /// Run id.
        id: String,
        /// Keep printing until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Follow a cluster run whose legion process is gone (a restarted
    /// machine, a closed terminal) to its end: its Job is found again, its
    /// containers' logs keep going into the run's log, and its outcome is
    /// recorded.
    Attach {
        /// Run id.
        id: String,
        /// kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<std::path::PathBuf>,
    },
}

/// `legion models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List stored models.
    #[command(alias = "list")]
    Ls,
    /// Show a stored model's manifest (by name:version or digest).
    Show {
        /// `name:version` or `sha256:…`.
        reference: String,
    },
}

fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn took(r: &RunRecord) -> String {
    match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => format!("{:.1}s", (f - s) as f64 / 1000.0),
        (Some(_), None) => "running".into(),
        _ => String::new(),
    }
}

async fn get(store: &Store, id: &str) -> Result<RunRecord, Error> {
    store
        .get_run(id)
        .await?
        .ok_or_else(|| Error::InvalidArgument {
            field: "run id".into(),
            message: format!("no run '{id}' (legion runs ls lists them)"),
        })
}

/// Runs as a table, newest first.
pub(super) fn print_runs(runs: &[RunRecord], format: Format) {
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.kind.as_str().to_string(),
                format!("{}:{}", r.model.name, r.model.version),
                r.toolchain.clone(),
                r.state.as_str().to_string(),
                when(r.created_at),
                took(r),
                r.model_digest
                    .as_deref()
                    .map(|d| d.chars().take(19).collect())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        format,
        runs,
        &[
            "id",
            "kind",
            "model",
            "toolchain",
            "state",
            "created",
            "took",
            "model digest",
        ],
        rows,
    );
}

/// One run's fields.
pub(super) fn print_run(r: &RunRecord, format: Format) {
    let mut pairs = vec![
        ("id", r.id.clone()),
        ("kind", r.kind.as_str().to_string()),
        ("model", format!("{}:{}", r.model.name, r.model.version)),
        (
            "toolchain",
            format!("{} ({})", r.toolchain, r.toolchain_digest),
        ),
        ("state", r.state.as_str().to_string()),
        ("created", when(r.created_at)),
        ("took", took(r)),
    ];
    match &r.request {
        RunRequest::Training(req) => {
            pairs.push(("source", req.source.uri.clone()));
            if let Some(c) = &r.source_commit {
                pairs.push(("commit", c.clone()));
            }
            if let Some(e) = &req.entrypoint {
                pairs.push(("entrypoint", e.clone()));
            }
            for (k, v) in &req.hyper_parameters {
                pairs.push(("param", format!("{k}={v}")));
            }
        }
        RunRequest::Packaging(req) => {
            if let Some(b) = &req.base_image {
                pairs.push(("base", b.clone()));
            }
            for (k, v) in &req.arguments {
                pairs.push(("arg", format!("{k}={v}")));
            }
        }
    }
    if let Some(code) = r.exit_code {
        pairs.push(("exit code", code.to_string()));
    }
    if let Some(reason) = &r.reason {
        pairs.push(("reason", reason.clone()));
    }
    if let Some(d) = &r.model_digest {
        pairs.push(("model digest", d.clone()));
    }
    if let Some(p) = &r.pushed_ref {
        pairs.push(("pushed", p.clone()));
    }
    if let Some(i) = &r.image_ref {
        pairs.push(("image", i.clone()));
    }
    if let Some(j) = &r.job {
        pairs.push(("job", format!("{}/{}", j.namespace, j.name)));
    }
    pairs.push(("workspace", r.workspace.clone()));
    pairs.push(("log", r.log_path.clone()));
    output::fields(format, r, pairs);
}

pub(super) async fn runs(cmd: RunsCommand, store: &Store, format: Format) -> Result<(), Error> {
    crate::train::reconcile_orphans(store).await?;
    match cmd {
        RunsCommand::Ls { limit } => print_runs(&store.list_runs(limit).await?, format),
        RunsCommand::Show { id } => print_run(&get(store, &id).await?, format),
        RunsCommand::Logs { id, follow } => {
            let r = get(store, &id).await?;
            let path = std::path::PathBuf::from(&r.log_path);
            let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut stdout = std::io::stdout();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                file.read_to_end(&mut buf)
                    .map_err(|e| Error::io(&path, e))?;
                stdout
                    .write_all(&buf)
                    .and_then(|_| stdout.flush())
                    .map_err(|e| Error::io(&path, e))?;
                if !follow {
                    break;
                }
                let state = get(store, &id).await?.state;
                if state.is_final() {
                    // One last read: lines written just before the end.
                    buf.clear();
                    file.read_to_end(&mut buf)
                        .map_err(|e| Error::io(&path, e))?;
                    stdout.write_all(&buf).map_err(|e| Error::io(&path, e))?;
                    break;
                }
                let pos = file.stream_position().map_err(|e| Error::io(&path, e))?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                file.seek(SeekFrom::Start(pos))
                    .map_err(|e| Error::io(&path, e))?;
            }
        }
        RunsCommand::Attach { id, kubeconfig } => {
            let r = get(store, &id).await?;
            let Some(job) = &r.job else {
                return Err(Error::InvalidArgument {
                    field: "RUN".into(),
                    message: format!(
                        "run '{id}' has no Kubernetes Job: it runs, or ran, on this machine"
                    ),
                });
            };
            let cluster = crate::exec::kube::executor::ClusterExecutor::connect(ClusterOptions {
                kubeconfig,
                namespace: Some(job.namespace.clone()),
                ..ClusterOptions::default()
            })
            .await?;
            let (cancel, watcher) = super::train::cancel_on_ctrl_c();
            let run = crate::train::attach(store, &cluster, &id, cancel).await;
            watcher.abort();
            super::train::report(&run?, format);
        }
    }
    Ok(())
}

/// Stored models as a table.
pub(super) fn print_models(rows: &[ModelEntry], format: Format) {
    let table = rows
        .iter()
        .map(|m| {
            vec![
                m.reference.clone(),
                m.digest.chars().take(19).collect(),
                m.flavor.clone(),
                m.toolchain.clone(),
                format!("{:.1} KiB", m.size as f64 / 1024.0),
            ]
        })
        .collect();
    output::table(
        format,
        rows,
        &["model", "digest", "flavor", "toolchain", "size"],
        table,
    );
}

pub(super) async fn models(cmd: ModelsCommand, home: &Home, format: Format) -> Result<(), Error> {
    let layout = Layout::open(home.models())?;
    match cmd {
        ModelsCommand::Ls => print_models(&crate::oci::catalog::models(home)?, format),
        ModelsCommand::Show { reference } => {
            let Some((desc, manifest, config)) = read_model(&layout, &reference)? else {
                return Err(Error::InvalidArgument {
                    field: "model".into(),
                    message: format!("no stored model '{reference}' (legion models ls lists them)"),
                });
            };
            output::json(
                &serde_json::json!({ "digest": desc.digest, "manifest": manifest, "config": config }),
            );
        }
    }
    Ok(())
}
