//! Host-side bindings, one module per contract version the host runs
//! (`wit/0.1.0`, `wit/0.2.0`), as zed's extension host keeps them.
//!
//! Each module binds its version's full world and the host loads each
//! exported interface on its own through its `GuestIndices`, so a
//! trainer-only or packager-only component works with the same types.
//! `convert` turns every version's types into the host's own (`crate::plan`),
//! so nothing past the call knows which version a plugin was built for.
//! A released version's module never changes; a new version adds one.

/// `legion:toolchain@0.1.0`, frozen.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "toolchain-plugin",
        path: "../wit/0.1.0",
    });

    pub use exports::legion::toolchain::{packager, server, trainer};
    pub use legion::toolchain::host as host_iface;
    pub use legion::toolchain::types;
}

/// `legion:toolchain@0.2.0`: adds `batch` and typed parameters.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "toolchain-plugin",
        path: "../wit/0.2.0",
    });

    pub use exports::legion::toolchain::{batch, packager, server, trainer};
    pub use legion::toolchain::host as host_iface;
    pub use legion::toolchain::types;
}
