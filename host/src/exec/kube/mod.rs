//! The Kubernetes executor: a run is one `batch/v1` Job whose pod runs the
//! host's own phases (`legion step …`) around the plan's steps.
//!
//! - [`job`]: the Job for a training (containers, security, labels);
//! - [`step_image`]: the image a step with a Python environment runs in,
//!   built once per environment and reused by hash;
//! - [`runner`]: creating a Job and following it by watches to its end,
//!   with every container's log kept in the run's log;
//! - [`executor`]: a planned training to its Job (source and step images
//!   pushed where the pod reaches them), created and followed.

pub mod executor;
pub mod job;
pub mod runner;
pub mod step_image;

use std::path::Path;

use crate::Error;

/// A client for the cluster of `kubeconfig`, or else of the usual places
/// (`KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    // Both rustls crypto providers are linked (kube's ring, reqwest's
    // aws-lc-rs); rustls needs one named for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = |message: String| Error::Kubernetes {
        namespace: "-".into(),
        message,
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| bad(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| bad(format!("no cluster configured: {e}")))?,
    };
    kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
}
