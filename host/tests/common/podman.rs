//! Running packaged images with podman (runc, cgroupfs: crun fails on this
//! kernel's cgroups), as DESIGN.md says.

use std::process::{Command, Output};

/// podman with the runtime flags this machine needs.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "/usr/sbin/runc", "--cgroup-manager=cgroupfs"]);
    c
}

/// Whether podman can run containers here. Where it cannot, the caller
/// skips with the reason printed, unless `LEGION_TEST_REQUIRE_PODMAN=1`
/// (which `.ci/run` sets): then the test fails.
pub fn available(test: &str) -> bool {
    let out = podman()
        .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => format!("podman cannot be started: {e}"),
    };
    assert!(
        std::env::var("LEGION_TEST_REQUIRE_PODMAN").as_deref() != Ok("1"),
        "{test}: podman is required (LEGION_TEST_REQUIRE_PODMAN=1) but cannot run: {why}"
    );
    eprintln!("SKIPPED {test}: podman cannot run containers here: {why}");
    false
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container started from an image; removed (with the image) on drop.
pub struct Container {
    pub name: String,
    image: String,
}

impl Container {
    /// Starts `image` (pulled from a loopback registry) detached on the
    /// host network with a read-only root file system, as a hardened
    /// deployment runs it, with `env` on top of the image's.
    pub fn start(image: &str, env: &[(&str, String)]) -> Self {
        let name = format!("legion-test-{}-{}", std::process::id(), rand_suffix());
        let mut cmd = podman();
        cmd.args([
            "run",
            "-d",
            "--tls-verify=false",
            "--network=host",
            "--name",
            &name,
        ])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        ok(cmd.arg(image).output().expect("podman run"), "podman run");
        Container {
            name,
            image: image.to_string(),
        }
    }

    /// The container's log so far.
    pub fn logs(&self) -> String {
        let out = podman()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
        let _ = podman().args(["rmi", "-f", &self.image]).output();
    }
}

/// Runs `python3 -c CODE` inside `image` (its own Python and the packaged
/// dependencies) and returns stdout.
pub fn python_in(image: &str, code: &str) -> String {
    let out = podman()
        .args([
            "run",
            "--rm",
            "--tls-verify=false",
            "--network=host",
            "--entrypoint",
            "python3",
        ])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg(image)
        .args(["-c", code])
        .output()
        .expect("podman run");
    ok(out, "python3 in the image")
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() & 0xffff_ffff
}
