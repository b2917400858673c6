//! What a file is, which contract interfaces it exports, and which contract
//! version it targets.

use std::collections::BTreeSet;
use std::fmt;

use wasmtime::component::Component;
use wasmtime::Engine;

use crate::Error;

/// The contract package every toolchain interface belongs to.
pub const CONTRACT_PACKAGE: &str = "legion:toolchain";

/// Contract versions this host has bindings for.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.1.0", "0.2.0"];

/// The contract version a component targets, e.g. `0.1.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractVersion(pub String);

impl fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CONTRACT_PACKAGE}@{}", self.0)
    }
}

/// What kind of WebAssembly binary some bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// A core module (`wasm32-wasip1`, `wasm32-unknown-unknown`).
    CoreModule,
    /// A component.
    Component,
}

/// Tells a component from a core module by the preamble, before spending
/// time compiling. `name` is used in the error.
pub fn binary_kind(bytes: &[u8], name: &str) -> Result<BinaryKind, Error> {
    // Preamble: magic `\0asm`, then a 16-bit version and a 16-bit layer:
    // layer 0 is a core module, layer 1 a component.
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::NotWasm {
            file: name.to_string(),
        });
    }
    match bytes[6..8] {
        [0, 0] => Ok(BinaryKind::CoreModule),
        [1, 0] => Ok(BinaryKind::Component),
        _ => Err(Error::NotWasm {
            file: name.to_string(),
        }),
    }
}

/// Which contract interfaces a component exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exports {
    /// Interface names exported (`trainer`, `packager`, `server`).
    pub interfaces: BTreeSet<String>,
    /// The contract version they belong to.
    pub contract: Option<ContractVersion>,
}

/// Everything `component` imports and exports, by name (the config of
/// its wasm OCI artifact).
pub fn world(engine: &Engine, component: &Component) -> crate::oci::wasm::ComponentWorld {
    let ty = component.component_type();
    crate::oci::wasm::ComponentWorld {
        exports: ty.exports(engine).map(|(n, _)| n.to_string()).collect(),
        imports: ty.imports(engine).map(|(n, _)| n.to_string()).collect(),
        target: None,
    }
}

/// Reads the contract interfaces `component` exports and checks that this
/// host supports their version.
pub fn exports(engine: &Engine, component: &Component, toolchain: &str) -> Result<Exports, Error> {
    let ty = component.component_type();
    let mut all = Vec::new();
    let mut found = Exports::default();
    for (name, _) in ty.exports(engine) {
        all.push(name.to_string());
        let Some(rest) = name
            .strip_prefix(CONTRACT_PACKAGE)
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let (iface, version) = match rest.split_once('@') {
            Some((i, v)) => (i, v),
            None => (rest, ""),
        };
        if !matches!(iface, "trainer" | "batch" | "packager" | "server") {
            continue;
        }
        let version = ContractVersion(version.to_string());
        if !SUPPORTED_CONTRACTS.contains(&version.0.as_str()) {
            return Err(Error::ContractVersion {
                toolchain: toolchain.to_string(),
                found: version.to_string(),
                supported: SUPPORTED_CONTRACTS
                    .iter()
                    .map(|v| format!("{CONTRACT_PACKAGE}@{v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if let Some(previous) = &found.contract {
            if previous != &version {
                return Err(Error::ContractVersion {
                    toolchain: toolchain.to_string(),
                    found: format!("{previous} and {version} mixed"),
                    supported: SUPPORTED_CONTRACTS.join(", "),
                });
            }
        }
        found.contract = Some(version);
        found.interfaces.insert(iface.to_string());
    }
    if found.interfaces.is_empty() {
        return Err(Error::NoInterfaces {
            toolchain: toolchain.to_string(),
            exports: if all.is_empty() {
                "nothing".to_string()
            } else {
                all.join(", ")
            },
        });
    }
    Ok(found)
}
