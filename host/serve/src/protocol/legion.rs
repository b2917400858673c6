//! The Legion / ODAHU model API: `/healthcheck`, `/api/model/info` (an
//! OpenAPI document built from the signature), `/api/model/invoke` with
//! `{"columns", "data"}`, and the feedback endpoint.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::mlflow::row_lists;
use super::{input_names, output_names, ApiError, BadRequest, Dialect};
use crate::http::{parse_json, predict, read_body, RequestId, Shared};
use crate::log::FeedbackRecord;
use crate::signature::Signature;
use crate::table::{Prediction, Table};

const D: Dialect = Dialect::Legion;

/// The Legion routes.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/api/model/info", get(info))
        .route("/api/model/invoke", post(invoke))
        .route("/feedback", post(feedback))
        .route("/api/v1/feedback", post(feedback))
}

async fn healthcheck(State(s): State<Shared>) -> Response {
    let ok = s.is_ready();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "status": ok }))).into_response()
}

async fn info(State(s): State<Shared>) -> Json<Value> {
    Json(openapi(
        s.model.name.as_str(),
        s.model.version.as_str(),
        s.model.signature.as_ref(),
    ))
}

async fn invoke(
    State(s): State<Shared>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, &s, D).await?;
    let v = parse_json(&bytes, D)?;
    let table = parse_request(&v).map_err(|m| ApiError::bad(D, m))?;
    let p = predict(&s, D, &request_id, table, &|| v.clone()).await?;
    let mut resp = Json(response(&p, s.model.signature.as_ref())).into_response();
    for (k, v) in [
        ("model-name", s.model.name.as_str()),
        ("model-version", s.model.version.as_str()),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(HeaderName::from_static(k), v);
        }
    }
    Ok(resp)
}

async fn feedback(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let header_of = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Only an id the client sent counts: feedback names the prediction it is about.
    let request_id = header_of("request-id").or_else(|| header_of("x-request-id"));
    let (Some(request_id), Some(model_name), Some(model_version)) = (
        request_id,
        header_of("model-name"),
        header_of("model-version"),
    ) else {
        return Err(ApiError::bad(D, "feedback needs the Request-ID, Model-Name and Model-Version headers of the prediction it is about"));
    };
    let bytes = read_body(body, &s, D).await?;
    let payload = parse_json(&bytes, D)?;
    s.feedback_log.write(&FeedbackRecord {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        request_id,
        model_name,
        model_version,
        payload,
    });
    Ok(Json(json!({ "error": false, "registered": true })))
}

/// Parses `{"columns": [...], "data": [[...]]}`.
pub fn parse_request(body: &Value) -> Result<Table, BadRequest> {
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

/// `{"prediction": [[...]], "columns": [...]}`: one list per row, columns
/// named by [`output_names`].
pub fn response(p: &Prediction, signature: Option<&Signature>) -> Value {
    let width = if p.shape.len() > 1 { p.row_width() } else { 1 };
    let rows: Vec<Value> = p
        .rows_json()
        .into_iter()
        .map(|r| match r {
            Value::Array(_) => r,
            scalar => Value::Array(vec![scalar]),
        })
        .collect();
    json!({ "prediction": rows, "columns": output_names(signature, width) })
}

/// An OpenAPI 3 document for `/api/model/invoke`, built from the signature.
pub fn openapi(model: &str, version: &str, signature: Option<&Signature>) -> Value {
    let inputs = input_names(signature);
    let row_items: Vec<Value> = signature
        .map(|s| {
            s.inputs
                .iter()
                .map(|i| {
                    let t = i
                        .data_type()
                        .map(|t| t.json_schema_type())
                        .unwrap_or("string");
                    json!({ "type": t })
                })
                .collect()
        })
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
    use crate::protocol::conform;
    use crate::protocol::tests::{expected, sig};
    use crate::table::Values;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        let t = parse_request(&json!({"columns": ["a", "b"], "data": [[1, 2], [3, 4]]})).unwrap();
        assert_eq!(conform(t, Some(&sig())).unwrap(), expected());
        for (body, want) in [
            (json!({"data": []}), "\"columns\" must be a list"),
            (
                json!({"columns": [1], "data": []}),
                "column names must be strings",
            ),
            (json!({"columns": ["a"]}), "\"data\" must be a list"),
            (
                json!({"columns": ["a"], "data": [1]}),
                "data[0] must be a list",
            ),
        ] {
            let e = parse_request(&body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn responses_are_one_list_per_row() {
        let p = Prediction {
            shape: vec![2],
            values: Values::I64(vec![0, 2]),
        };
        assert_eq!(
            response(&p, None),
            json!({"prediction": [[0], [2]], "columns": ["predict"]})
        );
        let p2 = Prediction {
            shape: vec![1, 2],
            values: Values::F64(vec![0.5, 0.5]),
        };
        assert_eq!(
            response(&p2, None),
            json!({"prediction": [[0.5, 0.5]], "columns": ["predict_0", "predict_1"]})
        );
        let doc = openapi("iris", "1", Some(&sig()));
        assert_eq!(
            doc["paths"]["/api/model/invoke"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"]["properties"]["columns"]["example"],
            json!(["a", "b"])
        );
    }
}
