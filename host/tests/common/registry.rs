//! A real OCI registry (Debian's `docker-registry`, CNCF distribution) on a
//! free loopback port, with its storage in a temp dir; stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let bin = PathBuf::from("/usr/bin/docker-registry");
        assert!(
            bin.is_file(),
            "docker-registry is not installed: run scripts/setup.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Where the registry keeps its blobs and repositories.
    pub fn storage(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Copies an image with skopeo (`SRC` in skopeo's transport syntax)
    /// into this registry as `repo_tag`; returns `ADDR/repo_tag`.
    pub fn copy_in(&self, src: &str, repo_tag: &str) -> String {
        self.copy_in_as(src, repo_tag, "oci")
    }

    /// [`Self::copy_in`] with the manifest format skopeo writes: `oci` or
    /// `v2s2` (Docker v2 media types).
    pub fn copy_in_as(&self, src: &str, repo_tag: &str, format: &str) -> String {
        let dest = format!("{}/{repo_tag}", self.addr);
        let out = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--format",
                format,
                src,
            ])
            .arg(format!("docker://{dest}"))
            .output()
            .expect("skopeo is not installed: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "skopeo copy {src}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dest
    }

    /// The test base image (Debian bookworm with python3, made by
    /// scripts/base-image.sh), pushed here as `base/python:3`.
    pub fn python_base(&self) -> String {
        self.copy_in(&format!("oci:{}", base_layout()), "base/python:3")
    }

    /// `skopeo inspect --raw` of a reference in this registry: the manifest
    /// exactly as the registry serves it.
    pub fn raw_manifest(&self, repo_tag: &str) -> Vec<u8> {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .expect("skopeo is not installed: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "skopeo inspect {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test base image's layout reference (`DIR:NAME`), as made by
/// scripts/base-image.sh (which scripts/setup.sh runs).
pub fn base_layout() -> String {
    let dir = std::env::var("LEGION_BASE_CACHE")
        .unwrap_or_else(|_| "/var/cache/legion/base-image".into());
    let layout = format!("{dir}/layout");
    assert!(
        std::path::Path::new(&layout).join("index.json").is_file(),
        "the test base image is missing at {layout}: run scripts/setup.sh (scripts/base-image.sh)"
    );
    format!("{layout}:python3")
}
