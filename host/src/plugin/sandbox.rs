//! The per-call store: what a plugin can see and do during one call.
//!
//! WASI is deny-by-default: no environment, no arguments, stdin closed, no
//! network (TCP, UDP and name lookup all refused), clocks frozen at zero
//! (a planner needs no time, and a frozen clock keeps plans reproducible),
//! and no files but the read-only directories the call preopens.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::Store;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{v0_1, v0_2};
use super::engine::Runtime;
use super::limits::MemoryLimiter;
use crate::Error;

/// Longest `host.log` message kept; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 4096;

/// State of one call's store.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    toolchain: Arc<str>,
    config: Arc<BTreeMap<String, String>>,
    /// What the guest wrote to stdout and stderr.
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl CallState {
    /// `host.log`, whichever contract version called it.
    fn log_line(&self, level: tracing::Level, message: &str) {
        let message = truncate(message, MAX_LOG_MESSAGE);
        let toolchain = &*self.toolchain;
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "toolchain", toolchain, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "toolchain", toolchain, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "toolchain", toolchain, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "toolchain", toolchain, "{message}"),
            tracing::Level::ERROR => tracing::error!(target: "toolchain", toolchain, "{message}"),
        }
    }
}

/// The `host` interface of one contract version (the same in each).
macro_rules! host_interface {
    ($v:ident) => {
        impl $v::host_iface::Host for CallState {
            fn log(&mut self, level: $v::host_iface::LogLevel, message: String) {
                use $v::host_iface::LogLevel as L;
                let level = match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                };
                self.log_line(level, &message);
            }

            fn config(&mut self, key: String) -> Option<String> {
                self.config.get(&key).cloned()
            }
        }
    };
}
host_interface!(v0_1);
host_interface!(v0_2);

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A directory made visible to the guest for one call, always read-only.
#[derive(Debug, Clone, Copy)]
pub struct Preopen<'a> {
    /// Folder on the host.
    pub host: &'a Path,
    /// Where the guest sees it, e.g. `/source`.
    pub guest: &'a str,
}

/// Builds the store for one call of `toolchain`.
pub(crate) fn new_store(
    runtime: &Runtime,
    toolchain: &Arc<str>,
    config: &Arc<BTreeMap<String, String>>,
    preopens: &[Preopen<'_>],
) -> Result<Store<CallState>, Error> {
    let limits = runtime.limits();
    let stdout = CapturedOutput::new(limits.max_output_bytes);
    let stderr = CapturedOutput::new(limits.max_output_bytes);
    let mut builder = WasiCtx::builder();
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        // Preopened reads are small and local: doing them on this thread
        // instead of tokio's blocking pool saves two thread hand-offs per
        // file operation.
        .allow_blocking_current_thread(true)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    for p in preopens {
        builder
            .preopened_dir(p.host, p.guest, FsPerms::ReadOnly)
            .map_err(|e| Error::Preopen {
                path: p.host.to_path_buf(),
                source: e.into(),
            })?;
    }
    let state = CallState {
        wasi: builder.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter::new(limits.memory_bytes),
        toolchain: toolchain.clone(),
        config: config.clone(),
        stdout,
        stderr,
    };
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(runtime.deadline_ticks());
    store.epoch_deadline_trap();
    Ok(store)
}

/// A clock stuck at zero, for both wall and monotonic time.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Guest stdout or stderr kept in memory up to a cap. Past the cap, writes
/// succeed and are counted but dropped: a chatty plugin must not trap, nor
/// grow host memory.
#[derive(Clone)]
pub struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl CapturedOutput {
    fn new(cap: usize) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                cap,
                ..Captured::default()
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        // A poisoned lock only means another writer panicked mid-push; the
        // buffer is still plain bytes.
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = c.cap.saturating_sub(c.bytes.len());
        let take = room.min(bytes.len());
        c.bytes.extend_from_slice(&bytes[..take]);
        c.dropped += bytes.len() - take;
    }

    /// The lines written, and how many bytes were dropped past the cap.
    pub fn lines(&self) -> (Vec<String>, usize) {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&c.bytes);
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        (lines, c.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
