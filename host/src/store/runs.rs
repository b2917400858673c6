//! The `runs` table: one row per training or packaging, written at each
//! state change before the change is reported.

use sqlx::Row;

use super::{Backend, Store};
use crate::plan::{ImagePlan, ModelId, PackagingRequest, Plan, TrainingRequest};
use crate::Error;

/// Where a run is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Recorded, not started.
    Queued,
    /// Fetching, planning or running steps.
    Running,
    /// Finished with a stored model.
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped by the user.
    Cancelled,
}

impl RunState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            _ => return None,
        })
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

/// What a run does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// Trains a model.
    Training,
    /// Packages a stored model into an image.
    Packaging,
}

impl RunKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Training => "training",
            RunKind::Packaging => "packaging",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "training" => Some(RunKind::Training),
            "packaging" => Some(RunKind::Packaging),
            _ => None,
        }
    }
}

/// The request a run was started with.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(untagged)]
pub enum RunRequest {
    /// A training's.
    Training(TrainingRequest),
    /// A packaging's.
    Packaging(PackagingRequest),
}

impl RunRequest {
    /// The training request, if this is one.
    pub fn training(&self) -> Option<&TrainingRequest> {
        match self {
            RunRequest::Training(r) => Some(r),
            RunRequest::Packaging(_) => None,
        }
    }
}

/// The plan a toolchain returned for a run.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(untagged)]
pub enum RunPlan {
    /// Steps of a training.
    Training(Plan),
    /// An image plan.
    Packaging(ImagePlan),
}

/// A run: a training or a packaging.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Toolchain name.
    pub toolchain: String,
    /// Toolchain digest it ran with.
    pub toolchain_digest: String,
    /// Training or packaging.
    pub kind: RunKind,
    /// The model trained or packaged.
    pub model: ModelId,
    /// Where the run is.
    pub state: RunState,
    /// The request as sent to the toolchain.
    pub request: RunRequest,
    /// The plan the toolchain returned, once it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RunPlan>,
    /// Exit code of the failing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When steps started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Digest of the stored model (trained, or packaged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// `name:version` of the stored model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    /// Registry reference it was pushed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_ref: Option<String>,
    /// The packaged image's reference (`…@sha256:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// The packaged image's manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Commit of a git source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    /// The run's workspace folder.
    pub workspace: String,
    /// The run's log file.
    pub log_path: String,
    /// Process id of the host running it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The Kubernetes Job running it, for a run on a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRef>,
    /// The API replica that holds the run (runs made through the API);
    /// written by [`Store::lease_run`] and the claims, never by
    /// [`Store::update_run`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[cfg(test)]
impl RunRecord {
    /// A training `id` of `m:1` by `python` in `state`, nothing else set:
    /// a fixture for unit tests.
    pub(crate) fn sample(id: &str, state: RunState) -> Self {
        RunRecord {
            id: id.into(),
            toolchain: "python".into(),
            toolchain_digest: "sha256:0".into(),
            kind: RunKind::Training,
            model: crate::plan::ModelId {
                name: "m".into(),
                version: "1".into(),
            },
            state,
            request: RunRequest::Training(Default::default()),
            plan: None,
            exit_code: None,
            reason: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            model_digest: None,
            model_ref: None,
            pushed_ref: None,
            image_ref: None,
            image_digest: None,
            source_commit: None,
            workspace: String::new(),
            log_path: String::new(),
            pid: None,
            job: None,
            owner: None,
        }
    }
}

/// An API replica's hold on a run it started: who holds it, until when
/// (ms since the epoch; from then on the replica's own lease, renewed while
/// it lives, is what keeps the run), and the request it was made from, to
/// start it again if the replica dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The replica.
    pub owner: String,
    /// Until when.
    pub until: i64,
    /// The request, as JSON.
    pub spec: String,
}

/// A state a run entered, as the event stream tells it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// Position in the stream; pass it back to resume after it.
    pub seq: i64,
    /// The run.
    pub run_id: String,
    /// Training or packaging.
    pub kind: RunKind,
    /// The state it entered.
    pub state: RunState,
    /// The model.
    pub model: ModelId,
    /// The toolchain.
    pub toolchain: String,
    /// When, in ms since the epoch.
    pub at: i64,
}

/// Which runs a listing wants; `None` is any.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Training or packaging.
    pub kind: Option<RunKind>,
    /// The model's name.
    pub model_name: Option<String>,
    /// The model's version.
    pub model_version: Option<String>,
    /// The toolchain's name.
    pub toolchain: Option<String>,
    /// The state.
    pub state: Option<RunState>,
    /// Created at or after (ms since the epoch).
    pub created_after: Option<i64>,
    /// Created before (ms since the epoch).
    pub created_before: Option<i64>,
}

/// Where a page of runs ends: the last run's creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCursor {
    /// Its `created_at`.
    pub created_at: i64,
    /// Its id.
    pub id: String,
}

impl RunCursor {
    /// The cursor after `run`.
    pub fn after(run: &RunRecord) -> Self {
        RunCursor {
            created_at: run.created_at,
            id: run.id.clone(),
        }
    }

    /// As a client passes it back: `CREATED_AT.HEX(ID)` (opaque to it).
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, hex::encode(self.id.as_bytes()))
    }

    /// Reads a cursor a client sent; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let (t, id) = text.split_once('.')?;
        Some(RunCursor {
            created_at: t.parse().ok()?,
            id: String::from_utf8(hex::decode(id).ok()?).ok()?,
        })
    }
}

/// Where a cluster run's Job is.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Most runs one insert statement writes (27 parameters each, far below
/// SQLite's and PostgreSQL's limits).
pub const INSERT_GROUP: usize = 64;

/// Runs waiting to be inserted together ([`Store::insert_run`]).
#[derive(Debug, Default)]
pub(crate) struct InsertQueue {
    waiting: std::sync::Mutex<Vec<WaitingInsert>>,
    /// Held by whoever writes; fair, so every waiter gets its turn.
    turn: tokio::sync::Mutex<()>,
}

impl InsertQueue {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<WaitingInsert>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct WaitingInsert {
    run: RunRecord,
    lease: Option<Lease>,
    done: tokio::sync::oneshot::Sender<Result<(), Error>>,
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Store {
    /// Inserts a new run, held by `lease` when an API replica runs it (one
    /// statement: a run is never seen without the lease that keeps it).
    ///
    /// Inserts made at the same time are written together, by one
    /// statement for up to [`INSERT_GROUP`] runs (group commit): whoever
    /// holds the writer's turn writes every run waiting for it, and each
    /// of the others finds its run written when its own turn comes. On
    /// SQLite each statement is a hand-off to the connection's thread and
    /// a commit; one for many creates is what let the API accept
    /// thousands a second.
    pub async fn insert_run(&self, r: &RunRecord, lease: Option<&Lease>) -> Result<(), Error> {
        self.ship_log(r).await;
        let (done, mut written) = tokio::sync::oneshot::channel();
        self.inserts.waiting().push(WaitingInsert {
            run: r.clone(),
            lease: lease.cloned(),
            done,
        });
        let _turn = self.inserts.turn.lock().await;
        match written.try_recv() {
            Ok(result) => return result,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                return Err(self.err(sqlx::Error::Protocol(
                    "the write of this run was interrupted".into(),
                )))
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        loop {
            let group: Vec<WaitingInsert> = {
                let mut waiting = self.inserts.waiting();
                let n = waiting.len().min(INSERT_GROUP);
                waiting.drain(..n).collect()
            };
            if group.is_empty() {
                break;
            }
            self.write_group(group).await;
        }
        written.try_recv().unwrap_or_else(|_| {
            Err(self.err(sqlx::Error::Protocol(
                "the write of this run was interrupted".into(),
            )))
        })
    }

    /// Writes `group` in one statement; if that fails, each run on its own,
    /// so that one bad run (an id taken) does not fail the others.
    async fn write_group(&self, group: Vec<WaitingInsert>) {
        if group.len() > 1 && self.insert_rows(&group).await.is_ok() {
            for w in group {
                let _ = w.done.send(Ok(()));
            }
            return;
        }
        for w in group {
            let one = self
                .insert_rows(std::slice::from_ref(&w))
                .await
                .map_err(|e| self.err(e));
            let _ = w.done.send(one);
        }
    }

    async fn insert_rows(&self, rows: &[WaitingInsert]) -> Result<(), sqlx::Error> {
        const COLUMNS: usize = 27;
        let mut sql = String::from(
            "INSERT INTO runs (id, toolchain, toolchain_digest, model_name, model_version, state, request, plan,
                exit_code, reason, created_at, started_at, finished_at, model_digest, model_ref, pushed_ref,
                source_commit, workspace, log_path, pid, kind, image_ref, image_digest, job,
                owner, lease_until, spec) VALUES ",
        );
        for i in 0..rows.len() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for c in 0..COLUMNS {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i * COLUMNS + c + 1));
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for w in rows {
            let (r, lease) = (&w.run, w.lease.as_ref());
            q = q
                .bind(&r.id)
                .bind(&r.toolchain)
                .bind(&r.toolchain_digest)
                .bind(&r.model.name)
                .bind(&r.model.version)
                .bind(r.state.as_str())
                .bind(json(&r.request))
                .bind(r.plan.as_ref().map(json))
                .bind(r.exit_code.map(i64::from))
                .bind(&r.reason)
                .bind(r.created_at)
                .bind(r.started_at)
                .bind(r.finished_at)
                .bind(&r.model_digest)
                .bind(&r.model_ref)
                .bind(&r.pushed_ref)
                .bind(&r.source_commit)
                .bind(&r.workspace)
                .bind(&r.log_path)
                .bind(r.pid.map(i64::from))
                .bind(r.kind.as_str())
                .bind(&r.image_ref)
                .bind(&r.image_digest)
                .bind(r.job.as_ref().map(json))
                .bind(lease.map(|l| l.owner.as_str()))
                .bind(lease.map(|l| l.until))
                .bind(lease.map(|l| l.spec.as_str()));
        }
        q.execute(&self.writer).await.map(|_| ())
    }

    /// Writes every mutable field of `r` back (a final state after the
    /// end of its log, when logs are copied: `store::logs`).
    pub async fn update_run(&self, r: &RunRecord) -> Result<(), Error> {
        self.ship_log(r).await;
        sqlx::query(
            "UPDATE runs SET state = $1, request = $2, plan = $3, exit_code = $4, reason = $5, started_at = $6,
                finished_at = $7, model_digest = $8, model_ref = $9, pushed_ref = $10, source_commit = $11, pid = $12,
                image_ref = $13, image_digest = $14, job = $15
             WHERE id = $16",
        )
        .bind(r.state.as_str())
        .bind(json(&r.request))
        .bind(r.plan.as_ref().map(json))
        .bind(r.exit_code.map(i64::from))
        .bind(&r.reason)
        .bind(r.started_at)
        .bind(r.finished_at)
        .bind(&r.model_digest)
        .bind(&r.model_ref)
        .bind(&r.pushed_ref)
        .bind(&r.source_commit)
        .bind(r.pid.map(i64::from))
        .bind(&r.image_ref)
        .bind(&r.image_digest)
        .bind(r.job.as_ref().map(json))
        .bind(&r.id)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest succeeded packaging that made `image` (its reference,
    /// or its digest).
    pub async fn packaging_of_image(&self, image: &str) -> Result<Option<RunRecord>, Error> {
        let digest = image.rsplit_once('@').map(|(_, d)| d).unwrap_or(image);
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE kind = 'packaging' AND state = 'succeeded'
               AND (image_ref = $1 OR image_digest = $2)
             ORDER BY created_at DESC LIMIT 1"
        ))
        .bind(image)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|r| self.decode_run(&r)).transpose()
    }

    /// The run `id`.
    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, Error> {
        if let Some(found) = self.get_run_inline(id) {
            return found;
        }
        let row = sqlx::query(&GET_RUN)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| self.decode_run(&r)).transpose()
    }

    /// The run `id` read on this thread; `None` when that cannot be done
    /// now (not SQLite, no free connection, SQLite busy): ask sqlx.
    fn get_run_inline(&self, id: &str) -> Option<Result<Option<RunRecord>, Error>> {
        let read = self.inline.as_ref()?.read(|c| {
            let mut stmt = c.prepare_cached(&GET_RUN)?;
            let mut rows = stmt.query([id])?;
            Ok(rows.next()?.map(|r| self.decode_run(r)))
        })?;
        Some(read.transpose())
    }

    /// Runs, newest first.
    pub async fn list_runs(&self, limit: i64) -> Result<Vec<RunRecord>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| self.decode_run(&r)).collect()
    }

    /// One page of runs matching `filter`, newest first, after `cursor`
    /// (the last run of the previous page); keyset paging, so a page is
    /// stable while runs are added.
    pub async fn page_runs(
        &self,
        filter: &RunFilter,
        cursor: Option<&RunCursor>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, Error> {
        let mut q = Sql::new(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1=1"));
        if let Some(kind) = filter.kind {
            q.push(" AND kind = ").bind(kind.as_str());
        }
        if let Some(v) = &filter.model_name {
            q.push(" AND model_name = ").bind(v.as_str());
        }
        if let Some(v) = &filter.model_version {
            q.push(" AND model_version = ").bind(v.as_str());
        }
        if let Some(v) = &filter.toolchain {
            q.push(" AND toolchain = ").bind(v.as_str());
        }
        if let Some(v) = filter.state {
            q.push(" AND state = ").bind(v.as_str());
        }
        if let Some(t) = filter.created_after {
            q.push(" AND created_at >= ").bind(t);
        }
        if let Some(t) = filter.created_before {
            q.push(" AND created_at < ").bind(t);
        }
        if let Some(c) = cursor {
            q.push(" AND (created_at < ")
                .bind(c.created_at)
                .push(" OR (created_at = ")
                .bind(c.created_at)
                .push(" AND id < ")
                .bind(c.id.as_str())
                .push("))");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(limit);
        let rows = q
            .query()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| self.decode_run(&r)).collect()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.writer)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Reads a row of [`RUN_COLUMNS`].
    fn decode_run(&self, r: &impl RunColumns) -> Result<RunRecord, Error> {
        let corrupt = |field: &str, e: String| Error::Database {
            path: self.path.clone(),
            message: format!("runs.{field}: {e}"),
        };
        let get_os = |name: &str| r.text(name).map_err(|e| corrupt(name, e));
        let get_s = |name: &str| get_os(name)?.ok_or_else(|| corrupt(name, "missing".into()));
        let get_oi = |name: &str| r.int(name).map_err(|e| corrupt(name, e));
        let state = get_s("state")?;
        let request = get_s("request")?;
        let plan = get_os("plan")?;
        let kind = get_s("kind")?;
        let kind =
            RunKind::parse(&kind).ok_or_else(|| corrupt("kind", format!("unknown kind {kind}")))?;
        let request = match kind {
            RunKind::Training => serde_json::from_str(&request).map(RunRequest::Training),
            RunKind::Packaging => serde_json::from_str(&request).map(RunRequest::Packaging),
        }
        .map_err(|e| corrupt("request", e.to_string()))?;
        let plan = plan
            .map(|p| match kind {
                RunKind::Training => serde_json::from_str(&p).map(RunPlan::Training),
                RunKind::Packaging => serde_json::from_str(&p).map(RunPlan::Packaging),
            })
            .transpose()
            .map_err(|e| corrupt("plan", e.to_string()))?;
        Ok(RunRecord {
            id: get_s("id")?,
            toolchain: get_s("toolchain")?,
            toolchain_digest: get_s("toolchain_digest")?,
            model: ModelId {
                name: get_s("model_name")?,
                version: get_s("model_version")?,
            },
            state: RunState::parse(&state)
                .ok_or_else(|| corrupt("state", format!("unknown state {state}")))?,
            kind,
            request,
            plan,
            exit_code: get_oi("exit_code")?.map(|c| c as i32),
            reason: get_os("reason")?,
            created_at: get_oi("created_at")?
                .ok_or_else(|| corrupt("created_at", "missing".into()))?,
            started_at: get_oi("started_at")?,
            finished_at: get_oi("finished_at")?,
            model_digest: get_os("model_digest")?,
            model_ref: get_os("model_ref")?,
            pushed_ref: get_os("pushed_ref")?,
            image_ref: get_os("image_ref")?,
            image_digest: get_os("image_digest")?,
            source_commit: get_os("source_commit")?,
            workspace: get_s("workspace")?,
            log_path: get_s("log_path")?,
            pid: get_oi("pid")?.map(|p| p as u32),
            job: get_os("job")?
                .map(|j| serde_json::from_str(&j))
                .transpose()
                .map_err(|e| corrupt("job", e.to_string()))?,
            owner: get_os("owner")?,
        })
    }
}

/// A row of [`RUN_COLUMNS`], as sqlx or an inline read ([`super::inline`])
/// gives it: each column by name, `None` for NULL.
trait RunColumns {
    fn text(&self, name: &str) -> Result<Option<String>, String>;
    fn int(&self, name: &str) -> Result<Option<i64>, String>;
}

impl RunColumns for sqlx::any::AnyRow {
    fn text(&self, name: &str) -> Result<Option<String>, String> {
        self.try_get(name).map_err(|e| e.to_string())
    }
    fn int(&self, name: &str) -> Result<Option<i64>, String> {
        self.try_get(name).map_err(|e| e.to_string())
    }
}

impl RunColumns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<Option<String>, String> {
        self.get(name).map_err(|e| e.to_string())
    }
    fn int(&self, name: &str) -> Result<Option<i64>, String> {
        self.get(name).map_err(|e| e.to_string())
    }
}

/// A query put together from parts, its parameters numbered `$1`, `$2`, …
/// as both databases read them. (sqlx's `QueryBuilder` writes `?` for the
/// `Any` driver, which PostgreSQL does not read.)
struct Sql {
    text: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(s.to_string())
    }
}

impl From<i64> for Arg {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl Sql {
    fn new(text: &str) -> Self {
        Sql {
            text: text.to_string(),
            args: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.text.push_str(&format!("${}", self.args.len()));
        self
    }

    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// The columns a [`RunRecord`] is read from: not the lease's own (`spec`,
/// the stored request, is as long as the request again).
const RUN_COLUMNS: &str = "id, toolchain, toolchain_digest, model_name, model_version, state, kind,
    request, plan, exit_code, reason, created_at, started_at, finished_at, model_digest, model_ref,
    pushed_ref, image_ref, image_digest, source_commit, workspace, log_path, pid, job, owner";

/// One run by its id.
static GET_RUN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"));

/// The live runs of a replica with a cancel asked for: by the partial
/// index `runs_cancels`, not a walk of every live run the replica owns.
static CANCELS_FOR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT id FROM runs WHERE owner = $1 AND cancel_requested = 1 AND {LIVE}")
});

/// Runs still going: what leases cover.
const LIVE: &str = "state IN ('queued', 'running')";

impl Store {
    /// Gives `id` to API replica `owner` until `until` (ms), with the
    /// request it was made from (`spec`, JSON), so another replica can
    /// start it again if this one dies.
    pub async fn lease_run(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        spec: &str,
    ) -> Result<(), Error> {
        sqlx::query("UPDATE runs SET owner = $1, lease_until = $2, spec = $3 WHERE id = $4")
            .bind(owner)
            .bind(until)
            .bind(spec)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Extends the lease of replica `owner` — on every run it holds — to
    /// `until` (`0` lets them go at once).
    pub async fn renew_leases(&self, owner: &str, until: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "INSERT INTO replicas (name, lease_until) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET lease_until = excluded.lease_until",
        )
        .bind(owner)
        .bind(until)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    /// Takes one live run whose replica's lease ran out before `now` (it
    /// died, or let its runs go) for `owner`: the id and the request it
    /// was made from. One statement, so two replicas never take the same
    /// run.
    pub async fn claim_expired(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<(String, Option<String>)>, Error> {
        let row = sqlx::query(&self.claim_sql())
            .bind(owner)
            .bind(until)
            .bind(now)
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| {
            Ok((
                r.try_get::<String, _>("id").map_err(|e| self.err(e))?,
                r.try_get::<Option<String>, _>("spec")
                    .map_err(|e| self.err(e))?,
            ))
        })
        .transpose()
    }

    /// The claim of [`Self::claim_expired`]: found from the replicas whose
    /// lease ran out (usually none), by the owner index. (Driven from the
    /// runs, it walked every live run each second, holding SQLite's one
    /// writer meanwhile.) PostgreSQL skips rows another replica is
    /// claiming rather than wait; SQLite has one writer at a time anyway.
    fn claim_sql(&self) -> String {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE OF r SKIP LOCKED",
            Backend::Sqlite => "",
        };
        format!(
            "UPDATE runs SET owner = $1, lease_until = $2
             WHERE id = (SELECT r.id FROM runs r
                         WHERE r.owner IN (SELECT name FROM replicas WHERE lease_until < $3 AND name <> $1)
                           AND r.{LIVE}
                         ORDER BY r.created_at LIMIT 1 {lock})
             RETURNING id, spec"
        )
    }

    /// Asks for `id` to be cancelled by whichever replica runs it; `false`
    /// if it is over already.
    pub async fn request_cancel(&self, id: &str) -> Result<bool, Error> {
        let done = sqlx::query(&format!(
            "UPDATE runs SET cancel_requested = 1 WHERE id = $1 AND {LIVE}"
        ))
        .bind(id)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// The live runs of `owner` someone asked to cancel.
    pub async fn cancels_for(&self, owner: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(&CANCELS_FOR)
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` events after `seq`, oldest first, of `kind` if given.
    pub async fn events_after(
        &self,
        seq: i64,
        kind: Option<RunKind>,
        limit: i64,
    ) -> Result<Vec<RunEvent>, Error> {
        let mut q = Sql::new("SELECT * FROM events WHERE seq > ");
        q.bind(seq);
        if let Some(k) = kind {
            q.push(" AND kind = ").bind(k.as_str());
        }
        q.push(" ORDER BY seq LIMIT ").bind(limit);
        let rows = q
            .query()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let corrupt = |field: &str, v: &str| Error::Database {
            path: self.path.clone(),
            message: format!("events.{field}: unknown value {v}"),
        };
        rows.into_iter()
            .map(|r| {
                let s = |n: &str| r.try_get::<String, _>(n).map_err(|e| self.err(e));
                let (kind, state) = (s("kind")?, s("state")?);
                Ok(RunEvent {
                    seq: r.try_get("seq").map_err(|e| self.err(e))?,
                    run_id: s("run_id")?,
                    kind: RunKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
                    state: RunState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
                    model: ModelId {
                        name: s("model_name")?,
                        version: s("model_version")?,
                    },
                    toolchain: s("toolchain")?,
                    at: r.try_get("at").map_err(|e| self.err(e))?,
                })
            })
            .collect()
    }

    /// How many runs there are of each kind in each state.
    pub async fn count_runs(&self) -> Result<Vec<(String, String, i64)>, Error> {
        sqlx::query_as("SELECT kind, state, COUNT(*) FROM runs GROUP BY kind, state")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// The newest event's position (0 when there is none).
    pub async fn last_event(&self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, until: i64) -> Lease {
        Lease {
            owner: owner.into(),
            until,
            spec: "{}".into(),
        }
    }

    /// Creates arriving together are written in groups: every run lands
    /// once, with its lease, and an id already taken fails that insert
    /// alone, not the group it came in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_land_once_each_and_a_taken_id_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        store
            .insert_run(&RunRecord::sample("taken", RunState::Queued), None)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..150 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let id = if i == 70 {
                    "taken".to_string()
                } else {
                    format!("r{i:03}")
                };
                let run = RunRecord::sample(&id, RunState::Queued);
                store.insert_run(&run, Some(&lease("a", 7))).await
            }));
        }
        let mut failed = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if let Err(e) = t.await.unwrap() {
                failed.push((i, e.to_string()));
            }
        }
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, 70);
        let runs = store.list_runs(1000).await.unwrap();
        assert_eq!(runs.len(), 150, "149 new runs and the one taken before");
        let owned = runs
            .iter()
            .filter(|r| r.owner.as_deref() == Some("a"))
            .count();
        assert_eq!(owned, 149);
        let taken = store.get_run("taken").await.unwrap().unwrap();
        assert_eq!(taken.owner, None, "the run there first is left alone");
    }

    /// `get_run` reads SQLite on the asking thread: it sees each commit of
    /// the writer at once, gives the record sqlx's path gives, and reports
    /// a corrupt row the same way.
    #[tokio::test]
    async fn inline_reads_see_each_commit_and_agree_with_sqlx() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let inline = |id: &str| store.get_run_inline(id).expect("read on this thread");
        assert!(inline("r1").unwrap().is_none());
        let mut run = RunRecord::sample("r1", RunState::Queued);
        run.plan = None;
        store.insert_run(&run, Some(&lease("a", 7))).await.unwrap();
        let read = inline("r1").unwrap().unwrap();
        let listed = store.list_runs(10).await.unwrap().remove(0);
        let json = |r: &RunRecord| serde_json::to_value(r).unwrap();
        assert_eq!(json(&read), json(&listed));
        assert_eq!(read.owner.as_deref(), Some("a"));

        run.state = RunState::Running;
        run.started_at = Some(42);
        run.exit_code = Some(3);
        store.update_run(&run).await.unwrap();
        let read = inline("r1").unwrap().unwrap();
        assert_eq!(read.state, RunState::Running);
        assert_eq!((read.started_at, read.exit_code), (Some(42), Some(3)));
        assert_eq!(json(&read), json(&store.list_runs(10).await.unwrap()[0]));

        sqlx::query("UPDATE runs SET state = 'bogus' WHERE id = 'r1'")
            .execute(&store.writer)
            .await
            .unwrap();
        let inline = store.get_run("r1").await.unwrap_err().to_string();
        let listed = store.list_runs(10).await.unwrap_err().to_string();
        assert!(
            inline.contains("runs.state: unknown state bogus"),
            "{inline}"
        );
        assert_eq!(inline, listed);
    }

    /// What each replica asks every second — its cancels, the runs of
    /// replicas that died — is found by an index that holds only those
    /// (the cancels) or only the dead replicas' runs: SQLite's plan walks
    /// neither the table nor a live replica's runs.
    #[tokio::test]
    async fn the_once_a_second_reads_walk_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        let db = rusqlite::Connection::open(&path).unwrap();
        for (sql, index) in [
            (CANCELS_FOR.clone(), "runs_cancels"),
            (store.claim_sql(), "runs_owner"),
        ] {
            let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .any(|d| d.contains(&format!("USING INDEX {index} "))),
                "{sql}: {plan:?}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|d| ["SCAN r", "SCAN runs"]
                        .contains(&d.split(" USING").next().unwrap_or(d))),
                "{sql} walks the runs: {plan:?}"
            );
        }
    }

    /// A replica's lease is one row: renewing it keeps all its runs, and
    /// once it runs out another replica claims them, each once.
    #[tokio::test]
    async fn runs_follow_their_replicas_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        store.renew_leases("a", 1_000).await.unwrap();
        store.renew_leases("b", 1_000).await.unwrap();
        for i in 0..3 {
            let run = RunRecord::sample(&format!("a{i}"), RunState::Queued);
            store
                .insert_run(&run, Some(&lease("a", 1_000)))
                .await
                .unwrap();
        }
        let done = RunRecord::sample("a-done", RunState::Succeeded);
        store
            .insert_run(&done, Some(&lease("a", 1_000)))
            .await
            .unwrap();
        // Before the lease runs out nothing is claimed.
        assert_eq!(store.claim_expired("b", 999, 5_000).await.unwrap(), None);
        // Renewed (one row, however many runs): still nothing at 1,500.
        assert_eq!(store.renew_leases("a", 2_000).await.unwrap(), 1);
        assert_eq!(store.claim_expired("b", 1_500, 5_000).await.unwrap(), None);
        // `a` stops renewing: at 2,500 `b` (renewing, as a live replica
        // does before it claims) takes its live runs, each once; the
        // finished one stays where it is.
        store.renew_leases("b", 5_000).await.unwrap();
        let mut claimed = Vec::new();
        while let Some((id, spec)) = store.claim_expired("b", 2_500, 5_000).await.unwrap() {
            assert_eq!(spec.as_deref(), Some("{}"));
            assert!(claimed.len() < 3, "claimed again: {id}");
            claimed.push(id);
        }
        claimed.sort();
        assert_eq!(claimed, ["a0", "a1", "a2"]);
        for id in &claimed {
            let run = store.get_run(id).await.unwrap().unwrap();
            assert_eq!(run.owner.as_deref(), Some("b"));
        }
        assert_eq!(
            store
                .get_run("a-done")
                .await
                .unwrap()
                .unwrap()
                .owner
                .as_deref(),
            Some("a")
        );
        // `b`'s lease holds them now.
        assert_eq!(store.claim_expired("c", 2_500, 5_000).await.unwrap(), None);
    }
}
