//! `/api/v1/toolchains`: the registry over HTTP. Reading is for every
//! role; registering and removing are the admin's.
//!
//! A registration is a `multipart/form-data` upload, what `curl -F` and
//! every HTTP client send for a file: the component (`component`, the
//! `.wasm`), and optionally `name`, `config` (`KEY=VALUE`, repeatable) and
//! `replace` (`true`). It is checked as `legion toolchain add` checks a
//! file — a component of a supported contract that links and answers
//! `describe` in the sandbox — and kept in the database, so every replica
//! sharing it can load the toolchain.
//!
//! Or a registration names a toolchain in a registry: a JSON body
//! `{"image": "REGISTRY/REPO@sha256:…" | "REGISTRY/REPO:TAG", "name",
//! "config": {KEY: VALUE}, "replace"}`. The server pulls it (a tag is
//! resolved to its digest once, here), checks the component's digest while
//! it arrives, and pins it: the row's `origin` names the manifest by digest.

use std::time::Duration;

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::{Caller, Role};
use super::{require, ApiError, Shared};
use crate::names::ToolchainName;
use crate::plugin::registry::MAX_WASM_BYTES;
use crate::Error;

/// Largest registration body: the largest component, and room for the form.
pub const MAX_UPLOAD: usize = MAX_WASM_BYTES + (1 << 20);

/// Longest a registration may take: it compiles the component.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(300);

/// `GET /api/v1/toolchains`.
pub(super) async fn list(
    axum::extract::State(api): Shared,
    caller: Caller,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    let rows = api.toolchains.list().await?;
    Ok(Json(json!({"items": rows})).into_response())
}

/// `GET /api/v1/toolchains/{name}`.
pub(super) async fn get(
    axum::extract::State(api): Shared,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Viewer)?;
    Ok(Json(api.toolchains.get(&name).await?).into_response())
}

/// `DELETE /api/v1/toolchains/{name}`.
pub(super) async fn delete(
    axum::extract::State(api): Shared,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require(&caller, Role::Admin)?;
    let removed = api.toolchains.remove(&name).await?;
    tracing::info!(toolchain = %name, by = %caller.name, "toolchain removed");
    Ok(Json(removed).into_response())
}

/// The registration form, read.
#[derive(Debug, Default)]
struct Form {
    /// The part's file name, and the bytes.
    component: Option<(String, bytes::Bytes)>,
    name: Option<ToolchainName>,
    config: Vec<(String, String)>,
    replace: bool,
}

fn form_error(e: MultipartError) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too-large"
    } else {
        "invalid-argument"
    };
    ApiError::new(status, code, format!("body: {}", e.body_text()))
}

async fn read_form(mut form: Multipart) -> Result<Form, ApiError> {
    let mut out = Form::default();
    while let Some(field) = form.next_field().await.map_err(form_error)? {
        let part = field.name().unwrap_or_default().to_string();
        if part == "component" {
            if out.component.is_some() {
                return Err(ApiError::bad("component", "given twice".into()));
            }
            let file = field
                .file_name()
                .filter(|f| !f.is_empty())
                .unwrap_or("component.wasm")
                .to_string();
            out.component = Some((file, field.bytes().await.map_err(form_error)?));
            continue;
        }
        let text = field.text().await.map_err(form_error)?;
        match part.as_str() {
            "name" => {
                out.name = Some(
                    ToolchainName::new(text).map_err(|e| ApiError::bad("name", e.to_string()))?,
                )
            }
            "config" => out
                .config
                .push(crate::plan::parse_key_value(&text).map_err(|m| ApiError::bad("config", m))?),
            "replace" => {
                out.replace = match text.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::bad(
                            "replace",
                            format!("'{other}' is neither true nor false"),
                        ))
                    }
                }
            }
            other => {
                return Err(ApiError::bad(
                    if other.is_empty() { "body" } else { other },
                    "unknown part; the form takes component, name, config and replace".into(),
                ))
            }
        }
    }
    Ok(out)
}

/// Errors of a registration: what is wrong with the component is 422.
fn refused(e: Error) -> ApiError {
    match e {
        Error::AlreadyRegistered { name, digest } => ApiError::new(
            StatusCode::CONFLICT,
            "already-exists",
            format!("toolchain '{name}' is already registered ({digest}); send replace=true (legion toolchain add --replace) to replace it"),
        ),
        e @ (Error::NotWasm { .. }
        | Error::CoreModule { .. }
        | Error::NoInterfaces { .. }
        | Error::ContractVersion { .. }
        | Error::Compile { .. }
        | Error::Link { .. }
        | Error::Deadline { .. }
        | Error::MemoryCap { .. }
        | Error::ResultTooLarge { .. }
        | Error::Trap { .. }
        | Error::Toolchain { .. }
        | Error::BadOutput { .. }) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-toolchain",
            e.to_string(),
        ),
        e @ Error::Untrusted { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "untrusted", e.to_string())
        }
        Error::Registry { reference, message } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "registry",
            format!("image: {reference}: {message}"),
        ),
        e => e.into(),
    }
}

/// Reads and drops what is left of a refused upload (up to
/// [`MAX_UPLOAD`]), so that the client, still sending, reads the refusal
/// rather than a connection closed under it.
async fn drain(body: axum::body::Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > MAX_UPLOAD {
            break;
        }
    }
}

/// `POST /api/v1/toolchains`: registers an uploaded component; 201 with
/// the toolchain.
pub(super) async fn register(
    axum::extract::State(api): Shared,
    caller: Result<Caller, ApiError>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let caller = match caller.and_then(|c| require(&c, Role::Admin).map(|_| c)) {
        Ok(c) => c,
        Err(refusal) => {
            drain(req.into_body()).await;
            return Err(refusal);
        }
    };
    if let Some(c) = &api.cluster {
        drain(req.into_body()).await;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cluster-mode",
            format!(
                "this server works on a cluster (--executor kube): toolchains there are Toolchain objects the operator checks (kubectl apply -n {} a Toolchain)",
                c.namespace()
            ),
        ));
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        let Json(body) =
            <Json<FromRegistry> as axum::extract::FromRequest<_>>::from_request(req, &api)
                .await
                .map_err(|e| ApiError::bad("body", e.body_text()))?;
        let image = crate::plugin::registry::ToolchainImage::parse("image", &body.image)?;
        let name = body
            .name
            .map(ToolchainName::new)
            .transpose()
            .map_err(|e| ApiError::bad("name", e.to_string()))?;
        let row = api
            .toolchains
            .add_from_registry(&image, name.as_ref(), body.config, body.replace)
            .await
            .map_err(refused)?;
        return Ok(registered(row, &caller));
    }
    let form = <Multipart as axum::extract::FromRequest<_>>::from_request(req, &api)
        .await
        .map_err(|e: MultipartRejection| ApiError::bad("body", e.body_text()))?;
    let form = read_form(form).await?;
    let Some((file, bytes)) = form.component else {
        return Err(ApiError::bad(
            "component",
            "required: the toolchain's .wasm file (curl -F component=@toolchain.wasm)".into(),
        ));
    };
    let row = api
        .toolchains
        .add_bytes(
            &bytes,
            &file,
            form.name.as_ref(),
            crate::plan::unique_pairs("config", form.config)?,
            form.replace,
        )
        .await
        .map_err(refused)?;
    Ok(registered(row, &caller))
}

/// A registration from a registry (the JSON body).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FromRegistry {
    /// The toolchain's wasm OCI artifact: `REGISTRY/REPO@sha256:…`, or
    /// `REGISTRY/REPO:TAG` (resolved to its digest now).
    #[schemars(regex(
        pattern = r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$"
    ))]
    pub image: String,
    /// Name to register under (default: the name the toolchain gives itself).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub name: Option<String>,
    /// What the toolchain reads with `host.config`.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// Replace a toolchain of that name.
    #[serde(default)]
    pub replace: bool,
}

/// 201 with the toolchain and its location.
fn registered(row: crate::plugin::ToolchainRecord, caller: &Caller) -> Response {
    tracing::info!(toolchain = %row.name, digest = %row.digest, origin = row.origin.as_deref().unwrap_or("upload"), by = %caller.name, "toolchain registered");
    let mut r = (StatusCode::CREATED, Json(&row)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/toolchains/{}", row.name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
