//! The `toolchains` table: name -> pinned digest, exports, config.

use std::collections::BTreeMap;

use sqlx::Row;

use super::Store;
use crate::plan::ToolchainInfo;
use crate::Error;

/// A registered toolchain as stored.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ToolchainRow {
    /// Registered name.
    pub name: String,
    /// Pinned digest, `sha256:<hex>`.
    pub digest: String,
    /// Exported interfaces.
    pub interfaces: Vec<String>,
    /// Contract version, e.g. `legion:toolchain@0.1.0`.
    pub contract: String,
    /// What the toolchain said about itself at registration.
    pub info: ToolchainInfo,
    /// Admin configuration.
    pub config: BTreeMap<String, String>,
    /// Registered automatically from the built-in plugins.
    pub builtin: bool,
    /// Size of the wasm in bytes.
    pub size: u64,
    /// Registration time, seconds since the Unix epoch.
    pub added_at: i64,
    /// The registry manifest it was pulled from, pinned by digest
    /// (`REGISTRY/REPO@sha256:…`); none for a file or an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Store {
    /// Inserts `row`, replacing a toolchain of the same name when `replace`.
    /// Returns `false` (and writes nothing) if the name exists and not `replace`.
    pub async fn put_toolchain(&self, row: &ToolchainRow, replace: bool) -> Result<bool, Error> {
        // `ON CONFLICT` reads the same in SQLite and PostgreSQL.
        let on_conflict = if replace {
            "ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, interfaces = excluded.interfaces,
                contract = excluded.contract, info = excluded.info, config = excluded.config,
                builtin = excluded.builtin, size = excluded.size, added_at = excluded.added_at,
                origin = excluded.origin"
        } else {
            "ON CONFLICT (name) DO NOTHING"
        };
        let db = self.path.clone();
        let info = serde_json::to_string(&row.info).map_err(|e| Error::json(&db, e))?;
        let config = serde_json::to_string(&row.config).map_err(|e| Error::json(&db, e))?;
        let done = sqlx::query(&format!(
            "INSERT INTO toolchains (name, digest, interfaces, contract, info, config, builtin, size, added_at, origin)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {on_conflict}"
        ))
        .bind(&row.name)
        .bind(&row.digest)
        .bind(row.interfaces.join(","))
        .bind(&row.contract)
        .bind(info)
        .bind(config)
        .bind(i64::from(row.builtin))
        .bind(row.size as i64)
        .bind(row.added_at)
        .bind(row.origin.as_deref())
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// The toolchain named `name`.
    pub async fn get_toolchain(&self, name: &str) -> Result<Option<ToolchainRow>, Error> {
        let row = sqlx::query("SELECT * FROM toolchains WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| self.decode(r)).transpose()
    }

    /// All toolchains, by name.
    pub async fn list_toolchains(&self) -> Result<Vec<ToolchainRow>, Error> {
        let rows = sqlx::query("SELECT * FROM toolchains ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    /// Deletes the toolchain `name`; returns whether it existed.
    pub async fn delete_toolchain(&self, name: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM toolchains WHERE name = $1")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// How many toolchains pin `digest`.
    pub async fn toolchains_using(&self, digest: &str) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM toolchains WHERE digest = $1")
            .bind(digest)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// Keeps a toolchain's wasm under its digest (once per digest).
    pub async fn put_toolchain_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO toolchain_blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest)
        .bind(bytes.to_vec())
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The wasm kept under `digest`, if any.
    pub async fn get_toolchain_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        sqlx::query_scalar("SELECT bytes FROM toolchain_blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// Forgets the wasm kept under `digest`.
    pub async fn delete_toolchain_blob(&self, digest: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM toolchain_blobs WHERE digest = $1")
            .bind(digest)
            .execute(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn decode(&self, r: sqlx::any::AnyRow) -> Result<ToolchainRow, Error> {
        let corrupt = |field: &str, e: String| Error::Database {
            path: self.path.clone(),
            message: format!("toolchains.{field}: {e}"),
        };
        let interfaces: String = r.try_get("interfaces").map_err(|e| self.err(e))?;
        let info: String = r.try_get("info").map_err(|e| self.err(e))?;
        let config: String = r.try_get("config").map_err(|e| self.err(e))?;
        Ok(ToolchainRow {
            name: r.try_get("name").map_err(|e| self.err(e))?,
            digest: r.try_get("digest").map_err(|e| self.err(e))?,
            interfaces: interfaces
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            contract: r.try_get("contract").map_err(|e| self.err(e))?,
            info: serde_json::from_str(&info).map_err(|e| corrupt("info", e.to_string()))?,
            config: serde_json::from_str(&config).map_err(|e| corrupt("config", e.to_string()))?,
            builtin: r.try_get::<i64, _>("builtin").map_err(|e| self.err(e))? != 0,
            size: r.try_get::<i64, _>("size").map_err(|e| self.err(e))? as u64,
            added_at: r.try_get("added_at").map_err(|e| self.err(e))?,
            origin: r.try_get("origin").map_err(|e| self.err(e))?,
        })
    }
}
