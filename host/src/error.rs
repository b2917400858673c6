//! The library's one error type. Every variant names what the user needs to
//! fix: the file, the toolchain, the field, the limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::ToolchainError;

/// A boxed cause: how wasmtime's errors (and other `anyhow` chains) are kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors from the Legion library. A variant that wraps a cause keeps it as
/// its `source()`; its message also shows that cause, so the one line a
/// person sees is whole.
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
    #[error("toolchain '{toolchain}' exports none of the legion:toolchain interfaces (trainer, packager, server); it exports {exports}. A plugin crate calls `legion_sdk::export_toolchain!(YourType);` and sets `crate-type = [\"cdylib\"]` under [lib] in Cargo.toml")]
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
    /// wasmtime refused to compile (or serialise) the component.
    #[error("toolchain '{toolchain}' does not compile: {source:#}")]
    Compile {
        /// Toolchain name.
        toolchain: String,
        /// wasmtime's error.
        #[source]
        source: BoxError,
    },
    /// The component imports something the host does not provide, or its
    /// exports have the wrong types.
    #[error("toolchain '{toolchain}' cannot be linked: {what}{source:#}")]
    Link {
        /// Toolchain name.
        toolchain: String,
        /// What was being linked (`export `x` does not match the contract: `), or empty.
        what: String,
        /// wasmtime's error.
        #[source]
        source: BoxError,
    },
    /// The engine could not be set up, or a task running it failed.
    #[error("the plugin engine failed ({context}): {source:#}")]
    Engine {
        /// What it was doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
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
    /// A name that is not allowed.
    #[error(transparent)]
    InvalidName(#[from] legion_serve::InvalidName),
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
    /// The trust policy refuses a toolchain (unsigned, or signed by no
    /// trusted key), or a key or signature is unusable.
    #[error("{subject}: {message}")]
    Untrusted {
        /// The toolchain (reference or file) or key file.
        subject: String,
        /// Why, naming the key ids.
        message: String,
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
    /// A toolchain's answer is unusable (not a crash, not its own error).
    #[error("toolchain '{toolchain}': {message}")]
    BadOutput {
        /// Toolchain.
        toolchain: String,
        /// What is wrong with the answer.
        message: String,
    },
    /// The Kubernetes API refused or could not be reached.
    #[error("kubernetes (namespace {namespace}): {message}")]
    Kubernetes {
        /// The namespace worked in.
        namespace: String,
        /// What went wrong.
        message: String,
    },
    /// A base image cannot be used.
    #[error("base image {base}: {message}")]
    BaseImage {
        /// The base as given.
        base: String,
        /// What is wrong with it.
        message: String,
    },
    /// A path an image plan places a file at is not inside the image.
    #[error("image plan: path '{path}' is refused: {message}")]
    ImagePath {
        /// The path as given.
        path: String,
        /// Why.
        message: String,
    },
    /// A batch inference job failed after it started.
    #[error("batch job {id}: {message}\n  its log: {}", log.display())]
    Batch {
        /// The job's id.
        id: String,
        /// What went wrong.
        message: String,
        /// Its log, kept.
        log: std::path::PathBuf,
    },
    /// Building an image failed.
    #[error("packaging: {message}")]
    Package {
        /// What went wrong.
        message: String,
    },
    /// A toolchain returned a plan no host can run (a fault of the
    /// toolchain, not an admin rule); nothing ran.
    #[error("toolchain '{toolchain}' returned a plan Legion cannot run (a fault in the toolchain, not an admin rule):\n  - {}", problems.join("\n  - "))]
    BadPlan {
        /// Toolchain.
        toolchain: String,
        /// Every problem.
        problems: Vec<String>,
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
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What happened.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for a step's process failed.
    #[error("waiting for step '{step}': {source}")]
    Step {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stored or pulled document is not what it should be.
    #[error("{}: not {what}: {source}", path.display())]
    NotOci {
        /// The file.
        path: PathBuf,
        /// What it should be (`an OCI index`, …).
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A layer entry that would land outside the folder it unpacks into.
    #[error("{}: layer entry {} escapes the folder it is unpacked into", blob.display(), entry.display())]
    LayerEscape {
        /// The layer blob.
        blob: PathBuf,
        /// The entry.
        entry: PathBuf,
    },
    /// A folder could not be preopened for a plugin.
    #[error("cannot preopen {} for the plugin: {source:#}", path.display())]
    Preopen {
        /// The folder.
        path: PathBuf,
        /// wasmtime's error.
        #[source]
        source: BoxError,
    },
    /// A JSON document could not be written or read back.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        #[source]
        source: serde_json::Error,
    },
    /// The model server failed.
    #[error(transparent)]
    Serve(#[from] legion_serve::Error),
    /// The API server (`--server`) answered with an error.
    #[error("{server}: {message} ({status} {code})")]
    Remote {
        /// The server's URL.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The API's error code (`forbidden`, `invalid-argument`, …).
        code: String,
        /// The API's message.
        message: String,
    },
    /// The API server (`--server`) could not be reached or its answer read.
    #[error("{server}: {}", causes(source))]
    Unreachable {
        /// The server's URL.
        server: String,
        /// Why.
        #[source]
        source: reqwest::Error,
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

/// An error and its causes, `: `-separated (reqwest's own message names
/// the request and leaves out why it failed).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A JSON error on `path`.
    pub fn json(path: &Path, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.to_path_buf(),
            source,
        }
    }
}
