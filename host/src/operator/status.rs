//! Conditions and phases: what the operator writes into a status, and the
//! reason a failed run is given, so that a status always says why.

use super::crd::Condition;
use crate::store::{RunRecord, RunState};

/// Phases of a training or packaging.
pub mod phase {
    /// Accepted; the run is being planned or its Job created.
    pub const PENDING: &str = "Pending";
    /// Its Job runs.
    pub const RUNNING: &str = "Running";
    /// Done; the results are in the status.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Over without a result; the `Succeeded` condition says why.
    pub const FAILED: &str = "Failed";
    /// A deployment rolling out.
    pub const DEPLOYING: &str = "Deploying";
    /// A deployment whose current replicas are available.
    pub const READY: &str = "Ready";
    /// A toolchain usable by runs.
    pub const AVAILABLE: &str = "Ready";
}

/// Whether a run phase is final.
pub fn is_final(phase: Option<&str>) -> bool {
    matches!(phase, Some(phase::SUCCEEDED) | Some(phase::FAILED))
}

/// Sets the condition of `type_` in `conditions` (a list keyed by type):
/// `lastTransitionTime` moves only when the status changes, as Kubernetes'
/// own `meta.SetStatusCondition` does.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool_or_unknown::Status,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status = status.as_str().to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = super::now();
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: super::now(),
            observed_generation: generation,
        }),
    }
}

/// The condition of `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A condition's status.
pub mod bool_or_unknown {
    /// `True`, `False` or `Unknown`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Status {
        /// It holds.
        True,
        /// It does not.
        False,
        /// Not known yet.
        Unknown,
    }

    impl Status {
        /// As Kubernetes writes it.
        pub fn as_str(self) -> &'static str {
            match self {
                Status::True => "True",
                Status::False => "False",
                Status::Unknown => "Unknown",
            }
        }
    }
}

pub use bool_or_unknown::Status;

/// The one-word reason of a run that ended, for its `Succeeded` condition,
/// from what the pipeline recorded: the exit code of a failed step, the
/// words the Kubernetes executor and the policy use for each way a run
/// stops (`train::job_ended`, `exec::kube::runner`, `Error::Policy`).
pub fn run_reason(run: &RunRecord) -> &'static str {
    let reason = run.reason.as_deref().unwrap_or_default();
    match run.state {
        RunState::Succeeded => "Succeeded",
        RunState::Cancelled => "Cancelled",
        RunState::Queued | RunState::Running => "Running",
        RunState::Failed => {
            if reason.contains("plan refused by policy") {
                "PolicyViolation"
            } else if reason.contains("returned a plan Legion cannot run") {
                "InvalidPlan"
            } else if reason.starts_with("deadline exceeded") {
                "DeadlineExceeded"
            } else if reason.contains("could not be scheduled") {
                "Unschedulable"
            } else if reason.contains("was deleted before it finished") {
                "JobDeleted"
            } else if reason.contains("OOMKilled") || reason.contains("out of memory") {
                "OutOfMemory"
            } else if reason.contains("image pull failure") {
                "ImagePullFailed"
            } else if reason.contains("the pod was evicted") {
                "Evicted"
            } else if reason.starts_with("interrupted") {
                "Interrupted"
            } else if run.exit_code.is_some() {
                "StepFailed"
            } else {
                "RunFailed"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut c = Vec::new();
        set(
            &mut c,
            "Succeeded",
            Status::Unknown,
            "Pending",
            "planning",
            Some(1),
        );
        c[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        set(
            &mut c,
            "Succeeded",
            Status::Unknown,
            "JobRunning",
            "Job x runs",
            Some(1),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, "2000-01-01T00:00:00Z");
        assert_eq!(c[0].reason, "JobRunning");
        set(
            &mut c,
            "Succeeded",
            Status::False,
            "StepFailed",
            "exit 3",
            Some(1),
        );
        assert_ne!(c[0].last_transition_time, "2000-01-01T00:00:00Z");
        assert_eq!(c[0].status, "False");
        set(&mut c, "Accepted", Status::True, "Accepted", "ok", Some(1));
        assert_eq!(c.len(), 2);
        assert_eq!(get(&c, "Accepted").unwrap().status, "True");
    }

    fn failed(reason: &str, exit: Option<i32>) -> RunRecord {
        RunRecord {
            exit_code: exit,
            reason: Some(reason.into()),
            ..RunRecord::sample("r", RunState::Failed)
        }
    }

    #[test]
    fn each_way_a_run_fails_has_its_own_reason() {
        let policy = crate::Error::Policy {
            toolchain: "python".into(),
            violations: vec!["image x is not allowed".into()],
        };
        for (reason, exit, want) in [
            (policy.to_string(), None, "PolicyViolation"),
            (
                "deadline exceeded: Job ns/j ran past".to_string(),
                None,
                "DeadlineExceeded",
            ),
            (
                "the pod could not be scheduled for 600s: 0/3 nodes".to_string(),
                None,
                "Unschedulable",
            ),
            (
                "Job ns/j was deleted before it finished".to_string(),
                None,
                "JobDeleted",
            ),
            (
                "container 'train' was killed for exceeding its memory limit (OOMKilled)"
                    .to_string(),
                Some(137),
                "OutOfMemory",
            ),
            (
                "container 'fetch' image pull failure (ErrImagePull) for x: no".to_string(),
                None,
                "ImagePullFailed",
            ),
            (
                "the pod was evicted: disk pressure".to_string(),
                None,
                "Evicted",
            ),
            (
                "container 'train' exited with code 3".to_string(),
                Some(3),
                "StepFailed",
            ),
            (
                "interrupted: the operator restarted".to_string(),
                None,
                "Interrupted",
            ),
            ("something else".to_string(), None, "RunFailed"),
        ] {
            assert_eq!(run_reason(&failed(&reason, exit)), want, "{reason}");
        }
    }
}
