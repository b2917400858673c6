//! The columnar table a prediction request becomes, whatever protocol it
//! came in, and the binary frames that carry tables to the Python workers
//! and predictions back.
//!
//! Frames (all integers little-endian), after a `u32` length prefix:
//!
//! ```text
//! request  u8 kind=1 | u64 batch | u32 rows | u16 cols | cols × (u16 len, name, u8 dtype)
//!          | cols × column data
//! ready    u8 kind=0 | u32 len | JSON {"flavor", "loader", …}
//! result   u8 kind=2 | u64 batch | u8 dtype | u8 ndim | ndim × u32 dim | data
//! error    u8 kind=3 | u64 batch | u32 len | UTF-8 message
//! data     f64/i64: 8 bytes each; bool: 1 byte each; str: u32 len + UTF-8 each
//! ```
//!
//! Numeric columns cross as raw arrays that numpy maps without parsing:
//! the point of not using JSON between the front and the workers.

use serde_json::Value;

/// Element types on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    /// 64-bit float.
    F64 = 1,
    /// 64-bit signed integer.
    I64 = 2,
    /// Boolean.
    Bool = 3,
    /// UTF-8 string.
    Str = 4,
}

impl DType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => DType::F64,
            2 => DType::I64,
            3 => DType::Bool,
            4 => DType::Str,
            _ => return None,
        })
    }
}

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Floats.
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire type.
    pub fn dtype(&self) -> DType {
        match self {
            Values::F64(_) => DType::F64,
            Values::I64(_) => DType::I64,
            Values::Bool(_) => DType::Bool,
            Values::Str(_) => DType::Str,
        }
    }

    fn empty(dtype: DType) -> Self {
        match dtype {
            DType::F64 => Values::F64(Vec::new()),
            DType::I64 => Values::I64(Vec::new()),
            DType::Bool => Values::Bool(Vec::new()),
            DType::Str => Values::Str(Vec::new()),
        }
    }

    fn extend(&mut self, other: &Values) -> bool {
        match (self, other) {
            (Values::F64(a), Values::F64(b)) => a.extend_from_slice(b),
            (Values::I64(a), Values::I64(b)) => a.extend_from_slice(b),
            (Values::Bool(a), Values::Bool(b)) => a.extend_from_slice(b),
            (Values::Str(a), Values::Str(b)) => a.extend_from_slice(b),
            (Values::F64(a), Values::I64(b)) => a.extend(b.iter().map(|&x| x as f64)),
            _ => return false,
        }
        true
    }

    /// Values as JSON numbers, booleans or strings.
    pub fn to_json(&self) -> Vec<Value> {
        match self {
            Values::F64(v) => v
                .iter()
                .map(|&x| {
                    serde_json::Number::from_f64(x)
                        .map(Value::Number)
                        .unwrap_or(Value::Null)
                })
                .collect(),
            Values::I64(v) => v.iter().map(|&x| Value::from(x)).collect(),
            Values::Bool(v) => v.iter().map(|&x| Value::Bool(x)).collect(),
            Values::Str(v) => v.iter().map(|x| Value::String(x.clone())).collect(),
        }
    }

    /// Converts to the type a signature asks for (integers widen to
    /// floats; nothing narrows). `None` if it cannot.
    pub fn coerce(self, want: DType) -> Option<Values> {
        if self.dtype() == want {
            return Some(self);
        }
        match (self, want) {
            (Values::I64(v), DType::F64) => {
                Some(Values::F64(v.into_iter().map(|x| x as f64).collect()))
            }
            (Values::F64(v), DType::I64) if v.iter().all(|x| x.fract() == 0.0) => {
                Some(Values::I64(v.into_iter().map(|x| x as i64).collect()))
            }
            _ => None,
        }
    }
}

/// A named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Its values, one per row.
    pub values: Values,
}

/// Rows of named columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Columns, all of the same length.
    pub columns: Vec<Column>,
}

impl Table {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map(|c| c.values.len()).unwrap_or(0)
    }

    /// Appends `other`'s rows (same columns, same order) to this table.
    pub fn append(&mut self, other: &Table) -> bool {
        if self.columns.is_empty() {
            *self = other.clone();
            return true;
        }
        if self.columns.len() != other.columns.len() {
            return false;
        }
        for (a, b) in self.columns.iter_mut().zip(&other.columns) {
            if a.name != b.name || !a.values.extend(&b.values) {
                return false;
            }
        }
        true
    }

    /// Builds a table from JSON rows of values under `names`, inferring
    /// each column's type from its values. `what` names the input in errors.
    pub fn from_rows(names: &[String], rows: &[Vec<Value>], what: &str) -> Result<Table, String> {
        let mut columns = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let mut cells = Vec::with_capacity(rows.len());
            for (r, row) in rows.iter().enumerate() {
                if row.len() != names.len() {
                    return Err(format!(
                        "{what}: row {r} has {} values, expected {} (one per column)",
                        row.len(),
                        names.len()
                    ));
                }
                cells.push(&row[i]);
            }
            columns.push(Column {
                name: name.clone(),
                values: column_from_json(&cells)
                    .map_err(|e| format!("{what}: column '{name}': {e}"))?,
            });
        }
        Ok(Table { columns })
    }
}

/// Infers a column from JSON cells: all numbers (integers stay integers
/// unless one is fractional), all booleans, or all strings.
pub fn column_from_json(cells: &[&Value]) -> Result<Values, String> {
    if cells.iter().all(|c| c.is_i64() || c.is_u64()) {
        return Ok(Values::I64(
            cells
                .iter()
                .map(|c| c.as_i64().unwrap_or(i64::MAX))
                .collect(),
        ));
    }
    if cells.iter().all(|c| c.is_number()) {
        return Ok(Values::F64(
            cells
                .iter()
                .map(|c| c.as_f64().unwrap_or(f64::NAN))
                .collect(),
        ));
    }
    if cells.iter().all(|c| c.is_boolean()) {
        return Ok(Values::Bool(
            cells.iter().map(|c| c.as_bool().unwrap_or(false)).collect(),
        ));
    }
    if cells.iter().all(|c| c.is_string()) {
        return Ok(Values::Str(
            cells
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect(),
        ));
    }
    if let Some(bad) = cells
        .iter()
        .find(|c| !(c.is_number() || c.is_string() || c.is_boolean()))
    {
        return Err(format!("unsupported value {bad}"));
    }
    Err("mixes numbers, strings and booleans".into())
}

/// A model's answer for a batch: values in row-major order and a shape
/// whose first dimension is the number of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Shape, `[rows]` or `[rows, k]`.
    pub shape: Vec<usize>,
    /// Values.
    pub values: Values,
}

impl Prediction {
    /// Values per row.
    pub fn row_width(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>().max(1)
    }

    /// Rows `start..start+rows` as their own prediction.
    pub fn slice(&self, start: usize, rows: usize) -> Prediction {
        let w = self.row_width();
        let (a, b) = (start * w, (start + rows) * w);
        let values = match &self.values {
            Values::F64(v) => Values::F64(v[a..b].to_vec()),
            Values::I64(v) => Values::I64(v[a..b].to_vec()),
            Values::Bool(v) => Values::Bool(v[a..b].to_vec()),
            Values::Str(v) => Values::Str(v[a..b].to_vec()),
        };
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        Prediction { shape, values }
    }

    /// Per-row JSON: scalars for a 1-D prediction, arrays for 2-D.
    pub fn rows_json(&self) -> Vec<Value> {
        let flat = self.values.to_json();
        if self.shape.len() <= 1 {
            return flat;
        }
        flat.chunks(self.row_width())
            .map(|c| Value::Array(c.to_vec()))
            .collect()
    }
}

// ---------- wire encoding ----------

/// Encodes a request frame (without the length prefix).
pub fn encode_request(batch: u64, table: &Table) -> Vec<u8> {
    let rows = table.rows();
    let mut out = Vec::with_capacity(32 + rows * table.columns.len() * 8);
    out.push(1u8);
    out.extend_from_slice(&batch.to_le_bytes());
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(table.columns.len() as u16).to_le_bytes());
    for c in &table.columns {
        out.extend_from_slice(&(c.name.len() as u16).to_le_bytes());
        out.extend_from_slice(c.name.as_bytes());
        out.push(c.values.dtype() as u8);
    }
    for c in &table.columns {
        encode_values(&c.values, &mut out);
    }
    out
}

/// Appends values in the wire (and Triton binary) layout: little-endian
/// numbers, one byte per boolean, length-prefixed strings.
pub fn encode_values(v: &Values, out: &mut Vec<u8>) {
    match v {
        Values::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Values::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Values::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
        Values::Str(v) => v.iter().for_each(|s| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }),
    }
}

/// A frame from a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerFrame {
    /// The model is loaded; JSON facts about it.
    Ready(Value),
    /// A batch's prediction.
    Result(u64, Prediction),
    /// A batch failed in `predict`.
    Error(u64, String),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated frame")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "truncated frame")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "truncated frame")?,
        ))
    }
}

/// Decodes a worker frame (without the length prefix). Worker output is
/// checked like any other input: a malformed frame is an error, never a panic.
pub fn decode_worker_frame(buf: &[u8]) -> Result<WorkerFrame, String> {
    let mut r = Reader { buf, pos: 0 };
    match r.u8()? {
        0 => {
            let n = r.u32()? as usize;
            let text = r.take(n)?;
            Ok(WorkerFrame::Ready(
                serde_json::from_slice(text).map_err(|e| format!("ready frame: {e}"))?,
            ))
        }
        2 => {
            let batch = r.u64()?;
            let dtype = DType::from_u8(r.u8()?).ok_or("unknown result dtype")?;
            let ndim = r.u8()? as usize;
            let mut shape = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                shape.push(r.u32()? as usize);
            }
            let count: usize = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or("result shape overflows")?;
            let mut values = Values::empty(dtype);
            match &mut values {
                Values::F64(v) => {
                    let raw = r.take(count.checked_mul(8).ok_or("result too large")?)?;
                    v.extend(
                        raw.chunks_exact(8)
                            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
                    );
                }
                Values::I64(v) => {
                    let raw = r.take(count.checked_mul(8).ok_or("result too large")?)?;
                    v.extend(
                        raw.chunks_exact(8)
                            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
                    );
                }
                Values::Bool(v) => v.extend(r.take(count)?.iter().map(|&b| b != 0)),
                Values::Str(v) => {
                    for _ in 0..count {
                        let n = r.u32()? as usize;
                        v.push(String::from_utf8_lossy(r.take(n)?).into_owned());
                    }
                }
            }
            Ok(WorkerFrame::Result(batch, Prediction { shape, values }))
        }
        3 => {
            let batch = r.u64()?;
            let n = r.u32()? as usize;
            Ok(WorkerFrame::Error(
                batch,
                String::from_utf8_lossy(r.take(n)?).into_owned(),
            ))
        }
        k => Err(format!("unknown frame kind {k}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_to_columns_infers_types() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let rows = vec![
            vec![Value::from(1), Value::from(1.5), Value::from("x")],
            vec![Value::from(2), Value::from(2), Value::from("y")],
        ];
        let t = Table::from_rows(&names, &rows, "input").unwrap();
        assert_eq!(t.columns[0].values, Values::I64(vec![1, 2]));
        assert_eq!(t.columns[1].values, Values::F64(vec![1.5, 2.0]));
        assert_eq!(
            t.columns[2].values,
            Values::Str(vec!["x".into(), "y".into()])
        );
        let err = Table::from_rows(&names, &[vec![Value::from(1)]], "input").unwrap_err();
        assert!(err.contains("row 0 has 1 values, expected 3"), "{err}");
    }

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let mut frame = vec![2u8];
        frame.extend_from_slice(&7u64.to_le_bytes());
        frame.extend_from_slice(&[DType::F64 as u8, 2]);
        frame.extend_from_slice(&2u32.to_le_bytes());
        frame.extend_from_slice(&2u32.to_le_bytes());
        for x in [1.0f64, 2.0, 3.0, 4.0] {
            frame.extend_from_slice(&x.to_le_bytes());
        }
        let WorkerFrame::Result(7, p) = decode_worker_frame(&frame).unwrap() else {
            panic!("not a result")
        };
        assert_eq!(p.shape, vec![2, 2]);
        assert_eq!(p.slice(1, 1).values, Values::F64(vec![3.0, 4.0]));
        assert_eq!(p.rows_json()[0], serde_json::json!([1.0, 2.0]));
        assert!(decode_worker_frame(&frame[..frame.len() - 3])
            .unwrap_err()
            .contains("truncated"));
        assert!(decode_worker_frame(&[9])
            .unwrap_err()
            .contains("unknown frame kind 9"));
        let mut huge = vec![2u8];
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.extend_from_slice(&[1, 2]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_worker_frame(&huge).is_err());
    }
}
