//! Built-in `docker-rest` packager: packages a stored model as an image that
//! serves it over REST with the Legion model server. Packaging itself is
//! filled in by the packaging issue; until then this plugin describes itself
//! and refuses to plan with an `unsupported` error.

use legion_sdk::*;

struct DockerRest;

impl Packager for DockerRest {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new(
            "docker-rest",
            env!("CARGO_PKG_VERSION"),
            "packages a model as a REST-serving OCI image",
        )
        .default_image("debian:bookworm-slim")
        .parameter("port", "int", Some("8080"), "port the server listens on")
        .parameter("workers", "int", Some("1"), "Python worker processes")
    }

    fn plan_packaging(_request: PackagingRequest) -> Result<ImagePlan, ToolchainError> {
        Err(ToolchainError::Unsupported(
            "docker-rest packaging is not available in this Legion version".into(),
        ))
    }
}

impl Server for DockerRest {}

export_toolchain!(DockerRest);
