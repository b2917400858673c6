//! The host's functions: logging and the admin's configuration.
//!
//! Inside a plugin these call the host. Compiled natively (an author's
//! `cargo test`), log lines go to stderr and configuration comes from
//! [`set_test_config`], so plugin logic can be unit-tested without wasm.

use crate::LogLevel;

/// Writes a line to the host's log at `level`.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::legion::toolchain::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs at `info`.
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at `warn`.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Logs at `debug`.
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// The admin's configuration value for `key`, if set at registration
/// (`legion toolchain add --config KEY=VALUE`).
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::legion::toolchain::host::config(key);
    #[cfg(not(target_arch = "wasm32"))]
    return native::CONFIG.with(|c| c.borrow().get(key).cloned());
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        pub static CONFIG: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    }
}

/// Sets a configuration value seen by [`config`] in native unit tests (this
/// thread only). Has no effect inside a plugin, where the host answers.
pub fn set_test_config(key: &str, value: &str) {
    #[cfg(not(target_arch = "wasm32"))]
    native::CONFIG.with(|c| c.borrow_mut().insert(key.to_string(), value.to_string()));
    #[cfg(target_arch = "wasm32")]
    let _ = (key, value);
}
