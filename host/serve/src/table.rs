//! The columnar table a prediction request becomes, whatever protocol it
//! came in, and the prediction a worker gives back.

use serde_json::Value;

use crate::signature::Storage;

/// One column's values. They serialise as a JSON list (a float JSON
/// cannot hold, NaN or infinite, as `null`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
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

    /// How they are held.
    pub fn storage(&self) -> Storage {
        match self {
            Values::F64(_) => Storage::F64,
            Values::I64(_) => Storage::I64,
            Values::Bool(_) => Storage::Bool,
            Values::Str(_) => Storage::Str,
        }
    }

    /// No values, held as `storage`.
    pub fn empty(storage: Storage) -> Self {
        match storage {
            Storage::F64 => Values::F64(Vec::new()),
            Storage::I64 => Values::I64(Vec::new()),
            Storage::Bool => Values::Bool(Vec::new()),
            Storage::Str => Values::Str(Vec::new()),
        }
    }

    /// Whether [`Values::extend`] accepts `other`.
    fn can_extend(&self, other: &Values) -> bool {
        self.storage() == other.storage()
            || (self.storage() == Storage::F64 && other.storage() == Storage::I64)
    }

    /// Appends `other` (integers widen into a float column). Call only
    /// after [`Values::can_extend`].
    fn extend(&mut self, other: &Values) {
        match (self, other) {
            (Values::F64(a), Values::F64(b)) => a.extend_from_slice(b),
            (Values::I64(a), Values::I64(b)) => a.extend_from_slice(b),
            (Values::Bool(a), Values::Bool(b)) => a.extend_from_slice(b),
            (Values::Str(a), Values::Str(b)) => a.extend_from_slice(b),
            (Values::F64(a), Values::I64(b)) => a.extend(b.iter().map(|&x| x as f64)),
            _ => {}
        }
    }

    /// Values as JSON numbers, booleans or strings (a float that JSON
    /// cannot hold, NaN or infinite, is `null`).
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

    /// Converts to the storage a signature asks for (integers widen to
    /// floats; floats narrow to integers only when none has a fraction).
    /// `None` if it cannot.
    pub fn coerce(self, want: Storage) -> Option<Values> {
        if self.storage() == want {
            return Some(self);
        }
        match (self, want) {
            (Values::I64(v), Storage::F64) => {
                Some(Values::F64(v.into_iter().map(|x| x as f64).collect()))
            }
            (Values::F64(v), Storage::I64)
                if v.iter().all(|x| x.fract() == 0.0 && x.abs() < 9.2e18) =>
            {
                Some(Values::I64(v.into_iter().map(|x| x as i64).collect()))
            }
            _ => None,
        }
    }

    /// Values `start..end`, or `None` if that is out of range.
    pub fn range(&self, start: usize, end: usize) -> Option<Values> {
        Some(match self {
            Values::F64(v) => Values::F64(v.get(start..end)?.to_vec()),
            Values::I64(v) => Values::I64(v.get(start..end)?.to_vec()),
            Values::Bool(v) => Values::Bool(v.get(start..end)?.to_vec()),
            Values::Str(v) => Values::Str(v.get(start..end)?.to_vec()),
        })
    }

    /// Splits row-major `[rows, cols]` values into `cols` columns.
    /// `None` unless there are exactly `rows * cols` values.
    pub fn into_columns(self, rows: usize, cols: usize) -> Option<Vec<Values>> {
        if rows.checked_mul(cols)? != self.len() {
            return None;
        }
        fn split<T>(v: Vec<T>, cols: usize) -> Vec<Vec<T>> {
            let rows = v.len().checked_div(cols).unwrap_or(0);
            let mut out: Vec<Vec<T>> = (0..cols).map(|_| Vec::with_capacity(rows)).collect();
            for (i, x) in v.into_iter().enumerate() {
                out[i % cols].push(x);
            }
            out
        }
        Some(match self {
            Values::F64(v) => split(v, cols).into_iter().map(Values::F64).collect(),
            Values::I64(v) => split(v, cols).into_iter().map(Values::I64).collect(),
            Values::Bool(v) => split(v, cols).into_iter().map(Values::Bool).collect(),
            Values::Str(v) => split(v, cols).into_iter().map(Values::Str).collect(),
        })
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

    /// Appends `other`'s rows if it has the same columns in the same order
    /// with values that fit; returns whether it did. All or nothing: a
    /// mismatch in any column leaves this table as it was.
    pub fn append(&mut self, other: &Table) -> bool {
        if self.columns.is_empty() {
            *self = other.clone();
            return true;
        }
        let fits = self.columns.len() == other.columns.len()
            && self
                .columns
                .iter()
                .zip(&other.columns)
                .all(|(a, b)| a.name == b.name && a.values.can_extend(&b.values));
        if fits {
            for (a, b) in self.columns.iter_mut().zip(&other.columns) {
                a.values.extend(&b.values);
            }
        }
        fits
    }

    /// Builds a table from JSON rows of values under `names`, inferring
    /// each column's type from its values. `what` names the input in errors.
    pub fn from_rows(names: &[String], rows: &[Vec<Value>], what: &str) -> Result<Table, String> {
        if let Some((r, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != names.len())
        {
            return Err(format!(
                "{what}: row {r} has {} values, expected {} (one per column)",
                row.len(),
                names.len()
            ));
        }
        let mut columns = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let cells: Vec<&Value> = rows.iter().map(|row| &row[i]).collect();
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
/// unless one is fractional or too large), all booleans, or all strings.
pub fn column_from_json(cells: &[&Value]) -> Result<Values, String> {
    if cells.iter().all(|c| c.is_i64()) {
        return Ok(Values::I64(
            cells.iter().filter_map(|c| c.as_i64()).collect(),
        ));
    }
    if cells.iter().all(|c| c.is_number()) {
        return Ok(Values::F64(
            cells.iter().filter_map(|c| c.as_f64()).collect(),
        ));
    }
    if cells.iter().all(|c| c.is_boolean()) {
        return Ok(Values::Bool(
            cells.iter().filter_map(|c| c.as_bool()).collect(),
        ));
    }
    if cells.iter().all(|c| c.is_string()) {
        return Ok(Values::Str(
            cells
                .iter()
                .filter_map(|c| c.as_str())
                .map(str::to_string)
                .collect(),
        ));
    }
    if let Some(bad) = cells
        .iter()
        .find(|c| !(c.is_number() || c.is_string() || c.is_boolean()))
    {
        let mut text = bad.to_string();
        if text.len() > 80 {
            text.truncate(text.floor_char_boundary(77));
            text.push_str("...");
        }
        return Err(format!("unsupported value {text}"));
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
    /// Values per row (1 for a 1-D prediction; 0 if a later dimension is 0).
    pub fn row_width(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Checks that this answers `rows` rows: the first dimension is
    /// `rows`, each row has at least one value, and there are exactly as
    /// many values as the shape says. Worker output is checked like any
    /// other input, so nothing later can index out of range.
    pub fn check(&self, rows: usize) -> Result<(), String> {
        let width = self.row_width();
        if self.shape.first() != Some(&rows) {
            return Err(format!(
                "the model returned shape {:?} for {rows} rows",
                self.shape
            ));
        }
        if width == 0 && rows > 0 {
            return Err(format!(
                "the model returned no values per row (shape {:?})",
                self.shape
            ));
        }
        if rows.checked_mul(width) != Some(self.values.len()) {
            return Err(format!(
                "the model returned {} values for shape {:?}",
                self.values.len(),
                self.shape
            ));
        }
        Ok(())
    }

    /// Rows `start..start+rows` as their own prediction, or `None` if they
    /// are not all there.
    pub fn slice(&self, start: usize, rows: usize) -> Option<Prediction> {
        let w = self.row_width();
        let a = start.checked_mul(w)?;
        let b = start.checked_add(rows)?.checked_mul(w)?;
        let values = self.values.range(a, b)?;
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        Some(Prediction { shape, values })
    }

    /// Per-row JSON: scalars for a 1-D prediction, arrays for 2-D.
    pub fn rows_json(&self) -> Vec<Value> {
        let flat = self.values.to_json();
        if self.shape.len() <= 1 {
            return flat;
        }
        match self.row_width() {
            0 => vec![Value::Array(Vec::new()); self.shape.first().copied().unwrap_or(0)],
            w => flat.chunks(w).map(|c| Value::Array(c.to_vec())).collect(),
        }
    }

    /// The columns of a `[rows, width]` prediction, each a 1-D prediction.
    pub fn into_columns(self) -> Option<Vec<Prediction>> {
        let rows = *self.shape.first()?;
        let width = self.row_width();
        let columns = self.values.into_columns(rows, width)?;
        Some(
            columns
                .into_iter()
                .map(|values| Prediction {
                    shape: vec![rows],
                    values,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, values: Values) -> Column {
        Column {
            name: name.into(),
            values,
        }
    }

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
        // A u64 beyond i64 is not silently clamped: the column is floats.
        let big = Table::from_rows(
            &names[..1],
            &[vec![Value::from(u64::MAX)], vec![Value::from(1)]],
            "input",
        )
        .unwrap();
        assert!(matches!(big.columns[0].values, Values::F64(_)));
    }

    #[test]
    fn append_is_all_or_nothing() {
        let mut t = Table {
            columns: vec![
                col("a", Values::F64(vec![1.0])),
                col("b", Values::I64(vec![2])),
            ],
        };
        let before = t.clone();
        // The first column fits, the second does not: nothing changes.
        let bad = Table {
            columns: vec![
                col("a", Values::F64(vec![3.0])),
                col("b", Values::Str(vec!["x".into()])),
            ],
        };
        assert!(!t.append(&bad));
        assert_eq!(t, before);
        let renamed = Table {
            columns: vec![
                col("a", Values::F64(vec![3.0])),
                col("c", Values::I64(vec![4])),
            ],
        };
        assert!(!t.append(&renamed));
        assert_eq!(t, before);
        let fewer = Table {
            columns: vec![col("a", Values::F64(vec![3.0]))],
        };
        assert!(!t.append(&fewer));
        assert_eq!(t, before);
        // Integers widen into a float column.
        let good = Table {
            columns: vec![
                col("a", Values::I64(vec![3])),
                col("b", Values::I64(vec![4])),
            ],
        };
        assert!(t.append(&good));
        assert_eq!(t.columns[0].values, Values::F64(vec![1.0, 3.0]));
        assert_eq!(t.columns[1].values, Values::I64(vec![2, 4]));
        assert_eq!(t.rows(), 2);
        let mut empty = Table::default();
        assert!(empty.append(&good));
        assert_eq!(empty, good);
    }

    #[test]
    fn predictions_are_checked_and_sliced_safely() {
        let p = Prediction {
            shape: vec![2, 2],
            values: Values::F64(vec![1.0, 2.0, 3.0, 4.0]),
        };
        assert!(p.check(2).is_ok());
        assert!(p.check(3).unwrap_err().contains("for 3 rows"));
        assert_eq!(p.slice(1, 1).unwrap().values, Values::F64(vec![3.0, 4.0]));
        assert_eq!(p.slice(1, 2), None);
        assert_eq!(p.rows_json()[0], serde_json::json!([1.0, 2.0]));
        assert_eq!(
            p.clone().into_columns().unwrap()[1].values,
            Values::F64(vec![2.0, 4.0])
        );
        // [n, 0]: no values per row, refused, and slicing never panics.
        let empty = Prediction {
            shape: vec![3, 0],
            values: Values::F64(vec![]),
        };
        assert!(empty.check(3).unwrap_err().contains("no values per row"));
        assert_eq!(empty.slice(1, 1).unwrap().values, Values::F64(vec![]));
        assert_eq!(empty.rows_json().len(), 3);
        let short = Prediction {
            shape: vec![2],
            values: Values::I64(vec![1]),
        };
        assert!(short.check(2).unwrap_err().contains("1 values"));
        assert_eq!(short.slice(1, 1), None);
    }

    #[test]
    fn values_convert_and_round_trip_through_json() {
        let f = Values::F64(vec![1.0, 2.5, f64::NAN]);
        assert_eq!(
            f.to_json(),
            vec![Value::from(1.0), Value::from(2.5), Value::Null]
        );
        assert_eq!(
            Values::I64(vec![1, 2]).coerce(Storage::F64),
            Some(Values::F64(vec![1.0, 2.0]))
        );
        assert_eq!(
            Values::F64(vec![1.0, 2.0]).coerce(Storage::I64),
            Some(Values::I64(vec![1, 2]))
        );
        assert_eq!(Values::F64(vec![1.5]).coerce(Storage::I64), None);
        assert_eq!(Values::F64(vec![1e300]).coerce(Storage::I64), None);
        assert_eq!(Values::Str(vec!["1".into()]).coerce(Storage::F64), None);
        for v in [
            Values::F64(vec![1.0, -2.5]),
            Values::I64(vec![3, -4]),
            Values::Bool(vec![true, false]),
            Values::Str(vec!["a".into(), "é".into()]),
        ] {
            let json = v.to_json();
            let cells: Vec<&Value> = json.iter().collect();
            let back = column_from_json(&cells).unwrap();
            assert_eq!(back, v);
        }
        let cols = Values::I64(vec![1, 2, 3, 4, 5, 6])
            .into_columns(3, 2)
            .unwrap();
        assert_eq!(
            cols,
            vec![Values::I64(vec![1, 3, 5]), Values::I64(vec![2, 4, 6])]
        );
        assert_eq!(Values::I64(vec![1]).into_columns(2, 2), None);
        assert_eq!(Values::I64(vec![]).into_columns(usize::MAX, 2), None);
    }
}
