//! A loaded plugin and its typed calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{Component, Instance, InstancePre};
use wasmtime::{Store, Trap};

use super::bindings::{packager, server, trainer, types as wit};
use super::engine::Runtime;
use super::inspect::{self, ContractVersion};
use super::sandbox::{new_store, CallState, Preopen};
use crate::plan;
use crate::Error;

/// A contract interface a plugin may export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interface {
    /// `trainer`: describe, plan-training, collect-training.
    Trainer,
    /// `packager`: describe, plan-packaging.
    Packager,
    /// `server`: plan-serving.
    Server,
}

impl Interface {
    /// The WIT interface name.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Trainer => "trainer",
            Interface::Packager => "packager",
            Interface::Server => "server",
        }
    }
}

/// A toolchain ready to be called: compiled, linked, with its exports
/// resolved. Cloning is cheap; each call gets its own store.
#[derive(Clone)]
pub struct Plugin {
    runtime: Runtime,
    name: Arc<str>,
    config: Arc<BTreeMap<String, String>>,
    pre: InstancePre<CallState>,
    contract: ContractVersion,
    trainer: Option<Arc<trainer::GuestIndices>>,
    packager: Option<Arc<packager::GuestIndices>>,
    server: Option<Arc<server::GuestIndices>>,
}

impl Plugin {
    /// Links `component` and resolves its exports. Fails if it exports no
    /// contract interface, targets an unsupported contract version, or
    /// imports something the host does not provide.
    pub fn new(
        runtime: &Runtime,
        name: &str,
        component: &Component,
        config: BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        let exports = inspect::exports(runtime.engine(), component, name)?;
        let pre = runtime
            .linker()
            .instantiate_pre(component)
            .map_err(|e| Error::Link {
                toolchain: name.to_string(),
                what: String::new(),
                source: e.into(),
            })?;
        let bad = |iface: &str, e: wasmtime::Error| Error::Link {
            toolchain: name.to_string(),
            what: format!("export `{iface}` does not match the contract: "),
            source: e.into(),
        };
        let has = |i: &str| exports.interfaces.contains(i);
        let trainer = has("trainer")
            .then(|| trainer::GuestIndices::new(&pre).map_err(|e| bad("trainer", e)))
            .transpose()?
            .map(Arc::new);
        let packager = has("packager")
            .then(|| packager::GuestIndices::new(&pre).map_err(|e| bad("packager", e)))
            .transpose()?
            .map(Arc::new);
        let server = has("server")
            .then(|| server::GuestIndices::new(&pre).map_err(|e| bad("server", e)))
            .transpose()?
            .map(Arc::new);
        let contract = exports
            .contract
            .unwrap_or_else(|| ContractVersion(String::new()));
        Ok(Plugin {
            runtime: runtime.clone(),
            name: name.into(),
            config: Arc::new(config),
            pre,
            contract,
            trainer,
            packager,
            server,
        })
    }

    /// The toolchain's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contract version it targets.
    pub fn contract(&self) -> &ContractVersion {
        &self.contract
    }

    /// Interfaces it exports.
    pub fn interfaces(&self) -> BTreeSet<Interface> {
        let mut set = BTreeSet::new();
        if self.trainer.is_some() {
            set.insert(Interface::Trainer);
        }
        if self.packager.is_some() {
            set.insert(Interface::Packager);
        }
        if self.server.is_some() {
            set.insert(Interface::Server);
        }
        set
    }

    /// `describe` from the trainer, or else the packager. A server-only
    /// plugin has no description and gets one from its name.
    pub fn describe(&self) -> Result<plan::ToolchainInfo, Error> {
        if let Some(idx) = &self.trainer {
            return self.call("describe", &[], |store, instance| {
                let info = idx
                    .load(&mut *store, instance)?
                    .call_describe(&mut *store)?;
                Ok(Ok(info.into()))
            });
        }
        if let Some(idx) = &self.packager {
            return self.call("describe", &[], |store, instance| {
                let info = idx
                    .load(&mut *store, instance)?
                    .call_describe(&mut *store)?;
                Ok(Ok(info.into()))
            });
        }
        Ok(plan::ToolchainInfo {
            name: self.name.to_string(),
            ..Default::default()
        })
    }

    /// `plan-training`, with `source` preopened read-only at `/source`.
    pub fn plan_training(
        &self,
        request: &plan::TrainingRequest,
        source: &Path,
    ) -> Result<plan::Plan, Error> {
        let idx = self.require(&self.trainer, Interface::Trainer, "plan-training")?;
        let req = wit::TrainingRequest::from(request);
        let preopens = [Preopen {
            host: source,
            guest: "/source",
        }];
        self.call("plan-training", &preopens, |store, instance| {
            let r = idx
                .load(&mut *store, instance)?
                .call_plan_training(&mut *store, &req)?;
            Ok(r.map(plan::Plan::from))
        })
    }

    /// `collect-training`, with `output` preopened read-only at `/output`
    /// and `source` at `/source`.
    pub fn collect_training(
        &self,
        request: &plan::TrainingRequest,
        source: &Path,
        output: &Path,
    ) -> Result<plan::ModelManifest, Error> {
        let idx = self.require(&self.trainer, Interface::Trainer, "collect-training")?;
        let req = wit::TrainingRequest::from(request);
        let preopens = [
            Preopen {
                host: output,
                guest: "/output",
            },
            Preopen {
                host: source,
                guest: "/source",
            },
        ];
        self.call("collect-training", &preopens, |store, instance| {
            let r = idx
                .load(&mut *store, instance)?
                .call_collect_training(&mut *store, &req)?;
            Ok(r.map(plan::ModelManifest::from))
        })
    }

    /// `plan-packaging`, with the model's files preopened read-only at `/model`.
    pub fn plan_packaging(
        &self,
        request: &plan::PackagingRequest,
        model: &Path,
    ) -> Result<plan::ImagePlan, Error> {
        let idx = self.require(&self.packager, Interface::Packager, "plan-packaging")?;
        let req = wit::PackagingRequest::from(request);
        let preopens = [Preopen {
            host: model,
            guest: "/model",
        }];
        self.call("plan-packaging", &preopens, |store, instance| {
            let r = idx
                .load(&mut *store, instance)?
                .call_plan_packaging(&mut *store, &req)?;
            Ok(r.map(plan::ImagePlan::from))
        })
    }

    /// `plan-serving`, with nothing preopened.
    pub fn plan_serving(&self, request: &plan::ServingRequest) -> Result<plan::ServicePlan, Error> {
        let idx = self.require(&self.server, Interface::Server, "plan-serving")?;
        let req = wit::ServingRequest::from(request);
        self.call("plan-serving", &[], |store, instance| {
            let r = idx
                .load(&mut *store, instance)?
                .call_plan_serving(&mut *store, &req)?;
            Ok(r.map(plan::ServicePlan::from))
        })
    }

    fn require<'a, T>(
        &self,
        idx: &'a Option<T>,
        iface: Interface,
        call: &str,
    ) -> Result<&'a T, Error> {
        idx.as_ref().ok_or_else(|| Error::NotExported {
            toolchain: self.name.to_string(),
            interface: iface.as_str().to_string(),
            call: call.to_string(),
        })
    }

    /// Runs one call in a fresh store and turns every way it can go wrong
    /// into an [`Error`] naming the toolchain, the call and the limit.
    fn call<R: Serialize>(
        &self,
        call: &'static str,
        preopens: &[Preopen<'_>],
        f: impl FnOnce(
            &mut Store<CallState>,
            &Instance,
        ) -> wasmtime::Result<Result<R, wit::ToolchainError>>,
    ) -> Result<R, Error> {
        let mut store = new_store(&self.runtime, &self.name, &self.config, preopens)?;
        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| f(&mut store, &instance));
        let state = store.data();
        // A crash carries the plugin's last stderr lines in its error:
        // printed there once, not also as log lines.
        let crashed = matches!(&outcome, Err(e) if !state.limiter.exceeded
            && !matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)));
        self.forward_output(call, state, !crashed);
        let limits = self.runtime.limits();
        let toolchain = self.name.to_string();
        match outcome {
            Ok(Ok(value)) => {
                let size = plan::result_size(&value);
                if size > limits.max_result_bytes {
                    return Err(Error::ResultTooLarge {
                        toolchain,
                        call,
                        size,
                        limit: limits.max_result_bytes,
                    });
                }
                Ok(value)
            }
            Ok(Err(e)) => Err(Error::Toolchain {
                toolchain,
                call,
                error: e.into(),
            }),
            Err(e) => {
                if state.limiter.exceeded {
                    return Err(Error::MemoryCap {
                        toolchain,
                        call,
                        limit: limits.memory_bytes,
                    });
                }
                if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                    return Err(Error::Deadline {
                        toolchain,
                        call,
                        limit: limits.deadline,
                    });
                }
                let (stderr, _) = state.stderr.lines();
                // Rust's panic hook suggests RUST_BACKTRACE, which a
                // plugin never sees: that line is dropped.
                let stderr: Vec<&String> = stderr
                    .iter()
                    .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE=1`"))
                    .collect();
                let tail = stderr
                    .iter()
                    .rev()
                    .take(10)
                    .rev()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(Error::Trap {
                    toolchain,
                    call,
                    message: format!("{}", e.root_cause()),
                    stderr: tail,
                })
            }
        }
    }

    fn forward_output(&self, call: &str, state: &CallState, with_stderr: bool) {
        let toolchain = &*self.name;
        for (stream, out) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            if stream == "stderr" && !with_stderr {
                continue;
            }
            let (lines, dropped) = out.lines();
            for line in lines {
                tracing::info!(target: "toolchain", toolchain, call, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(target: "toolchain", toolchain, call, stream, "{dropped} bytes of {stream} dropped past the cap");
            }
        }
    }
}
