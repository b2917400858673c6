//! The budget of one plugin call and the limiter that enforces memory.

use std::time::Duration;

/// Limits applied to every plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline for one call (epoch based).
    pub deadline: Duration,
    /// Linear memory a call may use, summed over the component's memories.
    pub memory_bytes: usize,
    /// Largest result a call may return, measured as its JSON size.
    pub max_result_bytes: usize,
    /// Guest stdout/stderr kept per call and stream; the rest is dropped.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            max_result_bytes: 1 << 20,
            max_output_bytes: 64 << 10,
        }
    }
}

/// Enforces [`Limits::memory_bytes`] across all memories of one store and
/// remembers that it did, so a trap can be reported as "memory cap" rather
/// than as whatever the guest's allocator did next.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
    used: usize,
    /// Set once a growth was refused.
    pub exceeded: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `cap` bytes.
    pub fn new(cap: usize) -> Self {
        MemoryLimiter {
            cap,
            used: 0,
            exceeded: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        if self.used.saturating_add(grow) > self.cap {
            self.exceeded = true;
            // An error (rather than `Ok(false)`) traps at once: a guest
            // allocator that handles failed growth would otherwise abort with
            // a message about itself, not about the cap.
            wasmtime::bail!("memory cap of {} bytes reached", self.cap);
        }
        self.used += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real
        // plugin and bounds the host memory a table can take.
        Ok(desired <= 1_000_000)
    }
}
