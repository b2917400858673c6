//! A model's signature (its input and output columns or tensors) and the
//! one table of element types every protocol maps through.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One column or tensor of a signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TensorSpec {
    /// Name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Element type as the toolchain recorded it (`double`, `long`,
    /// `string`, numpy's `float64`, …); see [`DataType::from_signature`].
    pub datatype: String,
    /// Shape; empty for a column.
    pub shape: Vec<i64>,
    /// Whether it may be omitted.
    pub optional: bool,
}

impl TensorSpec {
    /// The element type, if it is one the server knows.
    pub fn data_type(&self) -> Option<DataType> {
        DataType::from_signature(&self.datatype)
    }
}

/// A model's inputs and outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Signature {
    /// Inputs.
    pub inputs: Vec<TensorSpec>,
    /// Outputs.
    pub outputs: Vec<TensorSpec>,
}

/// How a column's values are held in memory and on the wire to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Storage {
    /// 64-bit float.
    F64 = 1,
    /// 64-bit signed integer.
    I64 = 2,
    /// Boolean.
    Bool = 3,
    /// UTF-8 string.
    Str = 4,
}

impl Storage {
    /// The storage of a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Storage::F64,
            2 => Storage::I64,
            3 => Storage::Bool,
            4 => Storage::Str,
            _ => return None,
        })
    }
}

/// An element type: the Open Inference Protocol's list, which every other
/// spelling (MLflow's column types, numpy dtypes) maps onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `BOOL`.
    Bool,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `FP16`.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES` (strings).
    Bytes,
}

/// Every type, in the order error messages list them.
const ALL: [DataType; 13] = [
    DataType::Bool,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Fp16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
];

impl DataType {
    /// The OIP name (`FP64`, `INT32`, `BYTES`, …).
    pub fn oip_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses an OIP name.
    pub fn from_oip(name: &str) -> Option<Self> {
        ALL.into_iter().find(|t| t.oip_name() == name)
    }

    /// All OIP names, for error messages.
    pub fn oip_names() -> String {
        ALL.map(DataType::oip_name).join(", ")
    }

    /// Maps a signature's type: MLflow's column types (`double`, `float`,
    /// `long`, `integer`, `boolean`, `string`) and numpy dtypes (`float64`,
    /// `int32`, `uint8`, `bool`, `str`, `object`). Types the server cannot
    /// check (`binary`, `datetime`) give `None` and pass unchecked.
    pub fn from_signature(name: &str) -> Option<Self> {
        Some(match name {
            "double" | "float64" => DataType::Fp64,
            "float" | "float32" => DataType::Fp32,
            "float16" => DataType::Fp16,
            "long" | "int64" => DataType::Int64,
            "integer" | "int32" => DataType::Int32,
            "int16" => DataType::Int16,
            "int8" => DataType::Int8,
            "uint64" => DataType::Uint64,
            "uint32" => DataType::Uint32,
            "uint16" => DataType::Uint16,
            "uint8" => DataType::Uint8,
            "boolean" | "bool" => DataType::Bool,
            "string" | "str" | "object" => DataType::Bytes,
            _ => return None,
        })
    }

    /// How values of this type are held.
    pub fn storage(self) -> Storage {
        match self {
            DataType::Bool => Storage::Bool,
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => Storage::F64,
            DataType::Bytes => Storage::Str,
            _ => Storage::I64,
        }
    }

    /// The type values of `storage` are answered as.
    pub fn of_storage(storage: Storage) -> Self {
        match storage {
            Storage::F64 => DataType::Fp64,
            Storage::I64 => DataType::Int64,
            Storage::Bool => DataType::Bool,
            Storage::Str => DataType::Bytes,
        }
    }

    /// Bytes per element in Triton's binary tensor layout; `None` for
    /// `BYTES`, whose elements carry their own length.
    pub fn byte_width(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Int8 | DataType::Uint8 => Some(1),
            DataType::Int16 | DataType::Uint16 | DataType::Fp16 => Some(2),
            DataType::Int32 | DataType::Uint32 | DataType::Fp32 => Some(4),
            DataType::Int64 | DataType::Uint64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// The range an integer type holds (within `i64`, how integers are
    /// kept); `None` for the others.
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            DataType::Int64 => (i64::MIN, i64::MAX),
            DataType::Uint8 => (0, u8::MAX.into()),
            DataType::Uint16 => (0, u16::MAX.into()),
            DataType::Uint32 => (0, u32::MAX.into()),
            DataType::Uint64 => (0, i64::MAX),
            _ => return None,
        })
    }

    /// The JSON Schema type of one value.
    pub fn json_schema_type(self) -> &'static str {
        match self.storage() {
            Storage::F64 => "number",
            Storage::I64 => "integer",
            Storage::Bool => "boolean",
            Storage::Str => "string",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.oip_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_map_onto_one_table() {
        for t in ALL {
            assert_eq!(DataType::from_oip(t.oip_name()), Some(t));
            assert_eq!(Storage::from_code(t.storage() as u8), Some(t.storage()));
        }
        assert_eq!(DataType::from_oip("FP128"), None);
        assert_eq!(DataType::from_signature("double"), Some(DataType::Fp64));
        assert_eq!(DataType::from_signature("float32"), Some(DataType::Fp32));
        assert_eq!(DataType::from_signature("long"), Some(DataType::Int64));
        assert_eq!(DataType::from_signature("string"), Some(DataType::Bytes));
        assert_eq!(DataType::from_signature("datetime"), None);
        assert_eq!(DataType::Int8.int_range(), Some((-128, 127)));
        assert_eq!(DataType::Fp32.byte_width(), Some(4));
        assert_eq!(DataType::Bytes.byte_width(), None);
        assert_eq!(DataType::Int32.json_schema_type(), "integer");
    }
}
