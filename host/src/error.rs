//! The library's one error type. Every variant names what the user needs to
//! fix: the file, the toolchain, the field, the limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::ToolchainError;

/// Errors from the Legion library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not WebAssembly.
    #[error("{file} is not a WebAssembly file (no `\\0asm` preamble)")]
    NotWasm {
        /// The file.
        file: String,
    },
    /// A core module was given where a component is needed.
    #[error("{file} is a core WebAssembly module, not a component: build the toolchain with `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)")]
    CoreModule {
        /// The file.
        file: String,
    },
    /// The component exports no contract interface.
    #[error("toolchain '{toolchain}' exports none of the legion:toolchain interfaces (trainer, packager, server); it exports {exports}")]
    NoInterfaces {
        /// Toolchain name.
        toolchain: String,
        /// What it does export.
        exports: String,
    },
    /// The component targets a contract version this host does not support.
    #[error("toolchain '{toolchain}' targets {found}, but this host supports {supported}; rebuild it against a supported legion-sdk")]
    ContractVersion {
        /// Toolchain name.
        toolchain: String,
        /// Version found.
        found: String,
        /// Versions supported.
        supported: String,
    },
    /// wasmtime refused to compile the component.
    #[error("toolchain '{toolchain}' does not compile: {message}")]
    Compile {
        /// Toolchain name.
        toolchain: String,
        /// wasmtime's message.
        message: String,
    },
    /// The component imports something the host does not provide, or its
    /// exports have the wrong types.
    #[error("toolchain '{toolchain}' cannot be linked: {message}")]
    Link {
        /// Toolchain name.
        toolchain: String,
        /// wasmtime's message.
        message: String,
    },
    /// The engine could not be set up.
    #[error("the plugin engine could not start: {0}")]
    Engine(String),
    /// No toolchain of that name.
    #[error("unknown toolchain '{name}'; registered: {known}")]
    UnknownToolchain {
        /// The name asked for.
        name: String,
        /// Names that exist.
        known: String,
    },
    /// A toolchain of that name exists already.
    #[error("toolchain '{name}' is already registered ({digest}); pass --replace to replace it")]
    AlreadyRegistered {
        /// Name.
        name: String,
        /// Its current digest.
        digest: String,
    },
    /// A toolchain name that is not allowed.
    #[error("invalid toolchain name '{name}': use 1-63 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// The stored wasm no longer matches its pinned digest.
    #[error("toolchain '{toolchain}': {file} has {actual}, but the toolchain is pinned to {expected}; re-register it")]
    DigestMismatch {
        /// Toolchain.
        toolchain: String,
        /// Pinned digest.
        expected: String,
        /// Digest found.
        actual: String,
        /// The file.
        file: PathBuf,
    },
    /// The toolchain does not export the interface a call needs.
    #[error("toolchain '{toolchain}' does not export `{interface}`, so it cannot {call}")]
    NotExported {
        /// Toolchain.
        toolchain: String,
        /// Interface needed.
        interface: String,
        /// The call.
        call: String,
    },
    /// The call ran past its deadline.
    #[error("toolchain '{toolchain}' {call}: deadline of {} ms exceeded; the call was stopped", limit.as_millis())]
    Deadline {
        /// Toolchain.
        toolchain: String,
        /// The call.
        call: &'static str,
        /// The deadline.
        limit: Duration,
    },
    /// The call tried to use more memory than allowed.
    #[error("toolchain '{toolchain}' {call}: memory cap of {} MiB exceeded; the call was stopped", limit >> 20)]
    MemoryCap {
        /// Toolchain.
        toolchain: String,
        /// The call.
        call: &'static str,
        /// The cap in bytes.
        limit: usize,
    },
    /// The call returned more than allowed.
    #[error(
        "toolchain '{toolchain}' {call}: result of {size} bytes exceeds the cap of {limit} bytes"
    )]
    ResultTooLarge {
        /// Toolchain.
        toolchain: String,
        /// The call.
        call: &'static str,
        /// Result size.
        size: usize,
        /// Cap.
        limit: usize,
    },
    /// The plugin trapped (a panic, an invalid operation).
    #[error("toolchain '{toolchain}' {call} crashed: {message}{}", if stderr.is_empty() { String::new() } else { format!("\n  plugin stderr:\n    {}", stderr.replace('\n', "\n    ")) })]
    Trap {
        /// Toolchain.
        toolchain: String,
        /// The call.
        call: &'static str,
        /// The trap.
        message: String,
        /// Last lines the plugin wrote to stderr.
        stderr: String,
    },
    /// The plugin answered with an error of its own.
    #[error("toolchain '{toolchain}' {call} failed: {error}")]
    Toolchain {
        /// Toolchain.
        toolchain: String,
        /// The call.
        call: &'static str,
        /// What it said.
        error: ToolchainError,
    },
    /// A request file that does not parse.
    #[error("{file}: {message}")]
    InvalidRequest {
        /// The file.
        file: String,
        /// What is wrong, with the field's path.
        message: String,
    },
    /// A user-supplied value that is wrong.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The argument or field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A registry refused or could not be reached.
    #[error("registry {reference}: {message}")]
    Registry {
        /// The reference being pushed or pulled.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// A plan broke the admin's policy; nothing ran.
    #[error("toolchain '{toolchain}' plan refused by policy:\n  - {}", violations.join("\n  - "))]
    Policy {
        /// Toolchain.
        toolchain: String,
        /// Every rule broken.
        violations: Vec<String>,
    },
    /// The training source could not be fetched.
    #[error("source {source_uri}: {message}")]
    Source {
        /// The source as given.
        source_uri: String,
        /// What went wrong.
        message: String,
    },
    /// A data binding could not be fetched.
    #[error("data {uri}: {message}")]
    Data {
        /// The data URI.
        uri: String,
        /// What went wrong.
        message: String,
    },
    /// A Python environment could not be made.
    #[error("python environment: {message}")]
    Environment {
        /// What went wrong.
        message: String,
    },
    /// A file system operation failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// The state database failed.
    #[error("state database {}: {message}", path.display())]
    Database {
        /// The database.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}
