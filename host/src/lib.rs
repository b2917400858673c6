//! # Legion
//!
//! The Legion host: it loads toolchain plugins (WebAssembly components),
//! asks them for plans, and runs those plans.
//!
//! - [`plugin`]: the sandboxed plugin runtime and the toolchain registry;
//! - [`plan`]: the host's model of requests, plans and manifests;
//! - [`store`]: state (SQLite by default): toolchains, runs;
//! - [`fetch`]: training sources (folders, git) and data bindings;
//! - [`exec`]: executors that run plans, Python environments, run logs;
//! - [`oci`]: models as OCI artifacts, the layout store, registries;
//! - [`train`]: a training end to end;
//! - [`batch`]: a batch inference job: a stored model scores data;
//! - [`package`]: a packaging end to end: a stored model into a runnable
//!   image (the dependency layer, the server binary);
//! - [`serve`]: preparing a stored model for the model server (the
//!   `legion-serve` crate);
//! - [`operator`]: the custom resources and their controllers;
//! - [`home`]: the data directory layout;
//! - [`names`]: checked model, version and toolchain names;
//! - [`api`]: EDI, the HTTP API (`legion server`);
//! - [`cli`]: the `legion` command line.

pub mod api;
pub mod batch;
pub mod cli;
mod error;
pub mod exec;
pub mod fetch;
pub mod fsutil;
pub mod home;
pub mod names;
pub mod oci;
pub mod operator;
pub mod package;
pub mod plan;
pub mod plugin;
pub mod serve;
pub mod store;
pub mod train;

pub use error::Error;
