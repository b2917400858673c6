//! The Kubernetes executor: a run is one `batch/v1` Job whose pod runs the
//! host's own phases (`legion step …`) around the plan's steps.
//!
//! - [`job`]: the Job for a training (containers, security, labels);
//! - [`step_image`]: the image a step with a Python environment runs in,
//!   built once per environment and reused by hash.
//!
//! The executor that creates the Job, follows it by a watch and keeps its
//! logs builds on these manifests.

pub mod job;
pub mod step_image;
