//! One wasmtime engine per process, configured for untrusted plugins.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::limits::Limits;
use super::sandbox::CallState;
use crate::Error;

/// How often the epoch advances; the deadline's resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Plugin instances that may be alive at once (concurrent calls). The
/// pooling allocator reserves address space for this many up front.
const MAX_CONCURRENT_INSTANCES: u32 = 128;

/// Bytes of each memory and table kept resident between instances.
const KEEP_RESIDENT: usize = 512 << 10;

/// The engine, the linker with the host's imports, and the call limits.
/// Cheap to clone; the epoch ticker stops when the last clone is dropped.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    limits: Limits,
    compat_hash: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Creates the engine with `limits` and starts its epoch ticker.
    pub fn new(limits: Limits) -> Result<Self, Error> {
        let mut pool = PoolingAllocationConfig::default();
        let n = MAX_CONCURRENT_INSTANCES;
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .max_core_instances_per_component(32)
            .total_memories(n * 2)
            .max_memories_per_component(4)
            .total_tables(n * 8)
            .max_tables_per_component(32)
            // Reset a freed instance's first 512 KiB of memory and tables
            // with memset instead of madvise: no TLB shootdown, and no page
            // faults when the next call touches them again. Measured on the
            // example plugin: warm call 36 us -> 17 us (docs/benchmarks.md).
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            // The pool refuses growth past this size too; the limiter
            // refuses first, with a message naming the cap.
            .max_memory_size(limits.memory_bytes.next_multiple_of(64 << 10));

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| Error::Engine {
            context: "creating the engine",
            source: e.into(),
        })?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| Error::Engine {
            context: "linking WASI",
            source: e.into(),
        })?;
        // The `host` import of every contract version the host runs.
        let linked = bindings::v0_1::host_iface::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )
        .and_then(|()| {
            bindings::v0_2::host_iface::add_to_linker::<CallState, HasSelf<CallState>>(
                &mut linker,
                |s| s,
            )
        });
        linked.map_err(|e| Error::Engine {
            context: "linking the host interface",
            source: e.into(),
        })?;

        let compat_hash = compatibility_hash(&engine);
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), stop.clone())?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits,
                compat_hash,
                stop,
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The linker holding WASI p2 and the `host` interface.
    pub(crate) fn linker(&self) -> &Linker<CallState> {
        &self.inner.linker
    }

    /// Limits applied to every call.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// Hex digest of the engine's compatibility hash: compiled code from an
    /// engine with another hash (other wasmtime version, other settings,
    /// other CPU features) must not be loaded.
    pub fn compat_hash(&self) -> &str {
        &self.inner.compat_hash
    }

    /// Epoch ticks making up the deadline, rounded up.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        self.inner.limits.deadline.as_nanos().div_ceil(tick).max(1) as u64
    }
}

fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("legion-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Engine {
            context: "starting the epoch thread",
            source: e.into(),
        })
}

/// Feeds a `Hash` value into sha256, so the engine's compatibility hash
/// gives the same key in every process (std's `DefaultHasher` promises no
/// stability across releases).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read from the inner state.
        0
    }
}

fn compatibility_hash(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}
