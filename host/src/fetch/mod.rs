//! Fetching what a training needs before the toolchain is asked: the source
//! (a local folder, or a git repository at a reference, with the commit
//! recorded) and the data bindings (`file://`, `http(s)://`, `s3://`,
//! `gs://`, `az://`).
//!
//! These are host steps: they run in the host (or, on a cluster, in the
//! `legion` binary inside a pod), never in a plugin.

pub mod data;
pub mod source;

pub use data::fetch_data;
pub use source::{fetch_source, SourceSpec};
