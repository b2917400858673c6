//! Remote mode: `legion --server URL --token T …` calls the API (EDI)
//! instead of this machine's data directory and prints what local mode
//! prints — the same tables, the same `-o json` — so scripts written
//! against one work against the other.
//!
//! What runs on the server: trainings and packagings (their log followed
//! here as it grows, Ctrl-C cancelling the run there), runs, models,
//! images and the toolchain registry (registration uploads the component).
//! What only makes sense on this machine is refused, naming the command:
//! `serve`, `server`, `operator`, `toolchain plan`, `images build`,
//! `runs attach`, and the cluster and `--push` options of a run (the
//! server's configuration decides those).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cluster::{ClusterArgs, ExecutorKind};
use super::package::{ImagesCommand, PackageArgs};
use super::runs::{ModelsCommand, RunsCommand};
use super::toolchain::ToolchainCommand;
use super::train::{exit_code, TrainArgs};
use super::{output, Command, Format};
use crate::fetch::source::SourceSpec;
use crate::operator::crd::{
    DataSpec, ModelPackagingSpec, ModelSpec, ModelTrainingSpec, ResourceSpec,
    SourceSpec as SourceField,
};
use crate::plugin::registry::ToolchainImage;
use crate::store::{RunKind, RunRecord, ToolchainRow};
use crate::Error;

/// Times a create answered `503 busy` is sent again (after the server's
/// `Retry-After`) before giving up.
const BUSY_RETRIES: u32 = 5;

/// An API server and the token to call it with.
pub struct Remote {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// `{"items": […]}`, the API's lists.
#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

impl Remote {
    /// The server at `server` (`http://HOST:PORT` or `https://…`).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, Error> {
        let bad = |message: String| Error::InvalidArgument {
            field: "--server".into(),
            message,
        };
        let base = url::Url::parse(server).map_err(|e| bad(format!("'{server}': {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(format!("'{server}' is not an http:// or https:// URL")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("legion/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Unreachable {
                server: server.to_string(),
                source,
            })?;
        Ok(Remote {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The URL of `segments` under the server (each one percent-encoded:
    /// a model reference holds `:` and may hold `/`), with `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    fn request(&self, method: Method, url: url::Url) -> RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> Error {
        Error::Unreachable {
            server: self.base.to_string(),
            source,
        }
    }

    /// Sends what `make` builds; an error answer becomes [`Error::Remote`]
    /// with the API's code and message. A create the server was too busy
    /// to take (nothing was started) is sent again when it says.
    async fn send(&self, make: impl Fn() -> RequestBuilder) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let r = make().send().await.map_err(|e| self.unreachable(e))?;
            let status = r.status();
            if status.is_success() {
                return Ok(r);
            }
            let retry_after = r
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let text = r.text().await.unwrap_or_default();
            let error = serde_json::from_str::<Value>(&text)
                .ok()
                .map(|v| v["error"].clone())
                .filter(Value::is_object);
            let code = error
                .as_ref()
                .and_then(|e| e["code"].as_str())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
                .to_string();
            if status == StatusCode::SERVICE_UNAVAILABLE && code == "busy" && attempt < BUSY_RETRIES
            {
                let wait = retry_after.unwrap_or(5);
                eprintln!("the server is busy: trying again in {wait}s");
                tokio::time::sleep(Duration::from_secs(wait)).await;
                attempt += 1;
                continue;
            }
            let mut message = error
                .as_ref()
                .and_then(|e| e["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| text.trim().chars().take(500).collect());
            if let Some(id) = error.as_ref().and_then(|e| e["run"]["id"].as_str()) {
                message.push_str(&format!(
                    "\n(run {id} is kept with its log: legion runs logs {id})"
                ));
            }
            return Err(Error::Remote {
                server: self.base.to_string(),
                status: status.as_u16(),
                code,
                message,
            });
        }
    }

    async fn json<T: DeserializeOwned>(&self, r: Response) -> Result<T, Error> {
        r.json().await.map_err(|e| self.unreachable(e))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        let url = self.url(segments, query);
        let r = self.send(|| self.request(Method::GET, url.clone())).await?;
        self.json(r).await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        let url = self.url(segments, &[]);
        let r = self
            .send(|| self.request(Method::POST, url.clone()).json(body))
            .await?;
        self.json(r).await
    }

    async fn delete<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, Error> {
        let url = self.url(segments, &[]);
        let r = self
            .send(|| self.request(Method::DELETE, url.clone()))
            .await?;
        self.json(r).await
    }

    /// A training or a packaging, whichever `id` is.
    async fn run(&self, id: &str) -> Result<RunRecord, Error> {
        match self.get(&["api", "v1", "trainings", id], &[]).await {
            Err(Error::Remote { status: 404, .. }) => {
                match self.get(&["api", "v1", "packagings", id], &[]).await {
                    Err(Error::Remote { status: 404, .. }) => Err(Error::InvalidArgument {
                        field: "run id".into(),
                        message: format!(
                            "no run '{id}' on {} (legion runs ls lists them)",
                            self.base
                        ),
                    }),
                    r => r,
                }
            }
            r => r,
        }
    }
}

fn plural(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Training => "trainings",
        RunKind::Packaging => "packagings",
    }
}

fn here_only(what: &str) -> Error {
    Error::InvalidArgument {
        field: "--server".into(),
        message: format!(
            "{what} works on this machine only; drop --server (and unset LEGION_SERVER)"
        ),
    }
}

/// Runs `cmd` against the server; returns the process exit code.
pub async fn run(cmd: Command, remote: &Remote, format: Format) -> Result<i32, Error> {
    match cmd {
        Command::Toolchain(c) => toolchain(c, remote, format).await.map(|_| 0),
        Command::Train(a) => train(*a, remote, format).await,
        Command::Package(a) => package(*a, remote, format).await,
        Command::Runs(c) => runs(c, remote, format).await.map(|_| 0),
        Command::Models(c) => models(c, remote, format).await.map(|_| 0),
        Command::Images(ImagesCommand::Ls) => {
            let list: Items<crate::oci::catalog::ImageEntry> =
                remote.get(&["api", "v1", "images"], &[]).await?;
            super::package::print_images(&list.items, format);
            Ok(0)
        }
        Command::Images(ImagesCommand::Build(_)) => Err(here_only("`legion images build`")),
        Command::Batch(_) => Err(here_only("`legion batch`")),
        Command::Serve(_) => Err(here_only("`legion serve`")),
        Command::Server(_) => Err(here_only("`legion server`")),
        Command::Operator(_) => Err(here_only("`legion operator`")),
        Command::Step(_) => Err(here_only("`legion step`")),
    }
}

async fn toolchain(cmd: ToolchainCommand, remote: &Remote, format: Format) -> Result<(), Error> {
    match cmd {
        ToolchainCommand::Add {
            source,
            name,
            config,
            replace,
        } if !std::path::Path::new(&source).exists() && ToolchainImage::looks_like(&source) => {
            // The server pulls it: what it registers is what its registry
            // access gives, pinned by digest there.
            let body = serde_json::json!({
                "image": source,
                "name": name.map(|n| n.to_string()),
                "config": config.into_iter().collect::<BTreeMap<_, _>>(),
                "replace": replace,
            });
            let url = remote.url(&["api", "v1", "toolchains"], &[]);
            let r = remote
                .send(|| remote.request(Method::POST, url.clone()).json(&body))
                .await?;
            let row: ToolchainRow = remote.json(r).await?;
            super::toolchain::print_record(format, &row);
        }
        ToolchainCommand::Add {
            source,
            name,
            config,
            replace,
        } => {
            let path = std::path::PathBuf::from(source);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "component.wasm".into());
            let url = remote.url(&["api", "v1", "toolchains"], &[]);
            let form = || {
                let mut f = reqwest::multipart::Form::new().part(
                    "component",
                    reqwest::multipart::Part::bytes(bytes.clone()).file_name(file.clone()),
                );
                if let Some(n) = &name {
                    f = f.text("name", n.to_string());
                }
                for (k, v) in &config {
                    f = f.text("config", format!("{k}={v}"));
                }
                if replace {
                    f = f.text("replace", "true");
                }
                f
            };
            let r = remote
                .send(|| remote.request(Method::POST, url.clone()).multipart(form()))
                .await?;
            let row: ToolchainRow = remote.json(r).await?;
            super::toolchain::print_record(format, &row);
        }
        ToolchainCommand::Ls => {
            let list: Items<ToolchainRow> = remote.get(&["api", "v1", "toolchains"], &[]).await?;
            super::toolchain::print_toolchains(&list.items, format);
        }
        ToolchainCommand::Show { name } => {
            let row: ToolchainRow = remote.get(&["api", "v1", "toolchains", &name], &[]).await?;
            super::toolchain::print_record(format, &row);
        }
        ToolchainCommand::Rm { name } => {
            let row: ToolchainRow = remote.delete(&["api", "v1", "toolchains", &name]).await?;
            if format == Format::Json {
                output::json(&row);
            } else {
                println!("removed toolchain '{}' ({})", row.name, row.digest);
            }
        }
        ToolchainCommand::Plan { .. } => {
            return Err(here_only(
                "`legion toolchain plan` (it calls the plugin in this process)",
            ))
        }
        ToolchainCommand::Keygen { .. }
        | ToolchainCommand::Sign { .. }
        | ToolchainCommand::Verify { .. }
        | ToolchainCommand::Trust { .. } => {
            return Err(here_only(
                "`legion toolchain keygen|sign|verify|trust` (keys and the trust policy are this machine's)",
            ))
        }
        // Handled before the remote dispatch (it writes local files only).
        ToolchainCommand::New { .. } => {}
        ToolchainCommand::Push { .. } => {
            return Err(here_only(
                "`legion toolchain push` (it publishes from this machine to the registry)",
            ))
        }
    }
    Ok(())
}

/// Cluster options choose where this process sends a run; on a server,
/// its own configuration decides.
fn refuse_cluster(c: &ClusterArgs, push: bool) -> Result<(), Error> {
    let flag = if c.executor != ExecutorKind::Local {
        Some("--executor")
    } else if c.dry_run {
        Some("--dry-run")
    } else if push {
        Some("--push")
    } else {
        None
    };
    match flag {
        Some(f) => Err(Error::InvalidArgument {
            field: f.into(),
            message: "not taken with --server: the server's configuration decides where runs go and what is pushed".into(),
        }),
        None => Ok(()),
    }
}

/// `legion train`'s arguments as the API's training: what `legion train`
/// resolves here (the model's default name, a local folder's absolute
/// path) is resolved the same way before it is sent.
pub fn training_spec(a: TrainArgs) -> Result<ModelTrainingSpec, Error> {
    let parsed = SourceSpec::parse(&a.source);
    let (uri, reference) = match &parsed {
        Ok(SourceSpec::Local(p)) => (
            std::fs::canonicalize(p)
                .map_err(|e| Error::io(p, e))?
                .display()
                .to_string(),
            None,
        ),
        Ok(SourceSpec::Git { url, reference }) => (url.clone(), reference.clone()),
        // An OCI source, or a folder on the server's machine.
        _ => (a.source.clone(), None),
    };
    let name = match &a.name {
        Some(n) => n.to_string(),
        None => match &parsed {
            Ok(s) => s.default_model_name(),
            Err(_) => Path::new(&uri)
                .file_name()
                .map(|f| f.to_string_lossy().to_lowercase())
                .unwrap_or_default(),
        },
    };
    Ok(ModelTrainingSpec {
        toolchain: a.toolchain.to_string(),
        model: ModelSpec {
            name,
            version: a.version.to_string(),
        },
        source: SourceField { uri, reference },
        entrypoint: a.entrypoint,
        args: a.args,
        hyper_parameters: a.params.into_iter().collect(),
        env: a.env.into_iter().collect(),
        data: a
            .data
            .into_iter()
            .map(|d| DataSpec {
                uri: d.uri,
                path: d.local_path,
            })
            .collect(),
        image: a.image,
        work_dir: a.work_dir,
        resources: ResourceSpec {
            cpu: a.cpu_millis.map(|m| format!("{m}m")),
            memory: a.memory_bytes.map(|b| b.to_string()),
            gpus: a.gpus,
        },
        timeout_seconds: Some(a.timeout.as_secs().max(1)),
    })
}

async fn train(a: TrainArgs, remote: &Remote, format: Format) -> Result<i32, Error> {
    refuse_cluster(&a.cluster, a.push.is_some())?;
    let spec = training_spec(a)?;
    let run: RunRecord = remote.post(&["api", "v1", "trainings"], &spec).await?;
    let run = follow(remote, run).await?;
    super::train::report(&run, format);
    Ok(exit_code(run.state))
}

async fn package(a: PackageArgs, remote: &Remote, format: Format) -> Result<i32, Error> {
    refuse_cluster(&a.cluster, a.push.is_some())?;
    let arguments = crate::plan::unique_pairs("--arg", a.args)?;
    let spec = ModelPackagingSpec {
        toolchain: a.toolchain.to_string(),
        training_ref: None,
        model_ref: Some(a.model),
        base: a.base,
        arguments,
        timeout_seconds: Some(a.timeout.as_secs().max(1)),
    };
    let run: RunRecord = remote.post(&["api", "v1", "packagings"], &spec).await?;
    let run = follow(remote, run).await?;
    if format == Format::Json {
        // Local mode prints {run, layers, push}; the server keeps the run.
        output::json(&serde_json::json!({ "run": run }));
    } else {
        super::package::report_run(&run);
    }
    Ok(exit_code(run.state))
}

/// Follows a run the server accepted to its end: its log on stderr as it
/// grows (as local mode shows it), the first Ctrl-C cancelling it on the
/// server, the second leaving at once. Returns the run as it ended.
async fn follow(remote: &Remote, run: RunRecord) -> Result<RunRecord, Error> {
    let kind = plural(run.kind);
    eprintln!(
        "==> {} {} accepted by {} ({})",
        run.kind.as_str(),
        run.id,
        remote.base,
        run.state.as_str()
    );
    let logs = remote.url(
        &["api", "v1", kind, &run.id, "logs"],
        &[("follow", "true".into())],
    );
    let r = remote
        .send(|| remote.request(Method::GET, logs.clone()))
        .await?;
    let mut body = r.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut cancelled = false;
    // One listener for the whole follow: no Ctrl-C is missed between chunks.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::io(Path::new("SIGINT"), e))?;
    loop {
        tokio::select! {
            chunk = body.next() => match chunk {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    while let Some(n) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=n).collect();
                        eprintln!("  {}", String::from_utf8_lossy(&line[..line.len() - 1]));
                    }
                }
                Some(Err(e)) => {
                    eprintln!("the log stream broke ({e}); waiting for the run to end");
                    break;
                }
                None => break,
            },
            _ = interrupts.recv() => {
                if cancelled {
                    std::process::exit(130);
                }
                cancelled = true;
                eprintln!("\ncancelling: asking the server to stop run {} (Ctrl-C again to leave it running)", run.id);
                match remote.post::<RunRecord, _>(&["api", "v1", kind, &run.id, "cancel"], &serde_json::json!({})).await {
                    Ok(_) | Err(Error::Remote { status: 409, .. }) => {}
                    Err(e) => eprintln!("could not cancel: {e}"),
                }
            }
        }
    }
    if !pending.is_empty() {
        eprintln!("  {}", String::from_utf8_lossy(&pending));
    }
    // The stream ends when the run does; a broken one is waited out here
    // (Ctrl-C still leaves: the listener above replaced its default).
    loop {
        let now: RunRecord = remote.get(&["api", "v1", kind, &run.id], &[]).await?;
        if now.state.is_final() {
            return Ok(now);
        }
        tokio::select! {
            _ = interrupts.recv() => std::process::exit(130),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn runs(cmd: RunsCommand, remote: &Remote, format: Format) -> Result<(), Error> {
    match cmd {
        RunsCommand::Ls { limit } => {
            // Both kinds, newest first, as `legion runs ls` lists them here.
            let q = [("limit", limit.clamp(1, crate::api::MAX_PAGE).to_string())];
            let t: Items<RunRecord> = remote.get(&["api", "v1", "trainings"], &q).await?;
            let p: Items<RunRecord> = remote.get(&["api", "v1", "packagings"], &q).await?;
            let mut all: Vec<RunRecord> = t.items.into_iter().chain(p.items).collect();
            all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
            all.truncate(limit.max(0) as usize);
            super::runs::print_runs(&all, format);
        }
        RunsCommand::Show { id } => super::runs::print_run(&remote.run(&id).await?, format),
        RunsCommand::Logs { id, follow } => {
            let run = remote.run(&id).await?;
            let mut q = Vec::new();
            if follow {
                q.push(("follow", "true".to_string()));
            }
            let url = remote.url(&["api", "v1", plural(run.kind), &id, "logs"], &q);
            let r = remote
                .send(|| remote.request(Method::GET, url.clone()))
                .await?;
            let mut body = r.bytes_stream();
            let mut stdout = tokio::io::stdout();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| remote.unreachable(e))?;
                tokio::io::AsyncWriteExt::write_all(&mut stdout, &chunk)
                    .await
                    .map_err(|e| Error::io(Path::new("stdout"), e))?;
                tokio::io::AsyncWriteExt::flush(&mut stdout)
                    .await
                    .map_err(|e| Error::io(Path::new("stdout"), e))?;
            }
        }
        RunsCommand::Attach { .. } => {
            return Err(here_only(
                "`legion runs attach` (the server follows its own runs)",
            ))
        }
    }
    Ok(())
}

async fn models(cmd: ModelsCommand, remote: &Remote, format: Format) -> Result<(), Error> {
    match cmd {
        ModelsCommand::Ls => {
            let list: Items<crate::oci::catalog::ModelEntry> =
                remote.get(&["api", "v1", "models"], &[]).await?;
            super::runs::print_models(&list.items, format);
        }
        ModelsCommand::Show { reference } => {
            let mut m: Value = remote
                .get(&["api", "v1", "models", &reference], &[])
                .await?;
            // As `legion models show` prints it here.
            if let Some(o) = m.as_object_mut() {
                o.remove("reference");
            }
            output::json(&m);
        }
    }
    Ok(())
}
