//! Open Inference Protocol v2 (KServe, Triton, MLServer): health, server
//! and model metadata, readiness, and `infer` with JSON tensors or Triton's
//! binary tensor extension, which standard clients (`tritonclient`) use.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::borrow::Cow;

use serde_json::{json, Value};

use super::{column_names, output_names, ApiError, BadRequest, Dialect};
use crate::frame::{encode_values, Reader};
use crate::http::{predict, read_body, AppState, RequestId, Shared};
use crate::signature::{DataType, Signature, Storage};
use crate::table::{Column, Prediction, Table, Values};

/// Header giving the JSON part's length in Triton's binary extension.
pub const INFERENCE_HEADER: &str = "inference-header-content-length";

const D: Dialect = Dialect::Oip;

/// The OIP v2 routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
}

/// Live as soon as the listener is up, whether or not the model loaded.
async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready once a worker has the model loaded.
pub async fn ready(State(s): State<Shared>) -> Response {
    let (status, ready) = if s.is_ready() {
        (StatusCode::OK, true)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, false)
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

async fn server_metadata() -> Json<Value> {
    Json(
        json!({ "name": "legion", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"] }),
    )
}

fn check_model(s: &AppState, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if s.model.name != *name || version.is_some_and(|v| s.model.version != *v) {
        let asked = match version {
            Some(v) => format!("{name} version {v}"),
            None => name.to_string(),
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            D,
            format!(
                "unknown model {asked}; this server serves {} version {}",
                s.model.name, s.model.version
            ),
        ));
    }
    Ok(())
}

/// The model metadata: inputs and outputs from the signature, outputs
/// named by the same rule as the infer response ([`output_names`]).
pub fn metadata(
    name: &str,
    version: &str,
    flavor: &str,
    digest: &str,
    sig: Option<&Signature>,
) -> Value {
    let tensor = |name: String, t: &crate::signature::TensorSpec| {
        json!({
            "name": name,
            "datatype": t.data_type().unwrap_or(DataType::Bytes).oip_name(),
            "shape": if t.shape.is_empty() { vec![-1] } else { t.shape.clone() },
        })
    };
    let inputs: Vec<Value> = sig
        .map(|s| {
            let names = column_names(Some(s), s.inputs.len());
            s.inputs
                .iter()
                .zip(names)
                .map(|(t, n)| tensor(t.name.clone().unwrap_or(n), t))
                .collect()
        })
        .unwrap_or_default();
    let outputs: Vec<Value> = sig
        .map(|s| {
            output_names(Some(s), s.outputs.len())
                .into_iter()
                .zip(&s.outputs)
                .map(|(n, t)| tensor(n, t))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": name,
        "versions": [version],
        "platform": format!("legion/{flavor}"),
        "inputs": inputs,
        "outputs": outputs,
        "parameters": { "digest": digest },
    })
}

fn model_metadata_of(s: &AppState) -> Json<Value> {
    let m = &s.model;
    Json(metadata(
        m.name.as_str(),
        m.version.as_str(),
        &m.flavor,
        &m.digest,
        m.signature.as_ref(),
    ))
}

async fn model_metadata(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_model(&s, &name, None)?;
    Ok(model_metadata_of(&s))
}

async fn model_metadata_v(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_model(&s, &name, Some(&version))?;
    Ok(model_metadata_of(&s))
}

async fn model_ready(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_model(&s, &name, None)?;
    Ok(ready(State(s)).await)
}

async fn model_ready_v(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_model(&s, &name, Some(&version))?;
    Ok(ready(State(s)).await)
}

async fn infer(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    infer_model(s, name, None, id, headers, body).await
}

async fn infer_v(
    State(s): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    infer_model(s, name, Some(version), id, headers, body).await
}

async fn infer_model(
    s: Shared,
    name: String,
    version: Option<String>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_model(&s, &name, version.as_deref())?;
    let bytes = read_body(body, &s, D).await?;
    let json_len =
        json_length(headers.get(INFERENCE_HEADER), bytes.len()).map_err(|m| ApiError::bad(D, m))?;
    let sig = s.model.signature.as_ref();
    let req =
        parse_body(&bytes[..json_len], &bytes[json_len..], sig).map_err(|m| ApiError::bad(D, m))?;
    let input = || serde_json::from_slice(&bytes[..json_len]).unwrap_or(Value::Null);
    let p = predict(&s, D, &request_id, req.table, &input).await?;
    let id = req.id.unwrap_or(request_id);
    let (answer, raw) = response(
        s.model.name.as_str(),
        s.model.version.as_str(),
        &id,
        p,
        sig,
        &req.wanted,
    )
    .map_err(|m| ApiError::bad(D, m))?;
    if raw.is_empty() {
        return Ok(Json(answer).into_response());
    }
    let mut body = serde_json::to_vec(&answer)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, D, e.to_string()))?;
    let header_len = body.len();
    body.extend_from_slice(&raw);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&header_len.to_string()) {
        h.insert(HeaderName::from_static(INFERENCE_HEADER), v);
    }
    Ok(resp)
}

/// The length of the JSON part: `Inference-Header-Content-Length` if
/// given (Triton's binary extension), else the whole body.
pub fn json_length(header: Option<&HeaderValue>, body_len: usize) -> Result<usize, BadRequest> {
    let Some(v) = header else {
        return Ok(body_len);
    };
    let n = v
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("{INFERENCE_HEADER} must be a byte count"))?;
    if n > body_len {
        return Err(format!(
            "{INFERENCE_HEADER} is {n} but the body has {body_len} bytes"
        ));
    }
    Ok(n)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Converts JSON cells to values of `datatype`, checking every one.
fn tensor_values(name: &str, datatype: DataType, cells: &[&Value]) -> Result<Values, BadRequest> {
    let bad = |what: &str| format!("input '{name}': datatype {datatype} needs {what}");
    match datatype.storage() {
        Storage::Bool => cells
            .iter()
            .map(|c| c.as_bool().ok_or_else(|| bad("true/false values")))
            .collect::<Result<_, _>>()
            .map(Values::Bool),
        Storage::I64 => {
            let (lo, hi) = datatype.int_range().unwrap_or((i64::MIN, i64::MAX));
            cells
                .iter()
                .map(|c| {
                    let x = c.as_i64().ok_or_else(|| bad("integer values"))?;
                    if x < lo || x > hi {
                        return Err(format!(
                            "input '{name}': {x} is out of range for {datatype}"
                        ));
                    }
                    Ok(x)
                })
                .collect::<Result<_, _>>()
                .map(Values::I64)
        }
        Storage::F64 => cells
            .iter()
            .map(|c| c.as_f64().ok_or_else(|| bad("numeric values")))
            .collect::<Result<_, _>>()
            .map(Values::F64),
        Storage::Str => cells
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("string values"))
            })
            .collect::<Result<_, _>>()
            .map(Values::Str),
    }
}

/// One input tensor as sent.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    values: Values,
}

/// Parses one input tensor from the JSON tree, naming what is missing.
fn parse_tensor(i: usize, t: &Value) -> Result<Tensor, BadRequest> {
    let name = t
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("inputs[{i}]: \"name\" is required"))?;
    let datatype = t
        .get("datatype")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("input '{name}': \"datatype\" is required"))?;
    let shape: Vec<u64> = t
        .get("shape")
        .and_then(|v| v.as_array())
        .ok_or_else(|| format!("input '{name}': \"shape\" is required"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| format!("input '{name}': shape must be non-negative integers"))
        })
        .collect::<Result<_, _>>()?;
    let data = t
        .get("data")
        .ok_or_else(|| format!("input '{name}': \"data\" is required"))?;
    tensor(name, datatype, &shape, data)
}

/// Builds one input tensor, with checked arithmetic on every dimension.
fn tensor(name: &str, datatype: &str, shape: &[u64], data: &Value) -> Result<Tensor, BadRequest> {
    let datatype = DataType::from_oip(datatype).ok_or_else(|| {
        format!(
            "input '{name}': unknown datatype '{datatype}' ({})",
            DataType::oip_names()
        )
    })?;
    let too_large = || format!("input '{name}': shape {shape:?} is too large");
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_large()))
        .collect::<Result<_, _>>()?;
    let expected = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(too_large)?;
    let mut cells = Vec::new();
    flatten(data, &mut cells);
    if expected != cells.len() {
        return Err(format!(
            "input '{name}': shape {shape:?} needs {expected} values, got {}",
            cells.len()
        ));
    }
    Ok(Tensor {
        name: name.to_string(),
        values: tensor_values(name, datatype, &cells)?,
        shape,
    })
}

/// An infer request as sent, read straight from the bytes: names borrowed,
/// only each tensor's `data` as a JSON tree. This is the fast path; a body
/// it does not fit (a wrong type anywhere, binary tensors) is read again as
/// a JSON tree, which words the error or takes the binary data.
#[derive(serde::Deserialize)]
struct WireRequest<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    inputs: Vec<WireTensor<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<WireOutput<'a>>>,
    #[serde(default)]
    parameters: Option<WireRequestParameters>,
}

#[derive(serde::Deserialize)]
struct WireTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    shape: Vec<u64>,
    data: Value,
    #[serde(default)]
    parameters: Option<WireTensorParameters>,
}

#[derive(serde::Deserialize)]
struct WireTensorParameters {
    #[serde(default)]
    binary_data_size: Option<Value>,
}

#[derive(serde::Deserialize)]
struct WireOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<WireOutputParameters>,
}

#[derive(serde::Deserialize)]
struct WireOutputParameters {
    #[serde(default)]
    binary_data: bool,
}

#[derive(serde::Deserialize)]
struct WireRequestParameters {
    #[serde(default)]
    binary_data_output: bool,
}

/// An infer request, parsed.
#[derive(Debug)]
pub struct InferRequest {
    /// The inputs as a table.
    pub table: Table,
    /// The request's `id`, if it gave one.
    pub id: Option<String>,
    /// The outputs it asks for.
    pub wanted: Wanted,
}

/// Parses an infer body: `json` is its JSON part, `raw` what follows it
/// (Triton's binary tensors, with `Inference-Header-Content-Length`).
pub fn parse_body(
    json: &[u8],
    raw: &[u8],
    signature: Option<&Signature>,
) -> Result<InferRequest, BadRequest> {
    if raw.is_empty() {
        if let Ok(wire) = serde_json::from_slice::<WireRequest>(json) {
            let plain = wire.inputs.iter().all(|t| {
                t.parameters
                    .as_ref()
                    .is_none_or(|p| p.binary_data_size.is_none())
            });
            if plain {
                return from_wire(wire, signature);
            }
        }
    }
    let mut value: Value =
        serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    inline_binary(&mut value, raw)?;
    let (table, id) = parse_request(&value, signature)?;
    let wanted = requested_outputs(&value)?;
    Ok(InferRequest { table, id, wanted })
}

fn from_wire(wire: WireRequest, signature: Option<&Signature>) -> Result<InferRequest, BadRequest> {
    if wire.inputs.is_empty() {
        return Err("\"inputs\" is empty".into());
    }
    let tensors = wire
        .inputs
        .iter()
        .map(|t| tensor(&t.name, &t.datatype, &t.shape, &t.data))
        .collect::<Result<Vec<_>, _>>()?;
    let wanted = Wanted {
        names: wire.outputs.map(|outs| {
            outs.into_iter()
                .map(|o| {
                    let binary = o.parameters.is_some_and(|p| p.binary_data);
                    (o.name.into_owned(), binary)
                })
                .collect()
        }),
        all_binary: wire.parameters.is_some_and(|p| p.binary_data_output),
    };
    Ok(InferRequest {
        table: table_of(tensors, signature)?,
        id: wire.id.map(Cow::into_owned),
        wanted,
    })
}

/// Parses an OIP v2 infer request into a table and the request's `id`:
/// one tensor per column (`[rows]` or `[rows, 1]`, MLServer's pandas
/// codec; a scalar is one row), or one `[rows, columns]` tensor whose
/// columns take the signature's input names.
pub fn parse_request(
    body: &Value,
    signature: Option<&Signature>,
) -> Result<(Table, Option<String>), BadRequest> {
    let obj = body
        .as_object()
        .ok_or("the body must be a JSON object with \"inputs\"")?;
    let id = obj.get("id").and_then(|v| v.as_str()).map(str::to_string);
    let inputs = obj
        .get("inputs")
        .and_then(|v| v.as_array())
        .ok_or("\"inputs\" must be a list of tensors")?;
    if inputs.is_empty() {
        return Err("\"inputs\" is empty".into());
    }
    let tensors: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| parse_tensor(i, t))
        .collect::<Result<_, _>>()?;
    Ok((table_of(tensors, signature)?, id))
}

/// The table of parsed tensors: one `[rows, columns]` tensor split into
/// columns named by the signature, or one column per tensor.
fn table_of(mut tensors: Vec<Tensor>, signature: Option<&Signature>) -> Result<Table, BadRequest> {
    if let [only] = tensors.as_slice() {
        if let [rows, cols] = only.shape[..] {
            if cols > 1 {
                let t = tensors.remove(0);
                let columns = t
                    .values
                    .into_columns(rows, cols)
                    .ok_or_else(|| format!("input '{}': shape does not fit its data", t.name))?;
                let names = column_names(signature, cols);
                let columns = names
                    .into_iter()
                    .zip(columns)
                    .map(|(name, values)| Column { name, values })
                    .collect();
                return Ok(Table { columns });
            }
        }
    }
    let mut columns = Vec::with_capacity(tensors.len());
    for t in tensors {
        let is_column = t.shape.len() <= 1 || (t.shape.len() == 2 && t.shape[1] == 1);
        if !is_column {
            return Err(format!("input '{}': shape {:?} is not a column ([rows] or [rows, 1]); send one tensor per column, or one [rows, columns] tensor", t.name, t.shape));
        }
        columns.push(Column {
            name: t.name,
            values: t.values,
        });
    }
    let rows = columns.first().map(|c| c.values.len()).unwrap_or(0);
    if let Some(c) = columns.iter().find(|c| c.values.len() != rows) {
        return Err(format!(
            "input '{}' has {} rows, input '{}' has {rows}",
            c.name,
            c.values.len(),
            columns[0].name
        ));
    }
    Ok(Table { columns })
}

/// Triton's binary tensor extension: with an
/// `Inference-Header-Content-Length` header the body is that many bytes of
/// JSON followed by raw tensors; each input with
/// `parameters.binary_data_size` takes its bytes, in order. The tensors
/// are turned back into `data` lists so one parser serves both.
pub fn inline_binary(body: &mut Value, mut raw: &[u8]) -> Result<(), BadRequest> {
    let Some(inputs) = body.get_mut("inputs").and_then(|v| v.as_array_mut()) else {
        if !raw.is_empty() {
            return Err("binary data was sent but there are no \"inputs\" to claim it".into());
        }
        return Ok(());
    };
    for t in inputs {
        let Some(size) = t
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .and_then(|v| v.as_u64())
        else {
            continue;
        };
        let name = t
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > raw.len() {
            return Err(format!(
                "input '{name}': binary_data_size {size} is more than the {} bytes left in the body",
                raw.len()
            ));
        }
        let (bytes, rest) = raw.split_at(size);
        raw = rest;
        let datatype = t
            .get("datatype")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let datatype = DataType::from_oip(datatype)
            .ok_or_else(|| format!("input '{name}': unknown datatype '{datatype}'"))?;
        let values = decode_binary(&name, datatype, bytes)?;
        if let Some(obj) = t.as_object_mut() {
            obj.insert("data".into(), Value::Array(values));
        }
    }
    if !raw.is_empty() {
        return Err(format!(
            "{} bytes of binary data were not claimed by any input",
            raw.len()
        ));
    }
    Ok(())
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Decodes one tensor's raw little-endian bytes.
fn decode_binary(name: &str, datatype: DataType, bytes: &[u8]) -> Result<Vec<Value>, BadRequest> {
    let Some(width) = datatype.byte_width() else {
        let mut r = Reader::new(bytes);
        let mut values = Vec::new();
        while !r.is_empty() {
            let s = r
                .u32()
                .and_then(|n| r.take(n as usize))
                .map_err(|_| format!("input '{name}': truncated BYTES element"))?;
            values.push(Value::String(String::from_utf8_lossy(s).into_owned()));
        }
        return Ok(values);
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(format!(
            "input '{name}': {} bytes is not a whole number of {datatype} values",
            bytes.len()
        ));
    }
    if datatype == DataType::Fp16 {
        return Err(format!(
            "input '{name}': binary FP16 is not supported; send FP32"
        ));
    }
    Ok(bytes
        .chunks_exact(width)
        .map(|c| {
            let mut b8 = [0u8; 8];
            b8[..width].copy_from_slice(c);
            let b4 = [b8[0], b8[1], b8[2], b8[3]];
            match datatype {
                DataType::Bool => Value::Bool(c[0] != 0),
                DataType::Int8 => Value::from(c[0] as i8),
                DataType::Uint8 => Value::from(c[0]),
                DataType::Int16 => Value::from(i16::from_le_bytes([c[0], c[1]])),
                DataType::Uint16 => Value::from(u16::from_le_bytes([c[0], c[1]])),
                DataType::Int32 => Value::from(i32::from_le_bytes(b4)),
                DataType::Uint32 => Value::from(u32::from_le_bytes(b4)),
                DataType::Fp32 => float(f32::from_le_bytes(b4) as f64),
                DataType::Int64 => Value::from(i64::from_le_bytes(b8)),
                DataType::Uint64 => Value::from(u64::from_le_bytes(b8)),
                _ => float(f64::from_le_bytes(b8)),
            }
        })
        .collect())
}

/// The outputs a request asks for: `None` for all of them; each with
/// whether it should come back as binary data.
#[derive(Debug, Default, PartialEq)]
pub struct Wanted {
    /// Named outputs, if the request listed any.
    pub names: Option<Vec<(String, bool)>>,
    /// `parameters.binary_data_output`: binary for every output.
    pub all_binary: bool,
}

/// Reads `outputs` and the binary flags of a request.
pub fn requested_outputs(body: &Value) -> Result<Wanted, BadRequest> {
    let flag = |v: Option<&Value>, key: &str| {
        v.and_then(|p| p.get(key))
            .and_then(|b| b.as_bool())
            .unwrap_or(false)
    };
    let all_binary = flag(body.get("parameters"), "binary_data_output");
    let names = match body.get("outputs") {
        None | Some(Value::Null) => None,
        Some(Value::Array(outs)) => Some(
            outs.iter()
                .enumerate()
                .map(|(i, o)| {
                    let name = o
                        .get("name")
                        .and_then(|n| n.as_str())
                        .ok_or_else(|| format!("outputs[{i}]: \"name\" is required"))?;
                    Ok((name.to_string(), flag(o.get("parameters"), "binary_data")))
                })
                .collect::<Result<Vec<_>, BadRequest>>()?,
        ),
        Some(_) => return Err("\"outputs\" must be a list of {\"name\": …}".into()),
    };
    Ok(Wanted { names, all_binary })
}

/// An OIP v2 infer response.
#[derive(Debug, serde::Serialize)]
pub struct InferResponse<'a> {
    /// The model.
    pub model_name: &'a str,
    /// Its version.
    pub model_version: &'a str,
    /// The request's id.
    pub id: &'a str,
    /// The outputs.
    pub outputs: Vec<OutputTensor>,
}

/// One output tensor: its values inline, or its size in the binary part.
#[derive(Debug, serde::Serialize)]
pub struct OutputTensor {
    /// Name, as the metadata lists it.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// OIP datatype.
    pub datatype: &'static str,
    /// Values, row-major, unless sent as binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Values>,
    /// `{"binary_data_size": n}` when sent as binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// The OIP v2 infer response and the raw bytes of its binary outputs
/// (empty if none). A `[rows, k]` prediction of a model whose signature
/// has `k` outputs answers as `k` tensors; anything else as one. Names come
/// from [`output_names`], as in the metadata; asking for an output the
/// model does not have is an error naming the ones it has.
pub fn response<'a>(
    model: &'a str,
    version: &'a str,
    id: &'a str,
    p: Prediction,
    signature: Option<&Signature>,
    wanted: &Wanted,
) -> Result<(InferResponse<'a>, Vec<u8>), BadRequest> {
    let declared = signature.map(|s| s.outputs.len()).unwrap_or(0);
    let mut tensors: Vec<(String, Prediction)> =
        if declared > 1 && p.shape.len() == 2 && p.row_width() == declared {
            // The pool checked the prediction against its shape already.
            let columns = p
                .into_columns()
                .ok_or("the model's prediction does not fit its shape")?;
            output_names(signature, declared)
                .into_iter()
                .zip(columns)
                .collect()
        } else {
            output_names(signature, 1).into_iter().zip([p]).collect()
        };
    let chosen: Vec<((String, Prediction), bool)> = match &wanted.names {
        None => tensors
            .into_iter()
            .map(|t| (t, wanted.all_binary))
            .collect(),
        Some(names) => {
            let mut chosen = Vec::with_capacity(names.len());
            for (want, binary) in names {
                let Some(at) = tensors.iter().position(|(n, _)| n == want) else {
                    let known: Vec<String> =
                        tensors.iter().map(|(n, _)| format!("'{n}'")).collect();
                    return Err(format!(
                        "unknown output '{want}'; this model's outputs are {}",
                        known.join(", ")
                    ));
                };
                chosen.push((tensors.swap_remove(at), *binary || wanted.all_binary));
            }
            chosen
        }
    };
    let mut raw = Vec::new();
    let outputs = chosen
        .into_iter()
        .map(|((name, t), binary)| {
            let datatype = DataType::of_storage(t.values.storage()).oip_name();
            let (data, parameters) = if binary {
                let start = raw.len();
                encode_values(&t.values, &mut raw);
                (None, Some(json!({ "binary_data_size": raw.len() - start })))
            } else {
                (Some(t.values), None)
            };
            OutputTensor {
                name,
                shape: t.shape,
                datatype,
                data,
                parameters,
            }
        })
        .collect();
    Ok((
        InferResponse {
            model_name: model,
            model_version: version,
            id,
            outputs,
        },
        raw,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::conform;
    use crate::protocol::tests::{expected, sig, spec};

    /// The response as JSON, as a client sees it.
    fn respond(
        model: &str,
        p: &Prediction,
        sig: Option<&Signature>,
        wanted: &Wanted,
    ) -> Result<(Value, Vec<u8>), BadRequest> {
        let (r, raw) = response(model, "1", "id", p.clone(), sig, wanted)?;
        Ok((serde_json::to_value(&r).unwrap(), raw))
    }

    fn parse(body: Value) -> Result<Table, BadRequest> {
        parse_request(&body, Some(&sig())).map(|(t, _)| t)
    }

    #[test]
    fn columns_and_2d_tensors_give_the_same_table() {
        let cols = parse(json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 3]},
            {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[2], [4]]}]}))
        .unwrap();
        assert_eq!(conform(cols, Some(&sig())).unwrap(), expected());
        let two_d = parse(json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]})).unwrap();
        assert_eq!(conform(two_d, Some(&sig())).unwrap(), expected());
        let flat = parse(json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]})).unwrap();
        assert_eq!(conform(flat, Some(&sig())).unwrap(), expected());
    }

    #[test]
    fn shapes_scalar_zero_rows_and_overflow() {
        let scalar =
            parse(json!({"inputs": [{"name": "a", "shape": [], "datatype": "FP64", "data": 5}]}))
                .unwrap();
        assert_eq!(scalar.rows(), 1);
        let zero =
            parse(json!({"inputs": [{"name": "a", "shape": [0], "datatype": "FP64", "data": []}]}))
                .unwrap();
        assert_eq!(zero.rows(), 0);
        let zero_2d = parse(
            json!({"inputs": [{"name": "a", "shape": [0, 3], "datatype": "FP64", "data": []}]}),
        )
        .unwrap();
        assert_eq!(zero_2d.rows(), 0);
        for shape in [
            json!([4611686018427387904u64, 4]),
            json!([u64::MAX, 2]),
            json!([4294967296u64, 4294967296u64, 4294967296u64]),
        ] {
            let e = parse(
                json!({"inputs": [{"name": "a", "shape": shape, "datatype": "FP64", "data": []}]}),
            )
            .unwrap_err();
            assert!(e.contains("input 'a'") && e.contains("too large"), "{e}");
        }
        let neg = parse(
            json!({"inputs": [{"name": "a", "shape": [-1], "datatype": "FP64", "data": []}]}),
        )
        .unwrap_err();
        assert!(neg.contains("non-negative"), "{neg}");
        let cube = parse(
            json!({"inputs": [{"name": "a", "shape": [1, 1, 1], "datatype": "FP64", "data": [1]}]}),
        )
        .unwrap_err();
        assert!(cube.contains("is not a column"), "{cube}");
    }

    #[test]
    fn bad_tensors_say_what_is_wrong() {
        let cases = [
            (
                json!({"inputs": [{"name": "a", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}),
                "shape [3] needs 3 values, got 2",
            ),
            (
                json!({"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]}),
                "300 is out of range for INT8",
            ),
            (
                json!({"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [-1]}]}),
                "-1 is out of range for UINT8",
            ),
            (
                json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": ["x"]}]}),
                "datatype FP64 needs numeric values",
            ),
            (
                json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP128", "data": [1]}]}),
                "unknown datatype 'FP128'",
            ),
            (
                json!({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}),
                "inputs[0]: \"name\" is required",
            ),
            (json!({"inputs": []}), "\"inputs\" is empty"),
            (json!([1]), "JSON object"),
            (
                json!({"inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]},
                {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]}]}),
                "input 'b' has 1 rows, input 'a' has 2",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn binary_tensors_decode_like_json_ones() {
        let mut raw = Vec::new();
        encode_values(&Values::F64(vec![1.0, 3.0]), &mut raw);
        raw.extend_from_slice(&2i32.to_le_bytes());
        raw.extend_from_slice(&4i32.to_le_bytes());
        let mut body = json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}},
            {"name": "b", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]});
        inline_binary(&mut body, &raw).unwrap();
        let t = parse(body).unwrap();
        assert_eq!(conform(t, Some(&sig())).unwrap(), expected());
        let mut short = json!({"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 99}}]});
        assert!(inline_binary(&mut short, &raw)
            .unwrap_err()
            .contains("more than the 24 bytes"));
        let mut extra = json!({"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]});
        assert!(inline_binary(&mut extra, &raw)
            .unwrap_err()
            .contains("8 bytes of binary data were not claimed"));
        let mut strings = json!({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]});
        assert!(inline_binary(&mut strings, &[9, 0, 0, 0, b'a', b'b'])
            .unwrap_err()
            .contains("truncated BYTES"));
        assert!(json_length(Some(&HeaderValue::from_static("10")), 5).is_err());
        assert!(json_length(Some(&HeaderValue::from_static("x")), 5).is_err());
        assert_eq!(json_length(None, 5), Ok(5));
    }

    #[test]
    fn metadata_and_response_name_outputs_alike() {
        let unnamed = Signature {
            inputs: vec![spec(Some("a"), "double")],
            outputs: vec![spec(None, "float64")],
        };
        let meta = metadata("wine", "1", "python_function", "sha256:x", Some(&unnamed));
        let p = Prediction {
            shape: vec![2],
            values: Values::F64(vec![5.0, 6.0]),
        };
        let promised = meta["outputs"][0]["name"].as_str().unwrap().to_string();
        assert_eq!(meta["outputs"][0]["datatype"], "FP64");
        let asked = Wanted {
            names: Some(vec![(promised.clone(), false)]),
            all_binary: false,
        };
        let (r, raw) = respond("wine", &p, Some(&unnamed), &asked).unwrap();
        assert!(raw.is_empty());
        assert_eq!(r["outputs"][0]["name"], promised.as_str());
        assert_eq!(r["outputs"][0]["data"], json!([5.0, 6.0]));
        let (all, _) = respond("wine", &p, Some(&unnamed), &Wanted::default()).unwrap();
        assert_eq!(all["outputs"][0]["name"], promised.as_str());
        let other = Wanted {
            names: Some(vec![("prediction".into(), false)]),
            all_binary: false,
        };
        let e = respond("wine", &p, Some(&unnamed), &other).unwrap_err();
        assert!(
            e.contains("unknown output 'prediction'") && e.contains("'predict'"),
            "{e}"
        );

        // Two declared outputs and a [rows, 2] prediction: two tensors, binary on request.
        let two = Signature {
            inputs: vec![],
            outputs: vec![spec(Some("lo"), "double"), spec(Some("hi"), "double")],
        };
        let meta = metadata("m", "1", "f", "d", Some(&two));
        assert_eq!(meta["outputs"][1]["name"], "hi");
        let p2 = Prediction {
            shape: vec![2, 2],
            values: Values::F64(vec![1.0, 2.0, 3.0, 4.0]),
        };
        let asked = Wanted {
            names: Some(vec![("hi".into(), true)]),
            all_binary: false,
        };
        let (r, raw) = respond("m", &p2, Some(&two), &asked).unwrap();
        assert_eq!(r["outputs"][0]["name"], "hi");
        assert_eq!(r["outputs"][0]["parameters"]["binary_data_size"], 16);
        let mut want = Vec::new();
        encode_values(&Values::F64(vec![2.0, 4.0]), &mut want);
        assert_eq!(raw, want);
    }

    #[test]
    fn the_fast_path_and_the_tree_agree() {
        let bodies = [
            json!({"id": "x", "inputs": [
                {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 3], "parameters": {"content_type": "np"}},
                {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[2], [4]]}],
                "outputs": [{"name": "predict", "parameters": {"binary_data": true}}],
                "parameters": {"content_type": "pd"}}),
            json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}),
        ];
        for body in bodies {
            let bytes = serde_json::to_vec(&body).unwrap();
            let fast = parse_body(&bytes, &[], Some(&sig())).unwrap();
            let (table, id) = parse_request(&body, Some(&sig())).unwrap();
            assert_eq!(fast.table, table, "{body}");
            assert_eq!(fast.id, id);
            assert_eq!(fast.wanted, requested_outputs(&body).unwrap());
        }
        // Bodies the fast path does not fit get the tree's wording.
        for (body, want) in [
            (
                json!({"inputs": [{"name": "a", "shape": [-1], "datatype": "FP64", "data": []}]}),
                "non-negative",
            ),
            (
                json!({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}),
                "\"name\" is required",
            ),
            (json!({"inputs": {}}), "\"inputs\" must be a list"),
        ] {
            let e = parse_body(&serde_json::to_vec(&body).unwrap(), &[], None).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert!(parse_body(b"{", &[], None)
            .unwrap_err()
            .starts_with("invalid JSON"));
    }

    #[test]
    fn requested_outputs_are_read() {
        let w = requested_outputs(
            &json!({"outputs": [{"name": "y", "parameters": {"binary_data": true}}]}),
        )
        .unwrap();
        assert_eq!(w.names, Some(vec![("y".to_string(), true)]));
        let w = requested_outputs(&json!({"parameters": {"binary_data_output": true}})).unwrap();
        assert!(w.all_binary && w.names.is_none());
        assert!(requested_outputs(&json!({"outputs": [{}]})).is_err());
        assert!(requested_outputs(&json!({"outputs": 3})).is_err());
    }
}
