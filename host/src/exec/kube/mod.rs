//! The Kubernetes executor: a run is one `batch/v1` Job whose pod runs the
//! host's own phases (`legion step …`) around the plan's steps.
//!
//! - [`job`]: the Job for a training (containers, security, labels).
//!
//! The executor that creates the Job, follows it by a watch and keeps its
//! logs builds on these manifests.

pub mod job;
