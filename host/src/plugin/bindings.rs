//! Host-side bindings generated from `wit/toolchain.wit`.
//!
//! The host binds the `toolchain-plugin` world (all three interfaces) and
//! loads each exported interface on its own through its `GuestIndices`, so a
//! trainer-only or packager-only component works with the same types.

wasmtime::component::bindgen!({
    world: "toolchain-plugin",
    path: "../wit",
});

pub use exports::legion::toolchain::{packager, server, trainer};
pub use legion::toolchain::host::{self as host_iface, LogLevel};
pub use legion::toolchain::types;
