//! The training source: a local folder (copied, so the run cannot change
//! it) or a git repository at a branch, tag or commit.
//!
//! Git is driven through the `git` command: gix clones well but has no
//! checkout of an arbitrary revision into a work tree, and `git` is present
//! wherever sources come from git.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::exec::RunLog;
use crate::plan::Source;
use crate::Error;

/// What the user named as the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A local folder.
    Local(PathBuf),
    /// A source folder pushed as an OCI artifact (`oci://REGISTRY/REPO@DIGEST`).
    Oci(String),
    /// A git repository and an optional reference (`URL#REF`).
    Git {
        /// Clone URL (https, ssh, file, or a path to a repository).
        url: String,
        /// Branch, tag or commit; `None` is the default branch.
        reference: Option<String>,
    },
}

impl SourceSpec {
    /// Reads `SOURCE` as `legion train` takes it: a URL (`https://`,
    /// `ssh://`, `git@…`, `file://`, or anything ending in `.git`), with
    /// `#REF`, is a git source; anything else is a local folder.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if let Some(reference) = text.strip_prefix("oci://") {
            return Ok(SourceSpec::Oci(reference.to_string()));
        }
        let (base, reference) = match text.split_once('#') {
            Some((b, r)) if !r.is_empty() => (b, Some(r.to_string())),
            Some((b, _)) => (b, None),
            None => (text, None),
        };
        let looks_git = base.contains("://")
            || base.starts_with("git@")
            || base.trim_end_matches('/').ends_with(".git");
        if looks_git {
            return Ok(SourceSpec::Git {
                url: base.to_string(),
                reference,
            });
        }
        if reference.is_some() {
            return Err(Error::InvalidArgument {
                field: "SOURCE".into(),
                message: format!("'{text}': a #ref needs a git URL (file://, https://, ssh://, or a path ending in .git)"),
            });
        }
        let path = PathBuf::from(base);
        if !path.is_dir() {
            return Err(Error::InvalidArgument {
                field: "SOURCE".into(),
                message: format!("{} is not a folder", path.display()),
            });
        }
        Ok(SourceSpec::Local(path))
    }

    /// A short name for the source: the folder or repository name.
    pub fn default_model_name(&self) -> String {
        let raw = match self {
            SourceSpec::Local(p) => std::fs::canonicalize(p)
                .ok()
                .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            SourceSpec::Oci(r) => r
                .split(['@', ':'])
                .next()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            SourceSpec::Git { url, .. } => url
                .trim_end_matches('/')
                .rsplit(['/', ':'])
                .next()
                .unwrap_or_default()
                .trim_end_matches(".git")
                .to_string(),
        };
        let cleaned: String = raw
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        // A model name starts with a letter or digit (`.tmpXYZ` -> `tmpxyz`).
        let cleaned = cleaned
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
        if cleaned.is_empty() {
            "model".into()
        } else {
            cleaned
        }
    }
}

/// Puts the source into `dest` (an empty folder) and says where it came from.
pub async fn fetch_source(spec: &SourceSpec, dest: &Path, log: &RunLog) -> Result<Source, Error> {
    match spec {
        SourceSpec::Oci(text) => {
            let bad = |message: String| Error::Source {
                source_uri: format!("oci://{text}"),
                message,
            };
            let reference = crate::oci::registry::parse_reference(text, "latest")
                .map_err(|e| bad(e.to_string()))?;
            log.note(&format!("pulling source oci://{text}"));
            let parent = dest.parent().unwrap_or(dest);
            let layout = crate::oci::layout::Layout::open(parent.join(".source-oci"))?;
            let digest = crate::oci::source::pull_source(&reference, &layout, dest)
                .await
                .map_err(|e| bad(e.to_string()))?;
            let _ = std::fs::remove_dir_all(layout.root());
            Ok(Source {
                uri: format!("oci://{text}"),
                reference: Some(digest),
                commit: None,
            })
        }
        SourceSpec::Local(path) => {
            let source = local_source(path).await?;
            copy_local(&source, dest, log)?;
            Ok(source)
        }
        SourceSpec::Git { url, reference } => {
            log.note(&format!(
                "cloning {url}{}",
                reference
                    .as_deref()
                    .map(|r| format!(" at {r}"))
                    .unwrap_or_default()
            ));
            let parent = dest.parent().unwrap_or(dest);
            let out = Command::new("git")
                .args(["clone", "--quiet", "--no-checkout", url])
                .arg(dest)
                .current_dir(parent)
                .env("GIT_TERMINAL_PROMPT", "0")
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| Error::Source {
                    source_uri: url.clone(),
                    message: format!("cannot run git: {e}"),
                })?;
            if !out.status.success() {
                return Err(Error::Source {
                    source_uri: url.clone(),
                    message: format!(
                        "git clone failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            let wanted = reference.clone().unwrap_or_else(|| "HEAD".into());
            let mut commit = None;
            for candidate in [wanted.clone(), format!("origin/{wanted}")] {
                if let Ok(c) = git(
                    dest,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{candidate}^{{commit}}"),
                    ],
                )
                .await
                {
                    commit = Some(c);
                    break;
                }
            }
            let Some(commit) = commit else {
                return Err(Error::Source {
                    source_uri: url.clone(),
                    message: format!(
                        "git ref '{wanted}' does not exist (no such branch, tag or commit)"
                    ),
                });
            };
            git(dest, &["checkout", "--quiet", "--detach", &commit])
                .await
                .map_err(|m| Error::Source {
                    source_uri: url.clone(),
                    message: m,
                })?;
            log.note(&format!("checked out {commit}"));
            Ok(Source {
                uri: url.clone(),
                reference: reference.clone(),
                commit: Some(commit),
            })
        }
    }
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A local folder as a run's source: its absolute path, and the commit
/// it is at when it is in a git repository. Nothing is copied.
pub async fn local_source(path: &Path) -> Result<Source, Error> {
    let abs = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    // A folder under git still has a commit worth recording. Git is asked
    // only when there is a repository above the folder: a process per run
    // costs more than the rest of a small fetch.
    let commit = if abs.ancestors().any(|d| d.join(".git").exists()) {
        git(&abs, &["rev-parse", "--verify", "--quiet", "HEAD"])
            .await
            .ok()
    } else {
        None
    };
    Ok(Source {
        uri: abs.display().to_string(),
        reference: None,
        commit,
    })
}

/// Copies a [`local_source`] into `dest`, noting it in the log.
pub fn copy_local(source: &Source, dest: &Path, log: &RunLog) -> Result<(), Error> {
    log.note(&format!("copying source {}", source.uri));
    copy_tree(Path::new(&source.uri), dest)
}

/// Copies a folder tree, skipping `.git`; symlinks are copied as links.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if ft.is_dir() {
            if entry.file_name() == ".git" {
                continue;
            }
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| Error::io(&src, e))?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| Error::io(&dst, e))?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_and_local_sources() {
        assert_eq!(
            SourceSpec::parse("https://example.com/org/wine.git#v1").unwrap(),
            SourceSpec::Git {
                url: "https://example.com/org/wine.git".into(),
                reference: Some("v1".into())
            }
        );
        assert_eq!(
            SourceSpec::parse("file:///srv/repo").unwrap(),
            SourceSpec::Git {
                url: "file:///srv/repo".into(),
                reference: None
            }
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            SourceSpec::parse(dir.path().to_str().unwrap()).unwrap(),
            SourceSpec::Local(dir.path().into())
        );
        let err = SourceSpec::parse("/no/such/folder")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/folder is not a folder"), "{err}");
        let err = SourceSpec::parse(&format!("{}#main", dir.path().display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a #ref needs a git URL"), "{err}");
    }

    #[test]
    fn default_names() {
        let git = SourceSpec::Git {
            url: "git@host:org/Wine_Quality.git".into(),
            reference: None,
        };
        assert_eq!(git.default_model_name(), "wine_quality");
    }
}
