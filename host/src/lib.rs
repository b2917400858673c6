//! # Legion
//!
//! The Legion host: it loads toolchain plugins (WebAssembly components),
//! asks them for plans, and runs those plans.
//!
//! - [`plugin`]: the sandboxed plugin runtime and the toolchain registry;
//! - [`plan`]: the host's model of requests, plans and manifests;
//! - [`store`]: state (SQLite by default);
//! - [`home`]: the data directory layout;
//! - [`cli`]: the `legion` command line.

pub mod cli;
mod error;
pub mod fsutil;
pub mod home;
pub mod plan;
pub mod plugin;
pub mod store;

pub use error::Error;
