//! Registered toolchains: name -> pinned sha256 -> compiled component.
//!
//! Registration validates everything before writing anything: the file is a
//! component, it exports a contract interface of a supported version, it
//! links against the host, and its `describe` answers within the sandbox.
//! Only then are the wasm (content-addressed), its compiled code and the
//! database row written, in that order; a failure removes what it wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::cache::ComponentCache;
use super::call::Plugin;
use super::engine::Runtime;
use super::inspect::{binary_kind, BinaryKind};
use crate::home::Home;
use crate::names::ToolchainName;
use crate::store::{Store, ToolchainRow};
use crate::Error;

/// A registered toolchain (the stored row).
pub type ToolchainRecord = ToolchainRow;

/// The toolchains shipped with Legion, registered on first use from the
/// built-in plugin folder.
pub const BUILTIN_TOOLCHAINS: &[&str] = &["python", "mlflow", "docker-rest"];

/// Largest wasm file accepted.
pub const MAX_WASM_BYTES: usize = 64 << 20;

/// A toolchain in a registry: `REGISTRY/REPO:TAG` or
/// `REGISTRY/REPO@sha256:…`, the registry named (no Docker Hub default:
/// a toolchain's origin is never guessed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolchainImage(pub oci_client::Reference);

impl ToolchainImage {
    /// Parses `text`; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::InvalidArgument {
            field: field.to_string(),
            message: format!(
                "'{text}' {why}: use REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST, e.g. 127.0.0.1:5000/toolchains/python:1"
            ),
        }
        };
        let first = text.split('/').next().unwrap_or_default();
        if !text.contains('/')
            || !(first.contains('.') || first.contains(':') || first == "localhost")
        {
            return Err(bad("names no registry"));
        }
        if !crate::oci::registry::names_tag(text) {
            return Err(bad("names neither a tag nor a digest"));
        }
        let reference: oci_client::Reference = text
            .parse()
            .map_err(|e: oci_client::ParseError| bad(&format!("is not a reference ({e})")))?;
        Ok(ToolchainImage(reference))
    }

    /// Whether `text` reads as a registry reference rather than a path.
    pub fn looks_like(text: &str) -> bool {
        Self::parse("", text).is_ok()
    }
}

/// Where a registered component came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// A file or an upload.
    File,
    /// The built-in plugin folder.
    Builtin,
    /// A registry: the manifest, pinned (`REGISTRY/REPO@sha256:…`).
    Registry(String),
}

/// What `legion toolchain add` asks for.
#[derive(Debug, Clone, Default)]
pub struct AddToolchain {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Name to register under; default: what the toolchain calls itself.
    pub name: Option<ToolchainName>,
    /// Admin configuration (`--config KEY=VALUE`).
    pub config: BTreeMap<String, String>,
    /// Replace a toolchain of the same name.
    pub replace: bool,
}

/// The toolchain registry of one data directory.
pub struct Toolchains {
    runtime: Runtime,
    store: Store,
    home: Home,
    cache: ComponentCache,
    builtin_dir: Option<PathBuf>,
    /// Plugins made ready, with the row they were made from.
    loaded: Mutex<BTreeMap<String, (ToolchainRecord, Plugin)>>,
    /// Rows read in the last [`ROW_FRESH`], by name: a server taking
    /// creates reads a toolchain's row once a second, not once a create.
    rows: Mutex<BTreeMap<String, (std::time::Instant, ToolchainRecord)>>,
}

/// How long a toolchain's row read from the database is used again
/// without reading it. A change made through this registry applies at
/// once; one made by another process (another API replica, the command
/// line) within this time.
pub const ROW_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Toolchains {
    /// The registry over `store` in `home`, with built-ins from `builtin_dir`.
    pub fn new(runtime: Runtime, store: Store, home: Home, builtin_dir: Option<PathBuf>) -> Self {
        let cache = ComponentCache::new(home.component_cache());
        Toolchains {
            runtime,
            store,
            home,
            cache,
            builtin_dir,
            loaded: Mutex::new(BTreeMap::new()),
            rows: Mutex::new(BTreeMap::new()),
        }
    }

    /// The folder holding the built-in plugins: `LEGION_PLUGIN_DIR`, else
    /// `plugins/` beside the `legion` binary or one level up (the layout
    /// `scripts/build-plugins.sh` produces under the cargo target folder).
    pub fn default_builtin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("LEGION_PLUGIN_DIR") {
            return Some(PathBuf::from(dir));
        }
        let exe = std::env::current_exe().ok()?;
        let bin_dir = exe.parent()?;
        [bin_dir.join("plugins"), bin_dir.parent()?.join("plugins")]
            .into_iter()
            .find(|d| d.is_dir())
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The data directory.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Registers a toolchain from a file. Under a trust policy the file
    /// needs a detached signature by a trusted key beside it (`FILE.sig`,
    /// from `legion toolchain sign FILE --key KEY`).
    pub async fn add(&self, req: &AddToolchain) -> Result<ToolchainRecord, Error> {
        let display = req.path.display().to_string();
        let bytes = std::fs::read(&req.path).map_err(|e| Error::io(&req.path, e))?;
        let trust = super::trust::Trust::load(&self.home)?;
        if trust.is_set() {
            let key = super::trust::verify_file(&trust, &req.path, &bytes)?;
            tracing::info!(file = %req.path.display(), key, "toolchain signature verified");
        }
        self.register_file(
            &bytes,
            &display,
            req.name.as_ref(),
            req.config.clone(),
            req.replace,
        )
        .await
    }

    /// Registers a toolchain from bytes received elsewhere (an upload to
    /// the API); `file` names them in errors and, without `name`, gives
    /// the fallback name.
    pub async fn add_bytes(
        &self,
        bytes: &[u8],
        file: &str,
        name: Option<&ToolchainName>,
        config: BTreeMap<String, String>,
        replace: bool,
    ) -> Result<ToolchainRecord, Error> {
        let trust = super::trust::Trust::load(&self.home)?;
        if trust.is_set() {
            return Err(Error::Untrusted {
                subject: format!("toolchain upload {file}"),
                message: format!(
                    "a trust policy is set (trusted keys: {}): an upload carries no signature; register it from a registry, signed — legion toolchain push FILE REGISTRY/REPO:TAG, legion toolchain sign REGISTRY/REPO:TAG --key KEY, then legion toolchain add REGISTRY/REPO:TAG",
                    trust.ids().join(", ")
                ),
            });
        }
        self.register_file(bytes, file, name, config, replace).await
    }

    /// A file's or an upload's bytes, their size checked, registered.
    async fn register_file(
        &self,
        bytes: &[u8],
        file: &str,
        name: Option<&ToolchainName>,
        config: BTreeMap<String, String>,
        replace: bool,
    ) -> Result<ToolchainRecord, Error> {
        if bytes.len() > MAX_WASM_BYTES {
            return Err(Error::InvalidArgument {
                field: file.to_string(),
                message: format!(
                    "{} bytes is more than the {} MiB a toolchain may be",
                    bytes.len(),
                    MAX_WASM_BYTES >> 20
                ),
            });
        }
        self.register(
            bytes,
            file,
            name.map(ToolchainName::as_str),
            config,
            replace,
            Origin::File,
        )
        .await
    }

    /// Registers the toolchain a registry holds at `reference`
    /// (`REGISTRY/REPO:TAG`, resolved to a digest once, here; or
    /// `REGISTRY/REPO@sha256:…`). The component's digest is checked while
    /// it arrives and pinned like a file's: a tag moved later changes
    /// nothing until the toolchain is registered again.
    pub async fn add_from_registry(
        &self,
        reference: &ToolchainImage,
        name: Option<&ToolchainName>,
        config: BTreeMap<String, String>,
        replace: bool,
    ) -> Result<ToolchainRecord, Error> {
        let registry = crate::oci::registry::Registry::for_reference(&reference.0);
        let trust = super::trust::Trust::load(&self.home)?;
        let pulled = crate::oci::wasm::pull(&registry, &reference.0, MAX_WASM_BYTES as u64).await?;
        if trust.is_set() {
            // The digest checked is the one pulled: a tag moved between the
            // two calls cannot slip another component past the signature.
            let pinned = ToolchainImage(reference.0.clone_with_digest(pulled.digest.clone()));
            let key =
                super::trust::verify_digest(&registry, &pinned, &pulled.digest, &trust).await?;
            tracing::info!(reference = %pulled.pinned, key, "toolchain signature verified");
        }
        self.register(
            &pulled.wasm,
            &pulled.pinned,
            name.map(ToolchainName::as_str),
            config,
            replace,
            Origin::Registry(pulled.pinned.clone()),
        )
        .await
    }

    /// Checks `bytes` as [`Toolchains::add`] would — a component of a
    /// supported contract that links and answers `describe` — and pushes
    /// it to `reference` in the wasm OCI layout.
    pub async fn push(
        &self,
        bytes: &[u8],
        file: &str,
        reference: &oci_client::Reference,
    ) -> Result<(crate::oci::registry::PushReport, crate::plan::ToolchainInfo), Error> {
        let (component, plugin, info) = self
            .check_component(bytes, file, &file_stem(file), BTreeMap::new())
            .await?;
        let world = super::inspect::world(self.runtime.engine(), &component);
        let packed = crate::oci::wasm::pack(
            bytes,
            world,
            crate::oci::wasm::annotations(
                &info.name,
                &info.version,
                &info.description,
                &plugin.contract().to_string(),
            ),
        )?;
        let registry = crate::oci::registry::Registry::for_reference(reference);
        let report = crate::oci::wasm::push(&registry, bytes, &packed, reference).await?;
        Ok((report, info))
    }

    /// Compiles `bytes` and asks the toolchain to `describe` itself, in
    /// the sandbox, off the async workers (both take up to the deadline).
    async fn check_component(
        &self,
        bytes: &[u8],
        file: &str,
        label: &str,
        config: BTreeMap<String, String>,
    ) -> Result<(Component, Plugin, crate::plan::ToolchainInfo), Error> {
        if binary_kind(bytes, file)? == BinaryKind::CoreModule {
            return Err(Error::CoreModule {
                file: file.to_string(),
            });
        }
        let (runtime, owned, label) = (self.runtime.clone(), bytes.to_vec(), label.to_string());
        tokio::task::spawn_blocking(move || {
            let component =
                Component::new(runtime.engine(), &owned).map_err(|e| Error::Compile {
                    toolchain: label.clone(),
                    source: e.into(),
                })?;
            let plugin = Plugin::new(&runtime, &label, &component, config)?;
            let info = plugin.describe()?;
            Ok::<_, Error>((component, plugin, info))
        })
        .await
        .map_err(|e| Error::Engine {
            context: "registration",
            source: e.into(),
        })?
    }

    async fn register(
        &self,
        bytes: &[u8],
        file: &str,
        name: Option<&str>,
        config: BTreeMap<String, String>,
        replace: bool,
        origin: Origin,
    ) -> Result<ToolchainRecord, Error> {
        let builtin = origin == Origin::Builtin;
        let hex = hex::encode(Sha256::digest(bytes));
        let digest = format!("sha256:{hex}");
        let label = name.map(str::to_string).unwrap_or_else(|| file_stem(file));
        let (component, plugin, info) = self
            .check_component(bytes, file, &label, config.clone())
            .await?;
        let name = match name {
            Some(n) => n.to_string(),
            None if !info.name.is_empty() => info.name.clone(),
            None => label,
        };
        let name = crate::names::ToolchainName::new(name)?.to_string();

        if let Some(existing) = self.store.get_toolchain(&name).await? {
            if !replace {
                return Err(Error::AlreadyRegistered {
                    name,
                    digest: existing.digest,
                });
            }
        }

        let blob = self.blob_path(&hex);
        let wrote_blob = !blob.is_file();
        if wrote_blob {
            crate::fsutil::write_atomic(&blob, bytes)?;
        }
        let cached = self.cache.path(&self.runtime, &hex);
        let wrote_cache = !cached.is_file();
        let row = ToolchainRow {
            name: name.clone(),
            digest: digest.clone(),
            interfaces: plugin
                .interfaces()
                .iter()
                .map(|i| i.as_str().to_string())
                .collect(),
            contract: plugin.contract().to_string(),
            info,
            config,
            builtin,
            size: bytes.len() as u64,
            added_at: unix_now(),
            origin: match origin {
                Origin::Registry(pinned) => Some(pinned),
                Origin::File | Origin::Builtin => None,
            },
        };
        let written = async {
            if wrote_cache {
                let code = component.serialize().map_err(|e| Error::Compile {
                    toolchain: name.clone(),
                    source: e.into(),
                })?;
                crate::fsutil::write_atomic(&cached, &code)?;
            }
            // Other replicas sharing the database load it from there;
            // the built-ins ship with every replica.
            if !builtin {
                self.store.put_toolchain_blob(&digest, bytes).await?;
            }
            if !self.store.put_toolchain(&row, replace).await? {
                return Err(Error::AlreadyRegistered {
                    name: name.clone(),
                    digest: digest.clone(),
                });
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            // Undo only what this call created and nothing else pins.
            if self.store.toolchains_using(&digest).await.unwrap_or(1) == 0 {
                if wrote_blob {
                    let _ = std::fs::remove_file(&blob);
                }
                if wrote_cache {
                    let _ = std::fs::remove_file(&cached);
                }
                let _ = self.store.delete_toolchain_blob(&digest).await;
            }
            return Err(e);
        }
        self.forget(&name);
        tracing::debug!(toolchain = %name, %digest, "registered");
        Ok(row)
    }

    /// All toolchains, registering the built-ins first if needed.
    pub async fn list(&self) -> Result<Vec<ToolchainRecord>, Error> {
        self.ensure_builtins().await?;
        self.store.list_toolchains().await
    }

    /// The toolchain `name`, registering it first if it is a built-in.
    pub async fn get(&self, name: &str) -> Result<ToolchainRecord, Error> {
        if let Some((read, row)) = self.rows().get(name) {
            if read.elapsed() < ROW_FRESH {
                return Ok(row.clone());
            }
        }
        if let Some(row) = self.store.get_toolchain(name).await? {
            self.rows()
                .insert(name.to_string(), (std::time::Instant::now(), row.clone()));
            return Ok(row);
        }
        if BUILTIN_TOOLCHAINS.contains(&name) {
            self.ensure_builtins().await?;
            if let Some(row) = self.store.get_toolchain(name).await? {
                return Ok(row);
            }
            // Left out by the trust policy: say so, not "unknown".
            if let Some(dir) = &self.builtin_dir {
                let path = dir.join(format!("{name}.wasm"));
                if let Ok(bytes) = std::fs::read(&path) {
                    let trust = super::trust::Trust::load(&self.home)?;
                    if trust.is_set() {
                        super::trust::verify_file(&trust, &path, &bytes)?;
                    }
                }
            }
        }
        Err(self.unknown(name).await)
    }

    async fn unknown(&self, name: &str) -> Error {
        let known = match self.store.list_toolchains().await {
            Ok(rows) if !rows.is_empty() => rows
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", "),
            _ => "none".to_string(),
        };
        Error::UnknownToolchain {
            name: name.to_string(),
            known,
        }
    }

    /// Removes the toolchain `name`, and its wasm and compiled code when no
    /// other toolchain pins the same digest.
    pub async fn remove(&self, name: &str) -> Result<ToolchainRecord, Error> {
        let Some(row) = self.store.get_toolchain(name).await? else {
            return Err(self.unknown(name).await);
        };
        self.store.delete_toolchain(name).await?;
        self.forget(name);
        if self.store.toolchains_using(&row.digest).await? == 0 {
            self.store.delete_toolchain_blob(&row.digest).await?;
            let hex = row.digest.trim_start_matches("sha256:");
            let _ = std::fs::remove_file(self.blob_path(hex));
            self.cache.remove(&self.runtime, hex);
        }
        Ok(row)
    }

    /// The plugin for `name`, ready to call: from memory while its row is
    /// unchanged (another replica may have replaced it), else from the
    /// compiled cache, else compiled from the pinned wasm.
    pub async fn load(&self, name: &str) -> Result<Plugin, Error> {
        let row = self.get(name).await?;
        self.load_record(&row).await
    }

    /// The plugin of a row just read with [`Toolchains::get`] (a create
    /// reads the row once, for its checks and its plugin).
    pub async fn load_record(&self, row: &ToolchainRecord) -> Result<Plugin, Error> {
        if let Some((seen, p)) = self.lock().get(&row.name) {
            if seen.digest == row.digest && seen.config == row.config {
                return Ok(p.clone());
            }
        }
        self.fetch_blob(row).await?;
        let plugin = self.load_row(row)?;
        self.lock()
            .insert(row.name.clone(), (row.clone(), plugin.clone()));
        Ok(plugin)
    }

    /// Loads a stored toolchain's component (no database access).
    pub fn load_row(&self, row: &ToolchainRecord) -> Result<Plugin, Error> {
        let hex = row.digest.trim_start_matches("sha256:");
        let (component, _) =
            self.cache
                .load(&self.runtime, &row.name, hex, &self.blob_path(hex))?;
        Plugin::new(&self.runtime, &row.name, &component, row.config.clone())
    }

    /// Registers each built-in plugin found in the built-in folder that is
    /// missing, and re-registers a built-in whose file changed (a newer
    /// Legion). A toolchain the admin registered under a built-in's name is
    /// left alone.
    pub async fn ensure_builtins(&self) -> Result<(), Error> {
        let Some(dir) = &self.builtin_dir else {
            return Ok(());
        };
        let trust = super::trust::Trust::load(&self.home)?;
        for name in BUILTIN_TOOLCHAINS {
            let path = dir.join(format!("{name}.wasm"));
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let existing = self.store.get_toolchain(name).await?;
            let replace = match &existing {
                None => false,
                Some(row)
                    if row.builtin
                        && row.digest
                            != format!("sha256:{}", hex::encode(Sha256::digest(&bytes))) =>
                {
                    true
                }
                Some(_) => continue,
            };
            // Under a trust policy a built-in is held to it when it is
            // registered, like any toolchain: the build signs them
            // (scripts/sign-builtins.sh); one not signed by a trusted key is
            // left unregistered, and using it says why.
            if trust.is_set() {
                if let Err(e) = super::trust::verify_file(&trust, &path, &bytes) {
                    tracing::warn!(toolchain = name, "built-in toolchain not registered: {e}");
                    continue;
                }
            }
            let config = existing.map(|r| r.config).unwrap_or_default();
            match self
                .register(
                    &bytes,
                    &path.display().to_string(),
                    Some(name),
                    config,
                    replace,
                    Origin::Builtin,
                )
                .await
            {
                Ok(_) | Err(Error::AlreadyRegistered { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Brings a toolchain's wasm from the database when this replica has
    /// neither it nor its compiled code (another replica registered it).
    /// What is written is checked against the pinned digest when loaded.
    async fn fetch_blob(&self, row: &ToolchainRecord) -> Result<(), Error> {
        let hex = row.digest.trim_start_matches("sha256:");
        let blob = self.blob_path(hex);
        if blob.is_file() || self.cache.path(&self.runtime, hex).is_file() {
            return Ok(());
        }
        if let Some(bytes) = self.store.get_toolchain_blob(&row.digest).await? {
            crate::fsutil::write_atomic(&blob, &bytes)?;
        }
        Ok(())
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.home.toolchain_blobs().join(format!("{hex}.wasm"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (ToolchainRecord, Plugin)>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
        self.rows().remove(name);
    }

    fn rows(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, (std::time::Instant, ToolchainRecord)>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared handle, for servers that call plugins from many tasks.
pub type SharedToolchains = Arc<Toolchains>;

fn file_stem(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
