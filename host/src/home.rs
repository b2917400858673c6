//! The data directory (`--data-dir`, `LEGION_HOME`, default `~/.legion`) and
//! where each kind of state lives in it.

use std::path::{Path, PathBuf};

/// Layout of a Legion data directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// `$HOME/.legion`, or `./.legion` when `HOME` is unset.
    pub fn default_root() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".legion")
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite state database.
    pub fn database(&self) -> PathBuf {
        self.root.join("legion.db")
    }

    /// Registered toolchain components, by sha256.
    pub fn toolchain_blobs(&self) -> PathBuf {
        self.root.join("toolchains").join("sha256")
    }

    /// A run's folder (workspace and log).
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }

    /// The OCI image layout holding trained models.
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }

    /// The OCI image layout holding packaged images.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Python dependency layers already built, by key.
    pub fn python_layers(&self) -> PathBuf {
        self.root.join("cache").join("python-layers")
    }

    /// Python environments: `LEGION_ENV_DIR`, or `envs/` here.
    pub fn python_envs(&self) -> PathBuf {
        std::env::var_os("LEGION_ENV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("envs"))
    }

    /// The admin's plan policy.
    pub fn policy(&self) -> PathBuf {
        self.root.join("policy.json")
    }

    /// The public keys toolchains must be signed by (`*.pub`, SPKI PEM):
    /// none, no trust policy. `LEGION_TRUSTED_KEYS` names another folder
    /// (a cluster mounts the chart's keys there, read-only).
    pub fn trusted_keys(&self) -> PathBuf {
        match std::env::var_os("LEGION_TRUSTED_KEYS") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => self.root.join("trusted-keys"),
        }
    }

    /// Compiled components.
    pub fn component_cache(&self) -> PathBuf {
        self.root.join("cache").join("components")
    }
}
