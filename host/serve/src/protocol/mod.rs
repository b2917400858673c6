//! The three request/response dialects, one module each with its parsing,
//! responses and routes: [`oip`] (Open Inference Protocol v2), [`mlflow`]
//! (MLflow scoring) and [`legion`] (the Legion/ODAHU model API). What they
//! share lives here: the error each answers in its own shape, fitting a
//! table to the model's signature, and the names of inputs and outputs.

pub mod legion;
pub mod mlflow;
pub mod oip;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::signature::Signature;
use crate::table::{Column, Table, Values};

/// A request the client got wrong: 400 with this message.
pub type BadRequest = String;

/// Which dialect a request speaks: it decides the error format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Open Inference Protocol v2.
    Oip,
    /// MLflow scoring.
    Mlflow,
    /// Legion / ODAHU.
    Legion,
}

impl Dialect {
    /// The label in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Dialect::Oip => "oip",
            Dialect::Mlflow => "mlflow",
            Dialect::Legion => "legion",
        }
    }
}

/// An error answered in the dialect's own shape.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
    /// The shape of the body.
    pub dialect: Dialect,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, dialect: Dialect, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            dialect,
        }
    }

    /// A 400.
    pub fn bad(dialect: Dialect, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, dialect, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.dialect {
            Dialect::Oip => json!({ "error": self.message }),
            Dialect::Mlflow => mlflow::error_body(self.status, &self.message),
            Dialect::Legion => json!({ "message": self.message }),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
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
                let values = match spec.data_type() {
                    Some(want) => values.coerce(want.storage()).ok_or_else(|| {
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

/// Names for `width` positional columns: the signature's input names when
/// there are that many, else `0`, `1`, ….
pub fn column_names(signature: Option<&Signature>, width: usize) -> Vec<String> {
    let names = input_names(signature);
    if names.len() == width {
        names
    } else {
        (0..width).map(|i| i.to_string()).collect()
    }
}

/// The signature's named inputs, in order.
pub fn input_names(signature: Option<&Signature>) -> Vec<String> {
    signature
        .map(|s| s.inputs.iter().filter_map(|i| i.name.clone()).collect())
        .unwrap_or_default()
}

/// The name every output without one of its own gets.
pub const DEFAULT_OUTPUT: &str = "predict";

/// The names of `count` outputs. The one function that names outputs, for
/// the model metadata and for every response alike, so a client that asks
/// for the output the metadata listed gets it: the signature's names when
/// it names that many outputs; else, for one output, the signature's first
/// output's name or `predict`; else `predict_0`, `predict_1`, ….
pub fn output_names(signature: Option<&Signature>, count: usize) -> Vec<String> {
    let outputs = signature.map(|s| s.outputs.as_slice()).unwrap_or_default();
    if outputs.len() == count && outputs.iter().all(|o| o.name.is_some()) {
        return outputs.iter().filter_map(|o| o.name.clone()).collect();
    }
    if count == 1 {
        let name = outputs.first().and_then(|o| o.name.clone());
        return vec![name.unwrap_or_else(|| DEFAULT_OUTPUT.to_string())];
    }
    (0..count)
        .map(|i| format!("{DEFAULT_OUTPUT}_{i}"))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::signature::TensorSpec;

    pub(crate) fn spec(name: Option<&str>, t: &str) -> TensorSpec {
        TensorSpec {
            name: name.map(str::to_string),
            datatype: t.into(),
            shape: vec![],
            optional: false,
        }
    }

    /// Inputs `a: double`, `b: long`; no outputs.
    pub(crate) fn sig() -> Signature {
        Signature {
            inputs: vec![spec(Some("a"), "double"), spec(Some("b"), "long")],
            outputs: vec![],
        }
    }

    /// `a` = [1.0, 3.0], `b` = [2, 4]: what every dialect's example parses to.
    pub(crate) fn expected() -> Table {
        Table {
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
        }
    }

    #[test]
    fn conform_orders_types_and_names_what_is_missing() {
        let s = sig();
        let t = legion::parse_request(
            &json!({"columns": ["b", "a", "c"], "data": [[2, 1, 0], [4, 3, 0]]}),
        )
        .unwrap();
        assert_eq!(conform(t, Some(&s)).unwrap(), expected());
        let missing = conform(
            legion::parse_request(&json!({"columns": ["a"], "data": [[1]]})).unwrap(),
            Some(&s),
        )
        .unwrap_err();
        assert_eq!(missing, "missing column 'b'");
        let typed = conform(
            legion::parse_request(&json!({"columns": ["a", "b"], "data": [["x", 1]]})).unwrap(),
            Some(&s),
        )
        .unwrap_err();
        assert!(
            typed.contains("column 'a' must be double values"),
            "{typed}"
        );
    }

    #[test]
    fn outputs_are_named_by_one_rule() {
        let unnamed = Signature {
            inputs: vec![],
            outputs: vec![spec(None, "float64")],
        };
        assert_eq!(output_names(Some(&unnamed), 1), ["predict"]);
        assert_eq!(output_names(None, 1), ["predict"]);
        assert_eq!(output_names(None, 2), ["predict_0", "predict_1"]);
        let named = Signature {
            inputs: vec![],
            outputs: vec![spec(Some("species"), "long")],
        };
        assert_eq!(output_names(Some(&named), 1), ["species"]);
        let two = Signature {
            inputs: vec![],
            outputs: vec![spec(Some("lo"), "double"), spec(Some("hi"), "double")],
        };
        assert_eq!(output_names(Some(&two), 2), ["lo", "hi"]);
        assert_eq!(output_names(Some(&two), 1), ["lo"]);
        assert_eq!(
            output_names(Some(&two), 3),
            ["predict_0", "predict_1", "predict_2"]
        );
    }
}
