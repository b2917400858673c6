//! Runs a plan's steps as processes on this machine.
//!
//! Each step is its own process group, so a timeout or a Ctrl-C stops the
//! step and everything it started (SIGTERM, then SIGKILL after a grace
//! period). Output is read line by line from both pipes and goes to the run
//! log and to the watcher as it arrives. The step's `image` is recorded in
//! the plan but not used here: the Python environment the plan asked for
//! stands in for it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{substitute, Executor, Outcome, RunContext, RunEvents, Stream};
use crate::plan::{Plan, Step};
use crate::Error;

/// How long a stopped step gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The embedded default executor.
#[derive(Debug, Default, Clone)]
pub struct LocalExecutor;

#[async_trait]
impl Executor for LocalExecutor {
    async fn run(
        &self,
        plan: &Plan,
        ctx: &RunContext,
        events: &dyn RunEvents,
        cancel: CancellationToken,
    ) -> Result<Outcome, Error> {
        let deadline = Instant::now() + ctx.timeout;
        let total = plan.steps.len();
        for (i, step) in plan.steps.iter().enumerate() {
            events.step_started(&step.name, i + 1, total);
            ctx.log.note(&format!(
                "step {}/{total} '{}': {}",
                i + 1,
                step.name,
                shell_words(step, &ctx.workspace.variables(&ctx.run_id, &ctx.model))
            ));
            let started = Instant::now();
            let outcome = run_step(step, ctx, events, &cancel, deadline).await?;
            let elapsed = started.elapsed();
            match outcome {
                StepEnd::Exited(0) => {
                    events.step_finished(&step.name, Some(0), elapsed);
                    ctx.log.note(&format!(
                        "step '{}' succeeded in {:.3}s",
                        step.name,
                        elapsed.as_secs_f64()
                    ));
                }
                StepEnd::Exited(code) => {
                    events.step_finished(&step.name, Some(code), elapsed);
                    ctx.log.note(&format!(
                        "step '{}' failed with exit code {code}",
                        step.name
                    ));
                    return Ok(Outcome::Failed {
                        step: step.name.clone(),
                        exit_code: Some(code),
                        message: format!("exited with code {code}"),
                    });
                }
                StepEnd::Signalled(sig) => {
                    events.step_finished(&step.name, None, elapsed);
                    ctx.log
                        .note(&format!("step '{}' was killed by signal {sig}", step.name));
                    return Ok(Outcome::Failed {
                        step: step.name.clone(),
                        exit_code: None,
                        message: format!("killed by signal {sig}"),
                    });
                }
                StepEnd::NotStarted(message) => {
                    events.step_finished(&step.name, None, elapsed);
                    ctx.log
                        .note(&format!("step '{}' could not start: {message}", step.name));
                    return Ok(Outcome::Failed {
                        step: step.name.clone(),
                        exit_code: None,
                        message,
                    });
                }
                StepEnd::TimedOut => {
                    events.step_finished(&step.name, None, elapsed);
                    ctx.log.note(&format!(
                        "run timed out after {}s in step '{}'; stopped it",
                        ctx.timeout.as_secs(),
                        step.name
                    ));
                    return Ok(Outcome::TimedOut {
                        step: step.name.clone(),
                        after: ctx.timeout,
                    });
                }
                StepEnd::Cancelled => {
                    events.step_finished(&step.name, None, elapsed);
                    ctx.log.note(&format!(
                        "run cancelled during step '{}'; stopped it",
                        step.name
                    ));
                    return Ok(Outcome::Cancelled {
                        step: step.name.clone(),
                    });
                }
            }
        }
        Ok(Outcome::Succeeded)
    }
}

enum StepEnd {
    Exited(i32),
    Signalled(i32),
    NotStarted(String),
    TimedOut,
    Cancelled,
}

fn shell_words(step: &Step, vars: &[(String, String)]) -> String {
    step.command
        .iter()
        .chain(&step.args)
        .map(|a| substitute(a, vars))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run_step(
    step: &Step,
    ctx: &RunContext,
    events: &dyn RunEvents,
    cancel: &CancellationToken,
    deadline: Instant,
) -> Result<StepEnd, Error> {
    let vars = ctx.workspace.variables(&ctx.run_id, &ctx.model);
    let argv: Vec<String> = step
        .command
        .iter()
        .chain(&step.args)
        .map(|a| substitute(a, &vars))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Ok(StepEnd::NotStarted("the step has no command".into()));
    };
    let cwd = match &step.working_dir {
        Some(dir) => ctx.workspace.source().join(dir),
        None => ctx.workspace.source(),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Output reaches the log line by line rather than in 8 KiB blocks.
    cmd.env("PYTHONUNBUFFERED", "1");
    if let Some(env) = &ctx.python_env {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", env.join("bin").display()))
            .env("VIRTUAL_ENV", env);
    }
    for (k, v) in &vars {
        cmd.env(k, v);
    }
    for e in &step.env {
        cmd.env(&e.name, substitute(&e.value, &vars));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ok(StepEnd::NotStarted(format!(
                "cannot run '{program}' in {}: {e}",
                cwd.display()
            )))
        }
    };
    let pgid = child.id().map(|p| p as i32);
    let group_file = ctx.workspace.step_group_file();
    if let Some(g) = pgid {
        // Best effort: without it a restarted host cannot stop an orphan.
        let _ = std::fs::write(&group_file, g.to_string());
    }
    let out = pump(child.stdout.take(), Stream::Stdout, step, ctx, events);
    let err = pump(child.stderr.take(), Stream::Stderr, step, ctx, events);
    let wait = async {
        let (status, _, _) = tokio::join!(child.wait(), out, err);
        status
    };
    tokio::pin!(wait);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let end = tokio::select! {
        status = &mut wait => {
            let status = status.map_err(|source| Error::Step { step: step.name.clone(), source })?;
            use std::os::unix::process::ExitStatusExt;
            Ok(match (status.code(), status.signal()) {
                (Some(code), _) => StepEnd::Exited(code),
                (None, Some(sig)) => StepEnd::Signalled(sig),
                (None, None) => StepEnd::Exited(-1),
            })
        }
        _ = tokio::time::sleep(remaining) => {
            stop_group(pgid, &mut wait).await;
            Ok(StepEnd::TimedOut)
        }
        _ = cancel.cancelled() => {
            stop_group(pgid, &mut wait).await;
            Ok(StepEnd::Cancelled)
        }
    };
    let _ = std::fs::remove_file(&group_file);
    end
}

/// SIGTERM to the step's process group, SIGKILL after [`GRACE`], and wait
/// for the step (and its pipes) to end.
async fn stop_group<F: std::future::Future>(pgid: Option<i32>, wait: &mut std::pin::Pin<&mut F>) {
    let Some(pgid) = pgid else { return };
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(GRACE, wait.as_mut()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        let _ = wait.as_mut().await;
    }
    // Anything left in the group (a daemonised grandchild) goes too.
    signal_group(pgid, libc::SIGKILL);
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg only sends a signal; `pgid` is the group the step was
    // started in (process_group(0) makes the child its leader).
    unsafe {
        libc::killpg(pgid, signal);
    }
}

async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: Stream,
    step: &Step,
    ctx: &RunContext,
    events: &dyn RunEvents,
) {
    let Some(pipe) = pipe else { return };
    // Bytes that are not UTF-8 are shown replaced, never dropped.
    legion_serve::lines::for_each_line(pipe, |line| {
        match stream {
            Stream::Stderr => ctx.log.stderr_line(line),
            Stream::Stdout => ctx.log.line(line),
        }
        events.line(&step.name, stream, line);
    })
    .await;
}
