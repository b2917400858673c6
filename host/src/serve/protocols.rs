//! The three request/response dialects, each turned into a [`Table`] and
//! back: Open Inference Protocol v2, MLflow scoring, Legion/ODAHU.

use serde_json::{json, Map, Value};

use super::table::{column_from_json, Column, DType, Prediction, Table, Values};
use crate::plan::Signature;

/// A request the client got wrong: 400 with this message.
pub type BadRequest = String;

fn dtype_of(datatype: &str) -> Option<DType> {
    Some(match datatype {
        "double" | "float" | "float64" | "float32" => DType::F64,
        "long" | "integer" | "int64" | "int32" => DType::I64,
        "boolean" | "bool" => DType::Bool,
        "string" | "str" => DType::Str,
        _ => return None,
    })
}

/// Orders and types `table`'s columns as the signature's named inputs:
/// required columns must be there, values are converted where that loses
/// nothing (integers to floats), columns the model does not take are
/// dropped. Without a column signature the table passes as it is.
pub fn conform(table: Table, signature: Option<&Signature>) -> Result<Table, BadRequest> {
    let Some(sig) = signature else {
        return Ok(table);
    };
    let named: Vec<_> = sig
        .inputs
        .iter()
        .filter_map(|i| i.name.as_ref().map(|n| (n, i)))
        .collect();
    if named.is_empty() || named.len() != sig.inputs.len() {
        return Ok(table);
    }
    let rows = table.rows();
    let mut by_name: std::collections::HashMap<String, Values> = table
        .columns
        .into_iter()
        .map(|c| (c.name, c.values))
        .collect();
    let mut out = Vec::with_capacity(named.len());
    let mut missing = Vec::new();
    for (name, spec) in named {
        match by_name.remove(name.as_str()) {
            Some(values) => {
                let values = match dtype_of(&spec.datatype) {
                    Some(want) => values.coerce(want).ok_or_else(|| {
                        format!("column '{name}' must be {} values", spec.datatype)
                    })?,
                    None => values,
                };
                out.push(Column {
                    name: name.clone(),
                    values,
                });
            }
            None if spec.optional => {}
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing column{} {}",
            if missing.len() > 1 { "s" } else { "" },
            missing
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if out.iter().any(|c| c.values.len() != rows) {
        return Err("columns have different numbers of rows".into());
    }
    Ok(Table { columns: out })
}

fn input_names(signature: Option<&Signature>) -> Vec<String> {
    signature
        .map(|s| s.inputs.iter().filter_map(|i| i.name.clone()).collect())
        .unwrap_or_default()
}

/// Names of the output columns: the signature's, or `prediction`.
pub fn output_names(signature: Option<&Signature>, width: usize) -> Vec<String> {
    let named: Vec<String> = signature
        .map(|s| s.outputs.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    if named.len() == width {
        return named;
    }
    if width == 1 {
        return vec!["prediction".into()];
    }
    (0..width).map(|i| format!("prediction_{i}")).collect()
}

// ---------------- Open Inference Protocol v2 ----------------

/// OIP datatype of a value type.
pub fn oip_datatype(v: &Values) -> &'static str {
    match v {
        Values::F64(_) => "FP64",
        Values::I64(_) => "INT64",
        Values::Bool(_) => "BOOL",
        Values::Str(_) => "BYTES",
    }
}

/// OIP datatype of a signature type.
pub fn oip_datatype_of(datatype: &str) -> &'static str {
    match datatype {
        "double" | "float64" => "FP64",
        "float" | "float32" => "FP32",
        "long" | "int64" => "INT64",
        "integer" | "int32" => "INT32",
        "boolean" | "bool" => "BOOL",
        _ => "BYTES",
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn oip_values(name: &str, datatype: &str, cells: &[&Value]) -> Result<Values, BadRequest> {
    let bad = |what: &str| format!("input '{name}': datatype {datatype} needs {what}");
    match datatype {
        "BOOL" => cells.iter().map(|c| c.as_bool().ok_or_else(|| bad("true/false values"))).collect::<Result<_, _>>().map(Values::Bool),
        "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
            let ints: Vec<i64> = cells.iter().map(|c| c.as_i64().ok_or_else(|| bad("integer values"))).collect::<Result<_, _>>()?;
            let (lo, hi): (i64, i64) = match datatype {
                "INT8" => (i8::MIN.into(), i8::MAX.into()),
                "INT16" => (i16::MIN.into(), i16::MAX.into()),
                "INT32" => (i32::MIN.into(), i32::MAX.into()),
                "UINT8" => (0, u8::MAX.into()),
                "UINT16" => (0, u16::MAX.into()),
                "UINT32" => (0, u32::MAX.into()),
                "UINT64" => (0, i64::MAX),
                _ => (i64::MIN, i64::MAX),
            };
            if let Some(x) = ints.iter().find(|&&x| x < lo || x > hi) {
                return Err(format!("input '{name}': {x} is out of range for {datatype}"));
            }
            Ok(Values::I64(ints))
        }
        "FP16" | "FP32" | "FP64" => cells.iter().map(|c| c.as_f64().ok_or_else(|| bad("numeric values"))).collect::<Result<_, _>>().map(Values::F64),
        "BYTES" => cells.iter().map(|c| c.as_str().map(str::to_string).ok_or_else(|| bad("string values"))).collect::<Result<_, _>>().map(Values::Str),
        other => Err(format!("input '{name}': unknown datatype '{other}' (BOOL, INT8…INT64, UINT8…UINT64, FP16, FP32, FP64, BYTES)")),
    }
}

/// Parses an OIP v2 infer request into a table: one 1-D tensor per column
/// (MLServer's pandas codec), or one 2-D `[rows, columns]` tensor whose
/// columns take the signature's input names.
pub fn oip_request(
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
    let mut tensors = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let name = t
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("inputs[{i}]: \"name\" is required"))?;
        let datatype = t
            .get("datatype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("input '{name}': \"datatype\" is required"))?;
        let shape: Vec<i64> = t
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(|| format!("input '{name}': \"shape\" is required"))?
            .iter()
            .map(|d| {
                d.as_i64()
                    .filter(|&d| d >= 0)
                    .ok_or_else(|| format!("input '{name}': shape must be non-negative integers"))
            })
            .collect::<Result<_, _>>()?;
        let data = t
            .get("data")
            .ok_or_else(|| format!("input '{name}': \"data\" is required"))?;
        let mut cells = Vec::new();
        flatten(data, &mut cells);
        let expected: i64 = shape.iter().product();
        if expected != cells.len() as i64 {
            return Err(format!(
                "input '{name}': shape {shape:?} needs {expected} values, got {}",
                cells.len()
            ));
        }
        tensors.push((name.to_string(), shape, oip_values(name, datatype, &cells)?));
    }
    let table = if tensors.len() == 1 && tensors[0].1.len() == 2 && tensors[0].1[1] > 1 {
        let (_, shape, values) = tensors.remove(0);
        let (rows, cols) = (shape[0] as usize, shape[1] as usize);
        let names = input_names(signature);
        let names: Vec<String> = if names.len() == cols {
            names
        } else {
            (0..cols).map(|i| i.to_string()).collect()
        };
        let flat = values.to_json();
        let columns = (0..cols)
            .map(|c| {
                let cells: Vec<&Value> = (0..rows).map(|r| &flat[r * cols + c]).collect();
                let values = match &values {
                    Values::F64(_) => Values::F64(
                        cells
                            .iter()
                            .map(|v| v.as_f64().unwrap_or(f64::NAN))
                            .collect(),
                    ),
                    Values::I64(_) => Values::I64(
                        cells
                            .iter()
                            .map(|v| v.as_i64().unwrap_or_default())
                            .collect(),
                    ),
                    Values::Bool(_) => Values::Bool(
                        cells
                            .iter()
                            .map(|v| v.as_bool().unwrap_or_default())
                            .collect(),
                    ),
                    Values::Str(_) => Values::Str(
                        cells
                            .iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect(),
                    ),
                };
                Column {
                    name: names[c].clone(),
                    values,
                }
            })
            .collect();
        Table { columns }
    } else {
        let mut columns = Vec::new();
        for (name, shape, values) in tensors {
            let is_column = shape.len() == 1 || (shape.len() == 2 && shape[1] == 1);
            if !is_column {
                return Err(format!("input '{name}': shape {shape:?} is not a column ([rows] or [rows, 1]); send one tensor per column, or one [rows, columns] tensor"));
            }
            columns.push(Column { name, values });
        }
        let rows = columns[0].values.len();
        if let Some(c) = columns.iter().find(|c| c.values.len() != rows) {
            return Err(format!(
                "input '{}' has {} rows, input '{}' has {rows}",
                c.name,
                c.values.len(),
                columns[0].name
            ));
        }
        Table { columns }
    };
    Ok((table, id))
}

/// Triton's binary tensor extension, which standard v2 clients
/// (tritonclient) use by default: with an `Inference-Header-Content-Length`
/// header, the body is that many bytes of JSON followed by raw tensors;
/// each input with `parameters.binary_data_size` takes its bytes, in order.
/// The tensors are turned back into `data` lists so one parser serves both.
pub fn oip_inline_binary(body: &mut Value, mut raw: &[u8]) -> Result<(), BadRequest> {
    let Some(inputs) = body.get_mut("inputs").and_then(|v| v.as_array_mut()) else {
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
        let size = size as usize;
        if size > raw.len() {
            return Err(format!("input '{name}': binary_data_size {size} is more than the {} bytes left in the body", raw.len()));
        }
        let (bytes, rest) = raw.split_at(size);
        raw = rest;
        let datatype = t
            .get("datatype")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let width = match datatype {
            "BOOL" | "INT8" | "UINT8" => 1,
            "INT16" | "UINT16" | "FP16" => 2,
            "INT32" | "UINT32" | "FP32" => 4,
            "INT64" | "UINT64" | "FP64" => 8,
            "BYTES" => 0,
            other => return Err(format!("input '{name}': unknown datatype '{other}'")),
        };
        let mut values = Vec::new();
        if width == 0 {
            let mut b = bytes;
            while !b.is_empty() {
                if b.len() < 4 {
                    return Err(format!("input '{name}': truncated BYTES element"));
                }
                let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let s = b
                    .get(4..4 + n)
                    .ok_or_else(|| format!("input '{name}': truncated BYTES element"))?;
                values.push(Value::String(String::from_utf8_lossy(s).into_owned()));
                b = &b[4 + n..];
            }
        } else {
            if bytes.len() % width != 0 {
                return Err(format!(
                    "input '{name}': {} bytes is not a whole number of {datatype} values",
                    bytes.len()
                ));
            }
            for c in bytes.chunks_exact(width) {
                let v =
                    match datatype {
                        "BOOL" => Value::Bool(c[0] != 0),
                        "INT8" => Value::from(c[0] as i8),
                        "UINT8" => Value::from(c[0]),
                        "INT16" => Value::from(i16::from_le_bytes([c[0], c[1]])),
                        "UINT16" => Value::from(u16::from_le_bytes([c[0], c[1]])),
                        "FP16" => {
                            return Err(format!(
                                "input '{name}': binary FP16 is not supported; send FP32"
                            ))
                        }
                        "INT32" => Value::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                        "UINT32" => Value::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                        "FP32" => serde_json::Number::from_f64(f32::from_le_bytes([
                            c[0], c[1], c[2], c[3],
                        ]) as f64)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                        "INT64" => Value::from(i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
                        "UINT64" => Value::from(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
                        _ => serde_json::Number::from_f64(f64::from_le_bytes(
                            c.try_into().unwrap_or([0; 8]),
                        ))
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                    };
                values.push(v);
            }
        }
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

/// Whether the client asked for binary outputs (Triton's extension).
pub fn oip_wants_binary(body: &Value) -> bool {
    let flag = |v: Option<&Value>| {
        v.and_then(|p| p.get("binary_data"))
            .and_then(|b| b.as_bool())
            .unwrap_or(false)
    };
    body.get("parameters")
        .and_then(|p| p.get("binary_data_output"))
        .and_then(|b| b.as_bool())
        .unwrap_or(false)
        || body
            .get("outputs")
            .and_then(|o| o.as_array())
            .is_some_and(|outs| outs.iter().any(|o| flag(o.get("parameters"))))
}

/// The raw little-endian bytes of a prediction, for a binary output.
pub fn oip_binary(p: &Prediction) -> Vec<u8> {
    let mut out = Vec::new();
    super::table::encode_values(&p.values, &mut out);
    out
}

/// The OIP v2 infer response.
pub fn oip_response(
    model: &str,
    version: &str,
    id: &str,
    p: &Prediction,
    signature: Option<&Signature>,
) -> Value {
    let name = output_names(signature, 1)
        .into_iter()
        .next()
        .unwrap_or_else(|| "predict".into());
    json!({
        "model_name": model,
        "model_version": version,
        "id": id,
        "outputs": [{
            "name": if p.shape.len() > 1 { "predict".to_string() } else { name },
            "shape": p.shape,
            "datatype": oip_datatype(&p.values),
            "data": p.values.to_json(),
        }]
    })
}

// ---------------- MLflow scoring ----------------

/// Rows given as JSON lists; `what` names the field in errors.
fn row_lists(data: &[Value], what: &str) -> Result<Vec<Vec<Value>>, BadRequest> {
    data.iter()
        .enumerate()
        .map(|(i, r)| {
            r.as_array()
                .cloned()
                .ok_or_else(|| format!("{what}[{i}] must be a list"))
        })
        .collect()
}

fn records_table(records: &[Value], what: &str) -> Result<Table, BadRequest> {
    let mut names: Vec<String> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let obj = r
            .as_object()
            .ok_or_else(|| format!("{what}[{i}] must be an object of column: value"))?;
        for k in obj.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let rows: Vec<Vec<Value>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            names
                .iter()
                .map(|n| {
                    r.get(n)
                        .cloned()
                        .ok_or_else(|| format!("{what}[{i}] lacks column '{n}'"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    Table::from_rows(&names, &rows, what)
}

fn columns_dict_table(obj: &Map<String, Value>, what: &str) -> Result<Table, BadRequest> {
    let mut columns = Vec::new();
    for (name, v) in obj {
        let cells: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        columns.push(Column {
            name: name.clone(),
            values: column_from_json(&cells)
                .map_err(|e| format!("{what}: column '{name}': {e}"))?,
        });
    }
    let t = Table { columns };
    if t.columns.iter().any(|c| c.values.len() != t.rows()) {
        return Err(format!("{what}: columns have different lengths"));
    }
    Ok(t)
}

fn rows_table(
    rows: &[Value],
    signature: Option<&Signature>,
    what: &str,
) -> Result<Table, BadRequest> {
    if rows.first().is_some_and(|r| r.is_object()) {
        return records_table(rows, what);
    }
    let rows: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| match r {
            Value::Array(cells) => cells.clone(),
            scalar => vec![scalar.clone()],
        })
        .collect();
    let width = rows.first().map(Vec::len).unwrap_or(0);
    let names = input_names(signature);
    let names: Vec<String> = if names.len() == width {
        names
    } else {
        (0..width).map(|i| i.to_string()).collect()
    };
    Table::from_rows(&names, &rows, what)
}

/// Parses an MLflow `/invocations` JSON body.
pub fn mlflow_json(body: &Value, signature: Option<&Signature>) -> Result<Table, BadRequest> {
    let obj = body.as_object().ok_or("the body must be a JSON object with one of dataframe_split, dataframe_records, instances, inputs")?;
    let keys: Vec<&str> = [
        "dataframe_split",
        "dataframe_records",
        "instances",
        "inputs",
    ]
    .into_iter()
    .filter(|k| obj.contains_key(*k))
    .collect();
    match keys.as_slice() {
        ["dataframe_split"] => {
            let split = obj["dataframe_split"]
                .as_object()
                .ok_or("dataframe_split must be an object with columns and data")?;
            let data = split
                .get("data")
                .and_then(|v| v.as_array())
                .ok_or("dataframe_split.data must be a list of rows")?;
            let rows = row_lists(data, "dataframe_split.data")?;
            let names: Vec<String> = match split.get("columns") {
                Some(Value::Array(cols)) => cols
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| c.to_string())
                    })
                    .collect(),
                None => {
                    let width = rows.first().map(Vec::len).unwrap_or(0);
                    let n = input_names(signature);
                    if n.len() == width {
                        n
                    } else {
                        (0..width).map(|i| i.to_string()).collect()
                    }
                }
                Some(_) => return Err("dataframe_split.columns must be a list of names".into()),
            };
            Table::from_rows(&names, &rows, "dataframe_split")
        }
        ["dataframe_records"] => records_table(
            obj["dataframe_records"]
                .as_array()
                .ok_or("dataframe_records must be a list of objects")?,
            "dataframe_records",
        ),
        [key @ ("instances" | "inputs")] => match &obj[*key] {
            Value::Array(rows) => rows_table(rows, signature, key),
            Value::Object(cols) => columns_dict_table(cols, key),
            _ => Err(format!(
                "{key} must be a list of rows or an object of columns"
            )),
        },
        [] => Err(
            "the body needs one of dataframe_split, dataframe_records, instances, inputs".into(),
        ),
        many => Err(format!(
            "the body has {} — send exactly one",
            many.join(", ")
        )),
    }
}

/// Parses an MLflow `/invocations` CSV body (a header row, then rows).
pub fn mlflow_csv(body: &[u8]) -> Result<Table, BadRequest> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(body);
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| format!("CSV: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| format!("CSV row {}: {e}", i + 1))?;
        rows.push(
            rec.iter()
                .map(|cell| {
                    if let Ok(n) = cell.parse::<i64>() {
                        Value::from(n)
                    } else if let Some(n) = cell
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                    {
                        Value::Number(n)
                    } else {
                        Value::String(cell.to_string())
                    }
                })
                .collect(),
        );
    }
    Table::from_rows(&names, &rows, "CSV")
}

/// The MLflow response.
pub fn mlflow_response(p: &Prediction) -> Value {
    json!({ "predictions": p.rows_json() })
}

// ---------------- Legion / ODAHU ----------------

/// Parses `{"columns": [...], "data": [[...]]}`.
pub fn legion_request(body: &Value) -> Result<Table, BadRequest> {
    let columns = body
        .get("columns")
        .and_then(|v| v.as_array())
        .ok_or("\"columns\" must be a list of column names")?;
    let names: Vec<String> = columns
        .iter()
        .map(|c| {
            c.as_str()
                .map(str::to_string)
                .ok_or("column names must be strings")
        })
        .collect::<Result<_, _>>()?;
    let data = body
        .get("data")
        .and_then(|v| v.as_array())
        .ok_or("\"data\" must be a list of rows")?;
    let rows = row_lists(data, "data")?;
    Table::from_rows(&names, &rows, "data")
}

/// `{"prediction": [[...]], "columns": [...]}`: one list per row.
pub fn legion_response(p: &Prediction, signature: Option<&Signature>) -> Value {
    let width = p.row_width();
    let rows: Vec<Value> = p
        .rows_json()
        .into_iter()
        .map(|r| if width > 1 { r } else { Value::Array(vec![r]) })
        .collect();
    json!({ "prediction": rows, "columns": output_names(signature, width) })
}

/// An OpenAPI 3 document for `/api/model/invoke`, built from the signature.
pub fn openapi(model: &str, version: &str, signature: Option<&Signature>) -> Value {
    let inputs = input_names(signature);
    let kind = |dt: &str| match dt {
        "double" | "float" => json!({"type": "number"}),
        "long" | "integer" => json!({"type": "integer"}),
        "boolean" => json!({"type": "boolean"}),
        _ => json!({"type": "string"}),
    };
    let row_items: Vec<Value> = signature
        .map(|s| s.inputs.iter().map(|i| kind(&i.datatype)).collect())
        .unwrap_or_default();
    json!({
        "openapi": "3.0.3",
        "info": { "title": format!("{model} model API"), "version": version },
        "paths": {
            "/api/model/invoke": { "post": {
                "summary": format!("Predict with {model} {version}"),
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["columns", "data"],
                    "properties": {
                        "columns": { "type": "array", "items": { "type": "string" }, "example": inputs },
                        "data": { "type": "array", "items": { "type": "array", "items": if row_items.is_empty() { json!({}) } else { json!({ "oneOf": row_items }) } } }
                    }
                }}}},
                "responses": {
                    "200": { "description": "Predictions, one list per row", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "prediction": { "type": "array", "items": { "type": "array" } }, "columns": { "type": "array", "items": { "type": "string" } } }
                    }}}},
                    "400": { "description": "The request does not fit the model" },
                    "503": { "description": "Overloaded or not ready; retry" }
                }
            }},
            "/healthcheck": { "get": { "responses": { "200": { "description": "{\"status\": true}" } } } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TensorSpec;

    fn sig() -> Signature {
        let col = |n: &str, t: &str| TensorSpec {
            name: Some(n.into()),
            datatype: t.into(),
            shape: vec![],
            optional: false,
        };
        Signature {
            inputs: vec![col("a", "double"), col("b", "long")],
            outputs: vec![],
        }
    }

    #[test]
    fn every_dialect_gives_the_same_table() {
        let s = sig();
        let expected = Table {
            columns: vec![
                Column {
                    name: "a".into(),
                    values: Values::F64(vec![1.0, 3.0]),
                },
                Column {
                    name: "b".into(),
                    values: Values::I64(vec![2, 4]),
                },
            ],
        };
        let split = mlflow_json(
            &json!({"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]]}}),
            Some(&s),
        )
        .unwrap();
        let records = mlflow_json(
            &json!({"dataframe_records": [{"a": 1, "b": 2}, {"a": 3.0, "b": 4}]}),
            Some(&s),
        )
        .unwrap();
        let instances = mlflow_json(&json!({"instances": [[1, 2], [3, 4]]}), Some(&s)).unwrap();
        let inputs = mlflow_json(&json!({"inputs": {"a": [1, 3], "b": [2, 4]}}), Some(&s)).unwrap();
        let csv = mlflow_csv(b"a,b\n1,2\n3,4\n").unwrap();
        let legion =
            legion_request(&json!({"columns": ["a", "b"], "data": [[1, 2], [3, 4]]})).unwrap();
        let (oip_cols, _) = oip_request(
            &json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 3]},
            {"name": "b", "shape": [2], "datatype": "INT64", "data": [2, 4]}]}),
            Some(&s),
        )
        .unwrap();
        let (oip_2d, _) = oip_request(&json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]}), Some(&s)).unwrap();
        for t in [split, records, instances, inputs, csv, legion, oip_cols] {
            assert_eq!(conform(t, Some(&s)).unwrap(), expected);
        }
        // A 2-D FP64 tensor's integer column cannot narrow losslessly only if fractional: here it can.
        assert_eq!(conform(oip_2d, Some(&s)).unwrap(), expected);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let s = sig();
        let missing = conform(
            legion_request(&json!({"columns": ["a"], "data": [[1]]})).unwrap(),
            Some(&s),
        )
        .unwrap_err();
        assert_eq!(missing, "missing column 'b'");
        let shape = oip_request(
            &json!({"inputs": [{"name": "a", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}),
            None,
        )
        .unwrap_err();
        assert!(shape.contains("shape [3] needs 3 values, got 2"), "{shape}");
        let dtype = oip_request(
            &json!({"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]}),
            None,
        )
        .unwrap_err();
        assert!(dtype.contains("300 is out of range for INT8"), "{dtype}");
        let kind = oip_request(
            &json!({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": ["x"]}]}),
            None,
        )
        .unwrap_err();
        assert!(
            kind.contains("datatype FP64 needs numeric values"),
            "{kind}"
        );
        let two = mlflow_json(&json!({"instances": [], "inputs": []}), None).unwrap_err();
        assert!(two.contains("send exactly one"), "{two}");
        let typed = conform(
            legion_request(&json!({"columns": ["a", "b"], "data": [["x", 1]]})).unwrap(),
            Some(&s),
        )
        .unwrap_err();
        assert!(
            typed.contains("column 'a' must be double values"),
            "{typed}"
        );
    }
}
