//! The folders the host preopens for a call, and a way for native tests
//! to put real folders in their place.
//!
//! In a plugin (`wasm32-wasip2`) [`source_dir`], [`output_dir`] and
//! [`model_dir`] are always `/source`, `/output` and `/model`. In a native
//! test they are whatever [`testing::with_folders`] set for the current
//! thread, so `plan_training` and `collect_training` can be tested against
//! files the test wrote.

use std::path::PathBuf;

#[cfg(not(target_family = "wasm"))]
std::thread_local! {
    static FOLDERS: std::cell::RefCell<Option<testing::Folders>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(not(target_family = "wasm"))]
fn overridden(pick: fn(&testing::Folders) -> &Option<PathBuf>) -> Option<PathBuf> {
    FOLDERS.with(|f| f.borrow().as_ref().and_then(|f| pick(f).clone()))
}

#[cfg(target_family = "wasm")]
fn overridden(_: fn(&testing::Folders) -> &Option<PathBuf>) -> Option<PathBuf> {
    None
}

/// The fetched source, readable in `plan-training` and `collect-training`
/// ([`crate::SOURCE_DIR`] in a plugin).
pub fn source_dir() -> PathBuf {
    overridden(|f| &f.source).unwrap_or_else(|| PathBuf::from(crate::SOURCE_DIR))
}

/// The finished training's output, readable in `collect-training`
/// ([`crate::OUTPUT_DIR`] in a plugin).
pub fn output_dir() -> PathBuf {
    overridden(|f| &f.output).unwrap_or_else(|| PathBuf::from(crate::OUTPUT_DIR))
}

/// The stored model's files, readable in `plan-packaging` and
/// `plan-batch-inference` ([`crate::MODEL_DIR`] in a plugin).
pub fn model_dir() -> PathBuf {
    overridden(|f| &f.model).unwrap_or_else(|| PathBuf::from(crate::MODEL_DIR))
}

/// Native tests of a plugin's file logic.
pub mod testing {
    use std::path::PathBuf;

    /// Real folders standing in for the preopened ones; `None` keeps the
    /// fixed path.
    #[derive(Debug, Clone, Default)]
    pub struct Folders {
        /// Stands in for `/source`.
        pub source: Option<PathBuf>,
        /// Stands in for `/output`.
        pub output: Option<PathBuf>,
        /// Stands in for `/model`.
        pub model: Option<PathBuf>,
    }

    /// A minimal training request, for native tests: model `m:1`, the
    /// source `.`, no entry point, parameters, data or resources; set what
    /// a test needs on it.
    pub fn training_request() -> crate::TrainingRequest {
        crate::TrainingRequest {
            model: crate::ModelId {
                name: "m".into(),
                version: "1".into(),
            },
            entrypoint: None,
            args: vec![],
            hyper_parameters: vec![],
            env: vec![],
            image: None,
            resources: crate::Resources::none(),
            source: crate::Source {
                uri: ".".into(),
                reference: None,
                commit: None,
            },
            data: vec![],
            work_dir: None,
        }
    }

    /// Runs `f` with [`crate::source_dir`], [`crate::output_dir`] and
    /// [`crate::model_dir`] answering `folders` on this thread (tests run
    /// on threads of their own, so they do not see each other's folders).
    /// Not available in a plugin build.
    #[cfg(not(target_family = "wasm"))]
    pub fn with_folders<R>(folders: Folders, f: impl FnOnce() -> R) -> R {
        struct Reset(Option<Folders>);
        impl Drop for Reset {
            fn drop(&mut self) {
                let old = self.0.take();
                super::FOLDERS.with(|cell| *cell.borrow_mut() = old);
            }
        }
        let old = super::FOLDERS.with(|cell| cell.borrow_mut().replace(folders));
        let _reset = Reset(old);
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{with_folders, Folders};
    use super::*;

    #[test]
    fn folders_are_fixed_unless_a_test_sets_them() {
        assert_eq!(source_dir(), PathBuf::from("/source"));
        let seen = with_folders(
            Folders {
                source: Some("/tmp/src".into()),
                model: Some("/tmp/m".into()),
                ..Default::default()
            },
            || (source_dir(), output_dir(), model_dir()),
        );
        assert_eq!(seen, ("/tmp/src".into(), "/output".into(), "/tmp/m".into()));
        assert_eq!(source_dir(), PathBuf::from("/source"));
    }
}
