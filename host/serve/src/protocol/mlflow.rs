//! MLflow scoring: `POST /invocations` with `dataframe_split`,
//! `dataframe_records`, `instances`, `inputs` or CSV, and MLflow's health
//! and version routes, so clients of `mlflow models serve` work unchanged.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};

use super::{column_names, ApiError, BadRequest, Dialect};
use crate::http::{parse_json, predict, read_body, RequestId, Shared};
use crate::signature::Signature;
use crate::table::{column_from_json, Column, Prediction, Table};

const D: Dialect = Dialect::Mlflow;

/// The MLflow routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/invocations", post(invocations))
        .route("/ping", get(ping))
        .route("/health", get(ping))
        .route("/version", get(version))
}

/// MLflow's error body: `error_code` from the status, and the message.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    let code = match status.as_u16() {
        400 | 413 | 415 => "BAD_REQUEST",
        404 => "RESOURCE_DOES_NOT_EXIST",
        503 | 504 => "TEMPORARILY_UNAVAILABLE",
        _ => "INTERNAL_ERROR",
    };
    json!({ "error_code": code, "message": message })
}

async fn ping() -> &'static str {
    "\n"
}

async fn version(State(s): State<Shared>) -> String {
    s.model
        .metadata
        .get("mlflow_version")
        .cloned()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

async fn invocations(
    State(s): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let bytes = read_body(body, &s, D).await?;
    let (table, input) = if content_type.starts_with("text/csv") {
        (
            parse_csv(&bytes).map_err(|m| ApiError::bad(D, m))?,
            Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        )
    } else if content_type.starts_with("application/json") {
        let v = parse_json(&bytes, D)?;
        (
            parse_json_body(&v, s.model.signature.as_ref()).map_err(|m| ApiError::bad(D, m))?,
            v,
        )
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            D,
            format!(
                "content type '{content_type}' is not supported: use application/json or text/csv"
            ),
        ));
    };
    let p = predict(&s, D, &request_id, table, &|| input.clone()).await?;
    Ok(Json(response(&p)))
}

/// Rows given as JSON lists; `what` names the field in errors.
pub(crate) fn row_lists(data: &[Value], what: &str) -> Result<Vec<Vec<Value>>, BadRequest> {
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
    Table::from_rows(&column_names(signature, width), &rows, what)
}

/// Parses an MLflow `/invocations` JSON body.
pub fn parse_json_body(body: &Value, signature: Option<&Signature>) -> Result<Table, BadRequest> {
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
                None => column_names(signature, rows.first().map(Vec::len).unwrap_or(0)),
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
pub fn parse_csv(body: &[u8]) -> Result<Table, BadRequest> {
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

/// The MLflow response: `{"predictions": [...]}`, one entry per row.
pub fn response(p: &Prediction) -> Value {
    json!({ "predictions": p.rows_json() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::conform;
    use crate::protocol::tests::{expected, sig};

    #[test]
    fn every_body_form_gives_the_same_table() {
        let s = sig();
        let bodies = [
            json!({"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]]}}),
            json!({"dataframe_split": {"data": [[1, 2], [3, 4]]}}),
            json!({"dataframe_records": [{"a": 1, "b": 2}, {"a": 3.0, "b": 4}]}),
            json!({"instances": [[1, 2], [3, 4]]}),
            json!({"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}),
            json!({"inputs": {"a": [1, 3], "b": [2, 4]}}),
        ];
        for body in bodies {
            let t = parse_json_body(&body, Some(&s)).unwrap();
            assert_eq!(conform(t, Some(&s)).unwrap(), expected(), "{body}");
        }
        let csv = parse_csv(b"a,b\n1,2\n3,4\n").unwrap();
        assert_eq!(conform(csv, Some(&s)).unwrap(), expected());
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let cases = [
            (json!({"instances": [], "inputs": []}), "send exactly one"),
            (json!({"rows": []}), "needs one of dataframe_split"),
            (
                json!({"dataframe_split": {"columns": ["x"], "data": [[1, 2]]}}),
                "row 0 has 2 values, expected 1",
            ),
            (
                json!({"dataframe_split": {"columns": 3, "data": []}}),
                "columns must be a list",
            ),
            (
                json!({"dataframe_records": [1]}),
                "dataframe_records[0] must be an object",
            ),
            (
                json!({"dataframe_records": [{"a": 1}, {"b": 2}]}),
                "dataframe_records[0] lacks column 'b'",
            ),
            (
                json!({"inputs": {"a": [1, 2], "b": [1]}}),
                "columns have different lengths",
            ),
            (json!({"instances": 3}), "instances must be a list of rows"),
            (
                json!({"instances": [[1, "x"], [2, true]]}),
                "mixes numbers, strings and booleans",
            ),
            (json!({"instances": [[{"deep": 1}]]}), "unsupported value"),
        ];
        for (body, want) in cases {
            let e = parse_json_body(&body, None).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert!(parse_csv(b"a,b\n1\n").unwrap_err().contains("CSV row 1"));
    }

    #[test]
    fn errors_carry_mlflow_codes() {
        assert_eq!(
            error_body(StatusCode::BAD_REQUEST, "x")["error_code"],
            "BAD_REQUEST"
        );
        assert_eq!(
            error_body(StatusCode::SERVICE_UNAVAILABLE, "x")["error_code"],
            "TEMPORARILY_UNAVAILABLE"
        );
        assert_eq!(
            error_body(StatusCode::INTERNAL_SERVER_ERROR, "x")["error_code"],
            "INTERNAL_ERROR"
        );
    }
}
