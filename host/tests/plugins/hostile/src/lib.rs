//! A plugin that misbehaves on purpose, for the host's sandbox tests. The
//! behaviour is chosen by the request's entrypoint (training) or its
//! `mode` argument (packaging).

use legion_sdk::*;

struct Hostile;

impl Trainer for Hostile {
    fn describe() -> ToolchainInfo {
        ToolchainInfo::new("hostile", "0.0.0", "misbehaves on purpose")
    }

    fn plan_training(request: TrainingRequest) -> Result<Plan, ToolchainError> {
        let what = request.entrypoint.clone().unwrap_or_default();
        match what.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            "huge" => {
                // 8 MiB of arguments: fits the memory cap, breaks the result cap.
                let big = "x".repeat(1 << 20);
                let step = step("huge").args((0..8).map(|_| big.clone()));
                Ok(Plan::new().step(step))
            }
            "spam" => {
                // Far more stdout than the host keeps; must not trap.
                for i in 0..200_000 {
                    println!("line {i}");
                }
                Ok(Plan::new().step(step("spam")))
            }
            "read-file" => {
                let path = request
                    .args
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "/etc/passwd".into());
                match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(Plan::new().step(step("leaked").arg(text))),
                    Err(e) => Err(ToolchainError::other(format!("open {path}: {e}"))),
                }
            }
            "write-source" => match std::fs::write(format!("{SOURCE_DIR}/planted"), "x") {
                Ok(()) => Ok(Plan::new().step(step("wrote"))),
                Err(e) => Err(ToolchainError::other(format!(
                    "write {SOURCE_DIR}/planted: {e}"
                ))),
            },
            "connect" => {
                let addr = request.args.first().cloned().unwrap_or_default();
                match std::net::TcpStream::connect(addr.as_str()) {
                    Ok(_) => Ok(Plan::new().step(step("connected"))),
                    Err(e) => Err(ToolchainError::other(format!("connect {addr}: {e}"))),
                }
            }
            "clock" => {
                // The wall clock and the monotonic clock, read twice with
                // work in between: a frozen clock gives the same every time.
                let wall = || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos().to_string())
                        .unwrap_or_else(|e| format!("before the epoch by {:?}", e.duration()))
                };
                let start = std::time::Instant::now();
                let first = wall();
                let mut n: u64 = 0;
                for i in 0..1_000_000u64 {
                    n = std::hint::black_box(n.wrapping_add(i));
                }
                let elapsed = start.elapsed().as_nanos().to_string();
                Ok(Plan::new().step(step("clock").args([first, wall(), elapsed])))
            }
            "env" => Ok(Plan::new()
                .step(step("env").args(std::env::vars().map(|(k, v)| format!("{k}={v}"))))),
            // A plan no host can run: a step with no command.
            "empty-command" => Ok(Plan::new().step(Step::new("train", "img"))),
            "echo" => {
                host::info("echo called");
                println!("stdout from echo");
                eprintln!("stderr from echo");
                let greeting = host::config("greeting").unwrap_or_else(|| "unset".into());
                Ok(Plan::new().step(step("echo").arg(greeting).args(request.args)))
            }
            other => Err(ToolchainError::invalid(format!(
                "entrypoint: unknown behaviour {other:?}"
            ))),
        }
    }
}

impl Packager for Hostile {
    fn describe() -> ToolchainInfo {
        <Hostile as Trainer>::describe()
    }

    fn plan_packaging(request: PackagingRequest) -> Result<ImagePlan, ToolchainError> {
        let base = request.base_image.clone().unwrap_or_default();
        let mut plan = ImagePlan::new(base).layer(Layer::Model);
        plan.user = Some("1000".into());
        match lookup(&request.arguments, "mode").unwrap_or_default() {
            // A file placed outside the image's root.
            "escape" => {
                plan = plan.layer(Layer::Files(vec![FileEntry {
                    path: "/opt/../../etc/cron.d/evil".into(),
                    contents: b"* * * * * root sh\n".to_vec(),
                    mode: 0o644,
                }]))
            }
            // An image that runs as root.
            "root" => plan.user = Some("0:0".into()),
            other => return Err(ToolchainError::invalid(format!("unknown mode '{other}'"))),
        }
        Ok(plan)
    }
}

impl Server for Hostile {}

export_toolchain!(Hostile);

/// A step the host could run (`true` in `img`): what each behaviour
/// returns when it returns at all.
fn step(name: &str) -> Step {
    Step::new(name, "img").command(["true"])
}
