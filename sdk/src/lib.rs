//! # legion-sdk
//!
//! Everything a Legion toolchain author needs: the contract's request and
//! result types with Rust names, one trait per interface ([`Trainer`],
//! [`Packager`], [`Server`]) with default methods for the optional calls,
//! typed builders ([`Step::new`], [`Plan::new`], …), the host's log and
//! config functions, and [`export_toolchain!`] to make a type the plugin.
//!
//! ```ignore
//! use legion_sdk::*;
//!
//! struct Hello;
//!
//! impl Trainer for Hello {
//!     fn describe() -> ToolchainInfo {
//!         ToolchainInfo::new("hello", "0.1.0", "says hello")
//!     }
//!     fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
//!         Ok(Plan::new().step(Step::new("train", "python:3.11").command(["python", "train.py"])))
//!     }
//! }
//!
//! export_toolchain!(Hello);
//! ```
//!
//! The crate's features pick the world the plugin is built for: `trainer`
//! (the default) exports the `trainer` interface, `batch` adds `batch`
//! ([`Batch`]: plan batch inference jobs), `packager` exports `packager`
//! and `server`. A plugin crate is
//! a `cdylib` built with `cargo build --target wasm32-wasip2`.
#![deny(missing_docs)]

mod builders;
mod folders;
pub mod host;
mod traits;

pub use builders::*;
pub use folders::{model_dir, output_dir, source_dir, testing};
pub use traits::*;

/// Bindings generated from `wit/toolchain.wit` (contract
/// [`CONTRACT_VERSION`]). Authors use the re-exports at
/// the crate root instead.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    // Exactly one world is generated, chosen by features: a world's
    // description is linked into the plugin, and a component must export
    // every interface its world names, so a trainer must not carry the
    // packager world. Every world but the full one generates all types, so
    // every build of the SDK offers the same type names.
    macro_rules! world {
        ($world:literal) => {
            wit_bindgen::generate!({
                world: $world,
                path: "wit",
                pub_export_macro: true,
                export_macro_name: "__export_world",
                default_bindings_module: "legion_sdk::bindings",
                generate_all,
            });
        };
    }
    #[cfg(all(feature = "trainer", feature = "batch", feature = "packager"))]
    world!("toolchain-plugin");
    #[cfg(all(feature = "trainer", not(feature = "batch"), feature = "packager"))]
    world!("trainer-packager-plugin");
    #[cfg(all(feature = "trainer", feature = "batch", not(feature = "packager")))]
    world!("batch-trainer-plugin");
    #[cfg(all(feature = "trainer", not(feature = "batch"), not(feature = "packager")))]
    world!("trainer-plugin");
    #[cfg(all(feature = "packager", not(feature = "trainer")))]
    world!("packager-plugin");
    #[cfg(not(any(feature = "trainer", feature = "packager")))]
    compile_error!("legion-sdk needs the `trainer` or the `packager` feature (or both)");
}

pub use bindings::legion::toolchain::host::LogLevel;
pub use bindings::legion::toolchain::types::{
    BatchRequest, DataBinding, FileEntry, HealthCheck, ImagePlan, ImageTarget, IntegerRange,
    KeyValue, Layer, ModelId, ModelManifest, NumberRange, PackagingRequest, ParameterInfo,
    ParameterType, Plan, PythonEnvironment, PythonLayer, Resources, ServicePlan, ServingRequest,
    Signature, Source, Step, TensorSpec, ToolchainError, ToolchainInfo, TrainingRequest,
};

/// The contract version this SDK builds plugins for.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Where the host preopens the fetched source during `plan-training`
/// (read it through [`source_dir`], which native tests can point elsewhere).
pub const SOURCE_DIR: &str = "/source";
/// Where the host preopens the finished run's output during `collect-training`.
pub const OUTPUT_DIR: &str = "/output";
/// Where the host preopens the stored model during `plan-packaging`.
pub const MODEL_DIR: &str = "/model";

/// Makes `$ty` the plugin: exports the interfaces of the world the SDK's
/// features select, forwarding each call to `$ty`'s [`Trainer`],
/// [`Packager`] and [`Server`] implementations.
#[macro_export]
macro_rules! export_toolchain {
    ($ty:ty) => {
        #[doc(hidden)]
        type __LegionToolchainExport = $crate::Export<$ty>;
        $crate::bindings::__export_world!(__LegionToolchainExport with_types_in $crate::bindings);
    };
}
