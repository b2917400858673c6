//! One trait per contract interface, and the adapter that turns them into
//! the generated export traits.

use crate::{
    BatchRequest, ImagePlan, ModelManifest, PackagingRequest, Plan, ServicePlan, ServingRequest,
    ToolchainError, ToolchainInfo, TrainingRequest,
};

/// A toolchain that trains models (`legion:toolchain/trainer`).
pub trait Trainer {
    /// Says what the toolchain is: name, version, default image, parameters.
    fn describe() -> ToolchainInfo;

    /// Plans a training. The source is readable at [`crate::source_dir`].
    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError>;

    /// Reads the finished run's output at [`crate::output_dir`] and says what
    /// model it holds. The default reports that the toolchain does not collect.
    fn collect_training(request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        let _ = request;
        Err(ToolchainError::Unsupported(
            "this toolchain does not implement collect-training".to_string(),
        ))
    }
}

/// A toolchain that scores data with a stored model as a job
/// (`legion:toolchain/batch`; the SDK's `batch` feature).
pub trait Batch {
    /// Plans a batch inference job. The model's files are readable at
    /// [`crate::model_dir`]; the steps find them in `$LEGION_MODEL_DIR`,
    /// the data in `$LEGION_DATA_DIR`, and write results into
    /// `$LEGION_OUTPUT_DIR`.
    fn plan_batch_inference(request: BatchRequest) -> Result<Plan, ToolchainError>;
}

/// A toolchain that packages models into images (`legion:toolchain/packager`).
pub trait Packager {
    /// Says what the toolchain is.
    fn describe() -> ToolchainInfo;

    /// Plans an image for a stored model, readable at [`crate::model_dir`].
    fn plan_packaging(request: PackagingRequest) -> Result<ImagePlan, ToolchainError>;
}

/// How a packager's images are run (`legion:toolchain/server`). Every method
/// has a default, so `impl Server for MyPackager {}` is enough for images
/// that start the Legion model server from their entrypoint.
pub trait Server {
    /// Plans a service for a packaged image. The default runs the image's
    /// entrypoint on the requested port (8080 if none) with Legion's health
    /// paths.
    fn plan_serving(request: ServingRequest) -> Result<ServicePlan, ToolchainError> {
        Ok(ServicePlan::for_image(&request))
    }
}

/// Adapter from the SDK traits to the generated export traits; used by
/// [`crate::export_toolchain!`].
#[doc(hidden)]
pub struct Export<T>(std::marker::PhantomData<T>);

#[cfg(feature = "trainer")]
impl<T: Trainer> crate::bindings::exports::legion::toolchain::trainer::Guest for Export<T> {
    fn describe() -> ToolchainInfo {
        T::describe()
    }
    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        T::plan_training(request)
    }
    fn collect_training(request: TrainingRequest) -> Result<ModelManifest, ToolchainError> {
        T::collect_training(request)
    }
}

#[cfg(feature = "batch")]
impl<T: Batch> crate::bindings::exports::legion::toolchain::batch::Guest for Export<T> {
    fn plan_batch_inference(request: BatchRequest) -> Result<Plan, ToolchainError> {
        T::plan_batch_inference(request)
    }
}

#[cfg(feature = "packager")]
impl<T: Packager> crate::bindings::exports::legion::toolchain::packager::Guest for Export<T> {
    fn describe() -> ToolchainInfo {
        T::describe()
    }
    fn plan_packaging(request: PackagingRequest) -> Result<ImagePlan, ToolchainError> {
        T::plan_packaging(request)
    }
}

#[cfg(feature = "packager")]
impl<T: Server> crate::bindings::exports::legion::toolchain::server::Guest for Export<T> {
    fn plan_serving(request: ServingRequest) -> Result<ServicePlan, ToolchainError> {
        T::plan_serving(request)
    }
}
