//! A loaded plugin and its typed calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{Component, Instance, InstancePre};
use wasmtime::{Store, Trap};

use super::bindings::{v0_1, v0_2};
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
    /// `batch` (contract 0.2.0): plan-batch-inference.
    Batch,
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
            Interface::Batch => "batch",
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
    guests: Arc<Guests>,
}

/// A plugin's exported interfaces, resolved against the bindings of the
/// contract version it was built for.
enum Guests {
    V0_1 {
        trainer: Option<v0_1::trainer::GuestIndices>,
        packager: Option<v0_1::packager::GuestIndices>,
        server: Option<v0_1::server::GuestIndices>,
    },
    V0_2 {
        trainer: Option<v0_2::trainer::GuestIndices>,
        batch: Option<v0_2::batch::GuestIndices>,
        packager: Option<v0_2::packager::GuestIndices>,
        server: Option<v0_2::server::GuestIndices>,
    },
}

/// Resolves the interfaces `has` names with version `$v`'s bindings.
macro_rules! resolve {
    ($v:ident, $pre:expr, $has:expr, $bad:expr, $iface:ident) => {
        $has(stringify!($iface))
            .then(|| $v::$iface::GuestIndices::new($pre).map_err(|e| $bad(stringify!($iface), e)))
            .transpose()?
    };
}

/// Runs `$body` with `$idx` the indices of interface `$field` (refused
/// as not exported when absent) and `$wit` the types of the plugin's
/// contract version: one call written once for every version.
macro_rules! on_version {
    ($self:ident, $field:ident, $iface:expr, $call:literal, |$wit:ident, $idx:ident| $body:expr) => {
        match &*$self.guests {
            Guests::V0_1 { $field, .. } => {
                #[allow(unused_imports)]
                use v0_1::types as $wit;
                let $idx = $self.require($field, $iface, $call)?;
                $body
            }
            Guests::V0_2 { $field, .. } => {
                #[allow(unused_imports)]
                use v0_2::types as $wit;
                let $idx = $self.require($field, $iface, $call)?;
                $body
            }
        }
    };
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
        let contract = exports
            .contract
            .unwrap_or_else(|| ContractVersion(String::new()));
        let guests = match contract.0.as_str() {
            "0.1.0" => Guests::V0_1 {
                trainer: resolve!(v0_1, &pre, has, bad, trainer),
                packager: resolve!(v0_1, &pre, has, bad, packager),
                server: resolve!(v0_1, &pre, has, bad, server),
            },
            // `inspect::exports` refused every version this host has no
            // bindings for.
            _ => Guests::V0_2 {
                trainer: resolve!(v0_2, &pre, has, bad, trainer),
                batch: resolve!(v0_2, &pre, has, bad, batch),
                packager: resolve!(v0_2, &pre, has, bad, packager),
                server: resolve!(v0_2, &pre, has, bad, server),
            },
        };
        Ok(Plugin {
            runtime: runtime.clone(),
            name: name.into(),
            config: Arc::new(config),
            pre,
            contract,
            guests: Arc::new(guests),
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
        let (trainer, batch, packager, server) = match &*self.guests {
            Guests::V0_1 {
                trainer,
                packager,
                server,
            } => (
                trainer.is_some(),
                false,
                packager.is_some(),
                server.is_some(),
            ),
            Guests::V0_2 {
                trainer,
                batch,
                packager,
                server,
            } => (
                trainer.is_some(),
                batch.is_some(),
                packager.is_some(),
                server.is_some(),
            ),
        };
        [
            (trainer, Interface::Trainer),
            (batch, Interface::Batch),
            (packager, Interface::Packager),
            (server, Interface::Server),
        ]
        .into_iter()
        .filter(|(has, _)| *has)
        .map(|(_, i)| i)
        .collect()
    }

    /// `describe` from the trainer, or else the packager. A server-only
    /// plugin has no description and gets one from its name.
    pub fn describe(&self) -> Result<plan::ToolchainInfo, Error> {
        let interfaces = self.interfaces();
        if interfaces.contains(&Interface::Trainer) {
            return on_version!(
                self,
                trainer,
                Interface::Trainer,
                "describe",
                |_wit, idx| {
                    self.call("describe", &[], |store, instance| {
                        let info = idx
                            .load(&mut *store, instance)?
                            .call_describe(&mut *store)?;
                        Ok(Ok(info.into()))
                    })
                }
            );
        }
        if interfaces.contains(&Interface::Packager) {
            return on_version!(
                self,
                packager,
                Interface::Packager,
                "describe",
                |_wit, idx| {
                    self.call("describe", &[], |store, instance| {
                        let info = idx
                            .load(&mut *store, instance)?
                            .call_describe(&mut *store)?;
                        Ok(Ok(info.into()))
                    })
                }
            );
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
        let preopens = [Preopen {
            host: source,
            guest: "/source",
        }];
        on_version!(
            self,
            trainer,
            Interface::Trainer,
            "plan-training",
            |wit, idx| {
                let req = wit::TrainingRequest::from(request);
                self.call("plan-training", &preopens, |store, instance| {
                    let r = idx
                        .load(&mut *store, instance)?
                        .call_plan_training(&mut *store, &req)?;
                    Ok(r.map(plan::Plan::from).map_err(Into::into))
                })
            }
        )
    }

    /// `collect-training`, with `output` preopened read-only at `/output`
    /// and `source` at `/source`.
    pub fn collect_training(
        &self,
        request: &plan::TrainingRequest,
        source: &Path,
        output: &Path,
    ) -> Result<plan::ModelManifest, Error> {
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
        on_version!(
            self,
            trainer,
            Interface::Trainer,
            "collect-training",
            |wit, idx| {
                let req = wit::TrainingRequest::from(request);
                self.call("collect-training", &preopens, |store, instance| {
                    let r = idx
                        .load(&mut *store, instance)?
                        .call_collect_training(&mut *store, &req)?;
                    Ok(r.map(plan::ModelManifest::from).map_err(Into::into))
                })
            }
        )
    }

    /// `plan-batch-inference` (contract 0.2.0), with the model's files
    /// preopened read-only at `/model`.
    pub fn plan_batch_inference(
        &self,
        request: &plan::BatchRequest,
        model: &Path,
    ) -> Result<plan::Plan, Error> {
        let not_exported = || Error::NotExported {
            toolchain: self.name.to_string(),
            interface: Interface::Batch.as_str().to_string(),
            call: "plan-batch-inference".to_string(),
        };
        let Guests::V0_2 { batch, .. } = &*self.guests else {
            // Contract 0.1.0 has no batch interface.
            return Err(not_exported());
        };
        let idx = batch.as_ref().ok_or_else(not_exported)?;
        let req = v0_2::types::BatchRequest::from(request);
        let preopens = [Preopen {
            host: model,
            guest: "/model",
        }];
        self.call("plan-batch-inference", &preopens, |store, instance| {
            let r = idx
                .load(&mut *store, instance)?
                .call_plan_batch_inference(&mut *store, &req)?;
            Ok(r.map(plan::Plan::from).map_err(Into::into))
        })
    }

    /// `plan-packaging`, with the model's files preopened read-only at `/model`.
    pub fn plan_packaging(
        &self,
        request: &plan::PackagingRequest,
        model: &Path,
    ) -> Result<plan::ImagePlan, Error> {
        let preopens = [Preopen {
            host: model,
            guest: "/model",
        }];
        on_version!(
            self,
            packager,
            Interface::Packager,
            "plan-packaging",
            |wit, idx| {
                let req = wit::PackagingRequest::from(request);
                self.call("plan-packaging", &preopens, |store, instance| {
                    let r = idx
                        .load(&mut *store, instance)?
                        .call_plan_packaging(&mut *store, &req)?;
                    Ok(r.map(plan::ImagePlan::from).map_err(Into::into))
                })
            }
        )
    }

    /// `plan-serving`, with nothing preopened.
    pub fn plan_serving(&self, request: &plan::ServingRequest) -> Result<plan::ServicePlan, Error> {
        on_version!(
            self,
            server,
            Interface::Server,
            "plan-serving",
            |wit, idx| {
                let req = wit::ServingRequest::from(request);
                self.call("plan-serving", &[], |store, instance| {
                    let r = idx
                        .load(&mut *store, instance)?
                        .call_plan_serving(&mut *store, &req)?;
                    Ok(r.map(plan::ServicePlan::from).map_err(Into::into))
                })
            }
        )
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
        ) -> wasmtime::Result<Result<R, plan::ToolchainError>>,
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
            Ok(Err(error)) => Err(Error::Toolchain {
                toolchain,
                call,
                error,
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
