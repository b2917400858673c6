//! The `deployments` table: models the API serves, each held (leased) by
//! the replica serving it; a replica that dies loses its deployments to
//! the others, as it loses its runs.

use sqlx::Row;

use super::{Backend, Store};
use crate::Error;

/// Where a deployment is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentState {
    /// Its model is being loaded.
    Deploying,
    /// It answers predictions at `url`.
    Ready,
    /// It could not be served (`reason` says why).
    Failed,
    /// Being stopped, then removed.
    Deleting,
}

impl DeploymentState {
    /// Its name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Deploying => "deploying",
            DeploymentState::Ready => "ready",
            DeploymentState::Failed => "failed",
            DeploymentState::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deploying" => DeploymentState::Deploying,
            "ready" => DeploymentState::Ready,
            "failed" => DeploymentState::Failed,
            "deleting" => DeploymentState::Deleting,
            _ => return None,
        })
    }
}

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    /// Its name.
    pub name: String,
    /// What was asked: a `ModelDeployment`'s spec.
    pub spec: crate::operator::crd::ModelDeploymentSpec,
    /// The stored model the image serves, `name:version`.
    pub model: String,
    /// Where it is.
    pub state: DeploymentState,
    /// Where it answers, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The replica serving it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When its state last changed.
    pub updated_at: i64,
}

/// States whose deployment a replica serves (and keeps leased).
const SERVED: &str = "state IN ('deploying', 'ready')";

impl Store {
    /// Records a new deployment held by `owner` until `until`; `false` if
    /// the name is taken.
    pub async fn insert_deployment(&self, d: &DeploymentRecord, until: i64) -> Result<bool, Error> {
        let spec = serde_json::to_string(&d.spec).map_err(|e| Error::json(&self.path, e))?;
        let done = sqlx::query(
            "INSERT INTO deployments (name, spec, model, state, url, reason, owner, lease_until, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&d.name)
        .bind(spec)
        .bind(&d.model)
        .bind(d.state.as_str())
        .bind(d.url.clone())
        .bind(d.reason.clone())
        .bind(d.owner.clone())
        .bind(until)
        .bind(d.created_at)
        .bind(d.updated_at)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// The deployment `name`.
    pub async fn get_deployment(&self, name: &str) -> Result<Option<DeploymentRecord>, Error> {
        let row = sqlx::query("SELECT * FROM deployments WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| self.decode_deployment(r)).transpose()
    }

    /// Every deployment, by name.
    pub async fn list_deployments(&self) -> Result<Vec<DeploymentRecord>, Error> {
        let rows = sqlx::query("SELECT * FROM deployments ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| self.decode_deployment(r))
            .collect()
    }

    /// Writes a deployment's state as its holder `owner` sees it; `false`
    /// (nothing written) if another replica holds it now, or it is being
    /// deleted.
    pub async fn set_deployment_state(
        &self,
        name: &str,
        owner: &str,
        state: DeploymentState,
        url: Option<&str>,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE deployments SET state = $1, url = $2, reason = $3, updated_at = $4
             WHERE name = $5 AND owner = $6 AND state <> 'deleting'",
        )
        .bind(state.as_str())
        .bind(url.map(str::to_string))
        .bind(reason.map(str::to_string))
        .bind(now)
        .bind(name)
        .bind(owner)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Asks for `name` to be stopped and removed by whichever replica
    /// serves it; `false` if there is no such deployment.
    pub async fn request_delete_deployment(&self, name: &str, now: i64) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE deployments SET state = 'deleting', updated_at = $1 WHERE name = $2",
        )
        .bind(now)
        .bind(name)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes `name`'s row.
    pub async fn delete_deployment(&self, name: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM deployments WHERE name = $1")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Renews `owner`'s leases on the deployments it serves (`until` 0
    /// lets them go).
    pub async fn renew_deployment_leases(&self, owner: &str, until: i64) -> Result<(), Error> {
        sqlx::query(&format!(
            "UPDATE deployments SET lease_until = $1 WHERE owner = $2 AND {SERVED}"
        ))
        .bind(until)
        .bind(owner)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The names and states of the deployments `owner` holds.
    pub async fn deployments_held_by(
        &self,
        owner: &str,
    ) -> Result<Vec<(String, DeploymentState)>, Error> {
        let rows = sqlx::query("SELECT name, state FROM deployments WHERE owner = $1")
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|r| {
                let state: String = r.try_get("state").map_err(|e| self.err(e))?;
                Ok((
                    r.try_get("name").map_err(|e| self.err(e))?,
                    DeploymentState::parse(&state).ok_or_else(|| Error::Database {
                        path: self.path.clone(),
                        message: format!("deployments.state: unknown state '{state}'"),
                    })?,
                ))
            })
            .collect()
    }

    /// Removes deployments asked to be deleted whose holder is gone (its
    /// lease ran out before `now`): nobody else will.
    pub async fn reap_deleted_deployments(&self, now: i64) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM deployments WHERE state = 'deleting' AND (owner IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Takes one served deployment whose lease ran out before `now` (its
    /// replica died) for `owner`, until `until`, back to `deploying`.
    pub async fn claim_expired_deployment(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<DeploymentRecord>, Error> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "UPDATE deployments SET owner = $1, lease_until = $2, state = 'deploying', url = NULL, updated_at = $3
             WHERE name = (SELECT name FROM deployments WHERE {SERVED} AND lease_until < $3
                           ORDER BY created_at LIMIT 1 {lock})
             RETURNING *"
        ))
        .bind(owner)
        .bind(until)
        .bind(now)
        .fetch_optional(&self.writer)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|r| self.decode_deployment(r)).transpose()
    }

    fn decode_deployment(&self, r: sqlx::any::AnyRow) -> Result<DeploymentRecord, Error> {
        let corrupt = |field: &str, e: String| Error::Database {
            path: self.path.clone(),
            message: format!("deployments.{field}: {e}"),
        };
        let spec: String = r.try_get("spec").map_err(|e| self.err(e))?;
        let state: String = r.try_get("state").map_err(|e| self.err(e))?;
        Ok(DeploymentRecord {
            name: r.try_get("name").map_err(|e| self.err(e))?,
            spec: serde_json::from_str(&spec).map_err(|e| corrupt("spec", e.to_string()))?,
            model: r.try_get("model").map_err(|e| self.err(e))?,
            state: DeploymentState::parse(&state)
                .ok_or_else(|| corrupt("state", format!("unknown state '{state}'")))?,
            url: r.try_get("url").map_err(|e| self.err(e))?,
            reason: r.try_get("reason").map_err(|e| self.err(e))?,
            owner: r.try_get("owner").map_err(|e| self.err(e))?,
            created_at: r.try_get("created_at").map_err(|e| self.err(e))?,
            updated_at: r.try_get("updated_at").map_err(|e| self.err(e))?,
        })
    }
}
