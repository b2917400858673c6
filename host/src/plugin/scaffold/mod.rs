//! `legion toolchain new`: a plugin crate that builds for `wasm32-wasip2`
//! and registers without edits, anywhere.
//!
//! The crate gets the SDK this `legion` was built with, vendored in
//! `legion-sdk/` (the SDK is not on crates.io; a vendored copy also pins
//! the contract the plugin targets to one this host runs), a `Cargo.toml`
//! with the cdylib and the small release profile a plugin wants, a
//! `src/lib.rs` for the kind asked for with a native test against real
//! folders, and a README with the commands.

use std::path::{Path, PathBuf};

use crate::names::ToolchainName;
use crate::Error;

/// What the plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Plans trainings and collects their models.
    Trainer,
    /// Plans model images and how they are served.
    Packager,
}

/// The SDK's files, as this host was built with them: (path in the
/// crate, contents). `sdk_files_are_all_vendored` keeps the list whole.
const SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../../sdk/Cargo.toml")),
    ("README.md", include_str!("../../../../sdk/README.md")),
    ("build.rs", include_str!("../../../../sdk/build.rs")),
    ("src/lib.rs", include_str!("../../../../sdk/src/lib.rs")),
    (
        "src/builders.rs",
        include_str!("../../../../sdk/src/builders.rs"),
    ),
    (
        "src/folders.rs",
        include_str!("../../../../sdk/src/folders.rs"),
    ),
    ("src/host.rs", include_str!("../../../../sdk/src/host.rs")),
    (
        "src/traits.rs",
        include_str!("../../../../sdk/src/traits.rs"),
    ),
    (
        "wit/toolchain.wit",
        include_str!("../../../../sdk/wit/toolchain.wit"),
    ),
];

/// The contract the vendored SDK targets.
pub const CONTRACT: &str = "0.2.0";

/// Writes a new plugin crate `name` into `dir` (made; it must not exist or
/// be empty). Returns the files written, relative to `dir`.
pub fn create(dir: &Path, name: &ToolchainName, kind: Kind) -> Result<Vec<PathBuf>, Error> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::InvalidArgument {
            field: "--dir".into(),
            message: format!(
                "{} exists and is not empty: a new toolchain goes into a folder of its own",
                dir.display()
            ),
        });
    }
    let name = name.as_str();
    let lib = name.replace('-', "_");
    let (kind_word, features, source, try_it) = match kind {
        Kind::Trainer => (
            "trainer",
            "\"trainer\"",
            include_str!("trainer.rs.tmpl"),
            format!("legion train PROJECT -t {name} --name my-model"),
        ),
        Kind::Packager => (
            "packager",
            "\"packager\"",
            include_str!("packager.rs.tmpl"),
            format!("legion package my-model:1 --toolchain {name}"),
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{kind}}", kind_word)
            .replace("{{features}}", features)
            .replace("{{contract}}", CONTRACT)
            .replace("{{try}}", &try_it)
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), fill(include_str!("Cargo.toml.tmpl"))),
        ("src/lib.rs".into(), fill(source)),
        ("README.md".into(), fill(include_str!("README.md.tmpl"))),
        (".gitignore".into(), "/target\n".into()),
    ];
    for (path, text) in SDK {
        files.push((Path::new("legion-sdk").join(path), (*text).to_string()));
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `sdk/` (but the build's own) is in [`SDK`], so the
    /// vendored copy builds.
    #[test]
    fn sdk_files_are_all_vendored() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    found.push(p.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        found.sort();
        let mut listed: Vec<String> = SDK.iter().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(found, listed);
        assert!(SDK
            .iter()
            .any(|(p, t)| *p == "src/lib.rs" && t.contains(&format!("\"{CONTRACT}\""))));
    }

    #[test]
    fn fills_the_templates_and_refuses_a_folder_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let name: ToolchainName = "acme-trainer".parse().unwrap();
        let files = create(&dir.path().join("acme"), &name, Kind::Trainer).unwrap();
        assert!(files.contains(&PathBuf::from("legion-sdk/wit/toolchain.wit")));
        let cargo = std::fs::read_to_string(dir.path().join("acme/Cargo.toml")).unwrap();
        assert!(
            cargo.contains("name = \"acme-trainer\"") && cargo.contains("features = [\"trainer\"]")
        );
        let lib = std::fs::read_to_string(dir.path().join("acme/src/lib.rs")).unwrap();
        assert!(lib.contains("acme_trainer.wasm") && !lib.contains("{{"));
        let err = create(&dir.path().join("acme"), &name, Kind::Packager).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
