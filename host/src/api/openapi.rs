//! The OpenAPI 3.1 document (`/api/v1/openapi.json`) and its browsable
//! page (`/api/v1/docs`).
//!
//! Schemas are generated from the very types the handlers read and write
//! (schemars, JSON Schema 2020-12, which OpenAPI 3.1 adopts); query
//! parameters from the handlers' query types. The operations are listed
//! here, next to the router, and a test checks the two name the same
//! routes. (utoipa would want a second derive on every type that already
//! derives `JsonSchema` for the custom resources; schemars covers both.)
//!
//! The page is rendered here from the document, without JavaScript, so it
//! works where the server cannot reach a CDN.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::auth::Role;
use super::deployments::{DeploymentList, DeploymentRequest};
use super::{EventsQuery, ImageList, LogQuery, ModelList, Page, RunQuery};
use crate::operator::crd::{ModelPackagingSpec, ModelTrainingSpec};
use crate::store::{DeploymentRecord, RunEvent, RunRecord, ToolchainRow};

/// An error answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable code: `invalid-argument`, `unauthenticated`, `forbidden`,
    /// `not-found`, `already-over`, `rejected`, `timeout`, …
    pub code: String,
    /// What to do about it, naming the field.
    pub message: String,
    /// The run it concerns (a create whose plan was refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<RunRecord>>,
}

/// A list of toolchains.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ToolchainList {
    /// Every registered toolchain.
    pub items: Vec<ToolchainRow>,
}

/// `{"status": …}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusBody {
    /// `ok` or `ready`.
    pub status: String,
}

/// One operation of the document.
struct Op {
    method: &'static str,
    path: String,
    id: String,
    summary: String,
    /// `None`: no token needed.
    role: Option<Role>,
    params: Vec<Value>,
    /// Content types and schemas of the request body (none: no body).
    body: Vec<(&'static str, Value)>,
    /// Status, description, content type, schema.
    ok: Vec<(u16, &'static str, &'static str, Value)>,
    /// Error statuses besides 401/403 (implied by `role`).
    errors: &'static [u16],
}

fn path_param(name: &str, what: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": what, "schema": {"type": "string"}})
}

/// The query parameters of a handler's query type, one per property.
fn query_params<T: JsonSchema>(g: &mut SchemaGenerator) -> Vec<Value> {
    let schema = g.root_schema_for::<T>();
    let schema = schema.as_value();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, s)| {
            let mut s = s.clone();
            let description = s
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            let mut p = json!({"name": name, "in": "query", "required": false, "schema": s});
            if !description.is_null() {
                p["description"] = description;
            }
            p
        })
        .collect()
}

fn describe(code: u16) -> &'static str {
    match code {
        400 => "Bad input: the message names the field",
        401 => "No valid bearer token",
        403 => "The caller's role may not do this",
        404 => "No such resource",
        409 => "The resource is not in a state that allows this",
        422 => "Refused: by the toolchain's plan or the admin's policy (the run is kept), an unusable component, or a registry that would not give it",
        503 => "Not ready, or the request took too long",
        _ => "Error",
    }
}

fn operations(g: &mut SchemaGenerator) -> Vec<Op> {
    let run: Value = g.subschema_for::<RunRecord>().into();
    let page: Value = g.subschema_for::<Page>().into();
    let toolchain: Value = g.subschema_for::<ToolchainRow>().into();
    let from_registry: Value = g.subschema_for::<super::toolchains::FromRegistry>().into();
    let toolchains: Value = g.subschema_for::<ToolchainList>().into();
    let status: Value = g.subschema_for::<StatusBody>().into();
    let training: Value = g.subschema_for::<ModelTrainingSpec>().into();
    let packaging: Value = g.subschema_for::<ModelPackagingSpec>().into();
    // Named here so that clients find the event's shape in the document.
    let event: Value = g.subschema_for::<RunEvent>().into();
    let models: Value = g.subschema_for::<ModelList>().into();
    let images: Value = g.subschema_for::<ImageList>().into();
    let deployment: Value = g.subschema_for::<DeploymentRecord>().into();
    let deployments: Value = g.subschema_for::<DeploymentList>().into();
    let deployment_request: Value = g.subschema_for::<DeploymentRequest>().into();
    let run_query = query_params::<RunQuery>(g);
    let log_query = query_params::<LogQuery>(g);
    let events_query = query_params::<EventsQuery>(g);
    let text = json!({"type": "string"});
    let sse = json!({"type": "string", "description": format!(
        "Server-Sent Events: `id` the event's position, `event` the run's kind, `data` a RunEvent ({}) as JSON",
        event["$ref"].as_str().unwrap_or("RunEvent"))});
    let id = || vec![path_param("id", "The run's id")];
    let mut ops = vec![
        Op {
            method: "get",
            path: "/health".into(),
            id: "health".into(),
            summary: "The process answers".into(),
            role: None,
            params: vec![],
            body: vec![],
            ok: vec![(200, "Alive", "application/json", status.clone())],
            errors: &[],
        },
        Op {
            method: "get",
            path: "/ready".into(),
            id: "ready".into(),
            summary: "The state database answers".into(),
            role: None,
            params: vec![],
            body: vec![],
            ok: vec![(200, "Ready", "application/json", status)],
            errors: &[503],
        },
        Op {
            method: "get",
            path: "/metrics".into(),
            id: "metrics".into(),
            summary: "Prometheus metrics".into(),
            role: None,
            params: vec![],
            body: vec![],
            ok: vec![(
                200,
                "OpenMetrics text",
                "application/openmetrics-text",
                text.clone(),
            )],
            errors: &[],
        },
        Op {
            method: "get",
            path: "/api/v1/openapi.json".into(),
            id: "openapi".into(),
            summary: "This document".into(),
            role: None,
            params: vec![],
            body: vec![],
            ok: vec![(
                200,
                "OpenAPI 3.1",
                "application/json",
                json!({"type": "object"}),
            )],
            errors: &[],
        },
        Op {
            method: "get",
            path: "/api/v1/docs".into(),
            id: "docs".into(),
            summary: "This document as a page".into(),
            role: None,
            params: vec![],
            body: vec![],
            ok: vec![(200, "HTML", "text/html", text.clone())],
            errors: &[],
        },
        Op {
            method: "get",
            path: "/api/v1/toolchains".into(),
            id: "listToolchains".into(),
            summary: "Registered toolchains".into(),
            role: Some(Role::Viewer),
            params: vec![],
            body: vec![],
            ok: vec![(200, "The toolchains", "application/json", toolchains)],
            errors: &[],
        },
        Op {
            method: "post",
            path: "/api/v1/toolchains".into(),
            id: "registerToolchain".into(),
            summary: "Register a toolchain: upload its component (`curl -F component=@x.wasm`), or name it in a registry (JSON `{\"image\": \"REGISTRY/REPO@sha256:…\"}`, pulled and pinned by digest); checked, compiled and described before it is kept".into(),
            role: Some(Role::Admin),
            params: vec![],
            body: vec![("multipart/form-data", json!({
                "type": "object",
                "required": ["component"],
                "properties": {
                    "component": {"type": "string", "contentMediaType": "application/wasm",
                        "description": "The component (`.wasm`, built for wasm32-wasip2)"},
                    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$",
                        "description": "Name to register under (default: the name the toolchain gives itself)"},
                    "config": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"},
                        "description": "`KEY=VALUE` the toolchain reads with `host.config`; one part each"},
                    "replace": {"type": "boolean", "description": "Replace a toolchain of that name"},
                },
            })), ("application/json", from_registry)],
            ok: vec![(201, "Registered: the toolchain", "application/json", toolchain.clone())],
            errors: &[400, 409, 422],
        },
        Op {
            method: "get",
            path: "/api/v1/toolchains/{name}".into(),
            id: "getToolchain".into(),
            summary: "One toolchain".into(),
            role: Some(Role::Viewer),
            params: vec![path_param("name", "The toolchain's name")],
            body: vec![],
            ok: vec![(200, "The toolchain", "application/json", toolchain.clone())],
            errors: &[404],
        },
        Op {
            method: "delete",
            path: "/api/v1/toolchains/{name}".into(),
            id: "deleteToolchain".into(),
            summary: "Unregister a toolchain".into(),
            role: Some(Role::Admin),
            params: vec![path_param("name", "The toolchain's name")],
            body: vec![],
            ok: vec![(200, "The toolchain removed", "application/json", toolchain)],
            errors: &[404],
        },
        Op {
            method: "get",
            path: "/api/v1/deployments".into(),
            id: "listDeployments".into(),
            summary: "Deployments, by name".into(),
            role: Some(Role::Viewer),
            params: vec![],
            body: vec![],
            ok: vec![(200, "The deployments", "application/json", deployments)],
            errors: &[],
        },
        Op {
            method: "post",
            path: "/api/v1/deployments".into(),
            id: "createDeployment".into(),
            summary: "Serve a packaged image: 201 once it answers, 202 while its model loads".into(),
            role: Some(Role::DataScientist),
            params: vec![],
            body: vec![("application/json", deployment_request)],
            ok: vec![
                (201, "Serving: the deployment, with its URL", "application/json", deployment.clone()),
                (202, "Accepted: the model still loads", "application/json", deployment.clone()),
            ],
            errors: &[400, 409, 422],
        },
        Op {
            method: "get",
            path: "/api/v1/deployments/{name}".into(),
            id: "getDeployment".into(),
            summary: "One deployment: its state and URL".into(),
            role: Some(Role::Viewer),
            params: vec![path_param("name", "The deployment's name")],
            body: vec![],
            ok: vec![(200, "The deployment", "application/json", deployment.clone())],
            errors: &[404],
        },
        Op {
            method: "delete",
            path: "/api/v1/deployments/{name}".into(),
            id: "deleteDeployment".into(),
            summary: "Stop and remove a deployment, wherever it is served".into(),
            role: Some(Role::DataScientist),
            params: vec![path_param("name", "The deployment's name")],
            body: vec![],
            ok: vec![(202, "Being stopped: the deployment, `deleting`", "application/json", deployment)],
            errors: &[404],
        },
        Op {
            method: "get",
            path: "/api/v1/events".into(),
            id: "events".into(),
            summary: "State changes of every run, resumable (`since`, `Last-Event-ID`)".into(),
            role: Some(Role::Viewer),
            params: {
                let mut p = events_query;
                p.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}, "description": "Resume after this event"}));
                p
            },
            body: vec![],
            ok: vec![(
                200,
                "A stream that does not end",
                "text/event-stream",
                sse.clone(),
            )],
            errors: &[400],
        },
    ];
    ops.push(Op {
        method: "get",
        path: "/api/v1/models".into(),
        id: "listModels".into(),
        summary: "Stored models".into(),
        role: Some(Role::Viewer),
        params: vec![],
        body: vec![],
        ok: vec![(200, "The models", "application/json", models)],
        errors: &[],
    });
    ops.push(Op {
        method: "get",
        path: "/api/v1/models/{reference}".into(),
        id: "getModel".into(),
        summary: "One stored model: its manifest and config".into(),
        role: Some(Role::Viewer),
        params: vec![path_param("reference", "name:version or sha256:…")],
        body: vec![],
        ok: vec![(
            200,
            "The model",
            "application/json",
            json!({"type": "object"}),
        )],
        errors: &[404],
    });
    ops.push(Op {
        method: "get",
        path: "/api/v1/images".into(),
        id: "listImages".into(),
        summary: "Packaged images, local and pushed".into(),
        role: Some(Role::Viewer),
        params: vec![],
        body: vec![],
        ok: vec![(200, "The images", "application/json", images)],
        errors: &[],
    });
    for (kind, plural, spec) in [
        ("Training", "trainings", training),
        ("Packaging", "packagings", packaging),
    ] {
        let base = format!("/api/v1/{plural}");
        let lower = kind.to_lowercase();
        ops.push(Op { method: "get", path: base.clone(), id: format!("list{kind}s"),
            summary: format!("{kind}s, newest first, filtered and paged by cursor; `watch=true` streams their state changes instead"),
            role: Some(Role::Viewer), params: run_query.clone(), body: vec![],
            ok: vec![(200, "A page, or with watch=true an event stream", "application/json", page.clone()),
                     (200, "With watch=true", "text/event-stream", sse.clone())], errors: &[400] });
        ops.push(Op {
            method: "post",
            path: base.clone(),
            id: format!("create{kind}"),
            summary: format!("Start a {lower}: answered once planned and past the policy"),
            role: Some(Role::DataScientist),
            params: vec![],
            body: vec![("application/json", spec)],
            ok: vec![(
                202,
                "Accepted: the run, planned",
                "application/json",
                run.clone(),
            )],
            errors: &[400, 409, 422, 503],
        });
        ops.push(Op {
            method: "get",
            path: format!("{base}/{{id}}"),
            id: format!("get{kind}"),
            summary: format!("One {lower}"),
            role: Some(Role::Viewer),
            params: id(),
            body: vec![],
            ok: vec![(200, "The run", "application/json", run.clone())],
            errors: &[404],
        });
        ops.push(Op {
            method: "post",
            path: format!("{base}/{{id}}/cancel"),
            id: format!("cancel{kind}"),
            summary: "Cancel it, whichever replica runs it".into(),
            role: Some(Role::DataScientist),
            params: id(),
            body: vec![],
            ok: vec![(202, "Cancel asked", "application/json", run.clone())],
            errors: &[404, 409],
        });
        let mut logs = id();
        logs.extend(log_query.clone());
        ops.push(Op {
            method: "get",
            path: format!("{base}/{{id}}/logs"),
            id: format!("get{kind}Logs"),
            summary: "Its log; `follow=true` streams it until the run ends".into(),
            role: Some(Role::Viewer),
            params: logs,
            body: vec![],
            ok: vec![(200, "The log", "text/plain", text.clone())],
            errors: &[400, 404],
        });
    }
    ops
}

/// The whole document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error: Value = g.subschema_for::<ErrorBody>().into();
    let ops = operations(&mut g);
    let mut paths = Map::new();
    for op in ops {
        let mut responses = Map::new();
        for (code, what, ctype, schema) in &op.ok {
            let r = responses
                .entry(code.to_string())
                .or_insert_with(|| json!({"description": what, "content": {}}));
            r["content"][*ctype] = json!({"schema": schema});
        }
        let mut errors: Vec<u16> = op.errors.to_vec();
        if op.role.is_some() {
            errors.extend([401, 403]);
        }
        if !op.body.is_empty() {
            errors.push(413);
        }
        errors.sort_unstable();
        errors.dedup();
        for code in errors {
            let what = if code == 413 {
                "The body is too large: 1 MiB, a toolchain's upload 65 MiB"
            } else {
                describe(code)
            };
            responses.insert(
                code.to_string(),
                json!({"description": what, "content": {"application/json": {"schema": error}}}),
            );
        }
        let mut o = json!({
            "operationId": op.id,
            "summary": op.summary,
            "responses": responses,
        });
        if !op.params.is_empty() {
            o["parameters"] = Value::Array(op.params);
        }
        match op.role {
            None => o["security"] = json!([]),
            Some(r) => o["x-legion-role"] = json!(r.as_str()),
        }
        if !op.body.is_empty() {
            let mut content = Map::new();
            for (ctype, schema) in op.body {
                content.insert(ctype.to_string(), json!({"schema": schema}));
            }
            o["requestBody"] = json!({"required": true, "content": content});
        }
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Legion API (EDI)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Trainings, packagings and toolchains. Roles: viewer (reads), data-scientist (runs), admin (toolchains, policy).",
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "a token from the tokens file, or an RS256/ES256 JWT of the configured issuer"}},
        },
        "security": [{"bearer": []}],
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The document as one HTML page: each operation with its role,
/// parameters, body and answers; each schema folded under it.
pub fn page(doc: &Value) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Legion API</title><style>\
         body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}\
         code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow:auto}\
         .op{border-top:1px solid #ccc;padding:.5em 0}.m{font-weight:bold;text-transform:uppercase;margin-right:.5em}\
         td,th{text-align:left;padding:.2em .6em;vertical-align:top}</style></head><body>",
    );
    h += &format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/api/v1/openapi.json\">openapi.json</a> (OpenAPI 3.1).</p>",
        escape(doc["info"]["title"].as_str().unwrap_or("")),
        escape(doc["info"]["description"].as_str().unwrap_or(""))
    );
    if let Some(paths) = doc["paths"].as_object() {
        for (path, methods) in paths {
            for (method, op) in methods.as_object().into_iter().flatten() {
                h += &format!(
                    "<div class=\"op\" id=\"{}\"><span class=\"m\">{}</span><code>{}</code> — {}",
                    escape(op["operationId"].as_str().unwrap_or("")),
                    escape(method),
                    escape(path),
                    escape(op["summary"].as_str().unwrap_or(""))
                );
                h += &format!(
                    "<p>Role: {}</p>",
                    escape(op["x-legion-role"].as_str().unwrap_or("none (no token)"))
                );
                if let Some(params) = op["parameters"].as_array() {
                    h += "<table><tr><th>parameter</th><th>in</th><th>type</th><th>what</th></tr>";
                    for p in params {
                        h += &format!(
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            escape(p["name"].as_str().unwrap_or("")),
                            escape(p["in"].as_str().unwrap_or("")),
                            escape(
                                &p["schema"]
                                    .get("type")
                                    .map(|t| t.to_string())
                                    .unwrap_or_default()
                            ),
                            escape(p["description"].as_str().unwrap_or(""))
                        );
                    }
                    h += "</table>";
                }
                if let Some(body) =
                    op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
                {
                    h += &format!(
                        "<p>Body: <a href=\"#{0}\">{0}</a></p>",
                        escape(schema_name(body))
                    );
                }
                h += "<ul>";
                for (code, r) in op["responses"].as_object().into_iter().flatten() {
                    h += &format!(
                        "<li><b>{}</b> {}</li>",
                        escape(code),
                        escape(r["description"].as_str().unwrap_or(""))
                    );
                }
                h += "</ul></div>";
            }
        }
    }
    h += "<h2>Schemas</h2>";
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        h += &format!(
            "<details id=\"{0}\"><summary><code>{0}</code></summary><pre>{1}</pre></details>",
            escape(name),
            escape(&serde_json::to_string_pretty(schema).unwrap_or_default())
        );
    }
    h + "</body></html>"
}

fn schema_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}
