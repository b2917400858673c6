//! Compiled components on disk.
//!
//! A toolchain is compiled once, at registration, and its native code kept at
//! `<data>/cache/components/<sha256>-<engine>.cwasm`. Only this host writes
//! there, atomically (temp file + rename), and only files named by a
//! registered digest are ever loaded: precompiled code from anywhere else is
//! never deserialised.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::engine::Runtime;
use crate::Error;

/// Where compiled components live.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

/// Whether a load hit the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialised from the cache.
    Hit,
    /// Compiled from the wasm and written to the cache.
    Compiled,
}

impl ComponentCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ComponentCache { dir: dir.into() }
    }

    /// The cache file for a wasm digest (hex) on this engine.
    pub fn path(&self, runtime: &Runtime, digest_hex: &str) -> PathBuf {
        self.dir
            .join(format!("{digest_hex}-{}.cwasm", runtime.compat_hash()))
    }

    /// Compiles `bytes` and writes the result to the cache.
    pub fn compile(
        &self,
        runtime: &Runtime,
        toolchain: &str,
        digest_hex: &str,
        bytes: &[u8],
    ) -> Result<Component, Error> {
        let component = Component::new(runtime.engine(), bytes).map_err(|e| Error::Compile {
            toolchain: toolchain.to_string(),
            source: e.into(),
        })?;
        self.store(runtime, toolchain, digest_hex, &component)?;
        Ok(component)
    }

    fn store(
        &self,
        runtime: &Runtime,
        toolchain: &str,
        digest_hex: &str,
        component: &Component,
    ) -> Result<(), Error> {
        let code = component.serialize().map_err(|e| Error::Compile {
            toolchain: toolchain.to_string(),
            source: e.context("cannot serialise").into(),
        })?;
        crate::fsutil::write_atomic(&self.path(runtime, digest_hex), &code)
    }

    /// Loads the compiled component for `digest_hex`, compiling `wasm_path`
    /// (whose sha256 must equal the digest) when the cache has no usable copy.
    pub fn load(
        &self,
        runtime: &Runtime,
        toolchain: &str,
        digest_hex: &str,
        wasm_path: &Path,
    ) -> Result<(Component, CacheOutcome), Error> {
        let cached = self.path(runtime, digest_hex);
        if cached.is_file() {
            // SAFETY: the file is in this host's private cache, written only by
            // `store` above from a component this engine compiled, under a
            // name that binds it to the engine's compatibility hash; wasmtime
            // additionally checks its header against the engine.
            match unsafe { Component::deserialize_file(runtime.engine(), &cached) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(toolchain, path = %cached.display(), "compiled cache unusable, recompiling: {e:#}")
                }
            }
        }
        let bytes = std::fs::read(wasm_path).map_err(|e| Error::io(wasm_path, e))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != digest_hex {
            return Err(Error::DigestMismatch {
                toolchain: toolchain.to_string(),
                expected: format!("sha256:{digest_hex}"),
                actual: format!("sha256:{actual}"),
                file: wasm_path.to_path_buf(),
            });
        }
        Ok((
            self.compile(runtime, toolchain, digest_hex, &bytes)?,
            CacheOutcome::Compiled,
        ))
    }

    /// Removes the cached code for a digest, if any.
    pub fn remove(&self, runtime: &Runtime, digest_hex: &str) {
        let _ = std::fs::remove_file(self.path(runtime, digest_hex));
    }
}
