//! The toolchain plugin runtime.
//!
//! Owns everything between a `.wasm` file and a typed answer:
//!
//! - [`engine`]: one wasmtime [`Engine`](wasmtime::Engine) per process, with
//!   epoch interruption, a pooling allocator sized to the memory cap, and the
//!   ticker thread that advances epochs;
//! - [`limits`]: the per-call budget (deadline, memory, result and output
//!   sizes) and the limiter that enforces memory;
//! - [`cache`]: compiled components on disk, keyed by the wasm's sha256 and
//!   the engine's compatibility hash, so a toolchain is compiled once;
//! - [`inspect`]: what a file is (core module, component), which interfaces
//!   it exports and which contract version it targets;
//! - [`sandbox`]: the per-call [`Store`](wasmtime::Store): WASI deny-by-default
//!   with only the call's read-only preopens, captured stdout/stderr, the
//!   `host` import;
//! - [`call`]: a loaded [`Plugin`] and its typed calls;
//! - [`registry`]: registering toolchains by sha256 and loading them by name;
//! - [`scaffold`]: `legion toolchain new`, a plugin crate on the vendored SDK.
//!
//! A plugin is untrusted: every call gets a fresh store, a deadline, a
//! memory cap and caps on what it returns, and any way it can fail (trap,
//! loop, allocation, garbage) comes back as an [`Error`](crate::Error) that
//! names the toolchain and the limit; the runtime goes on serving.
#![deny(missing_docs)]

pub(crate) mod bindings;
pub mod cache;
pub mod call;
pub(crate) mod convert;
pub mod engine;
pub mod inspect;
pub mod limits;
pub mod registry;
pub mod sandbox;
pub mod scaffold;
pub mod trust;

pub use call::{Interface, Plugin};
pub use engine::Runtime;
pub use inspect::{ContractVersion, SUPPORTED_CONTRACTS};
pub use limits::Limits;
pub use registry::{ToolchainRecord, Toolchains};
