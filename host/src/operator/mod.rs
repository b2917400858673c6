//! The Legion operator: custom resources (`legion-platform.org/v1alpha1`)
//! and the controllers that reconcile them through the same pipelines as
//! the command line.
//!
//! - [`crd`]: the custom resource types, from which the CRDs are generated.

pub mod crd;
