//! The binary frames that carry tables to the Python workers and
//! predictions back.
//!
//! Frames (all integers little-endian), after a `u32` length prefix:
//!
//! ```text
//! request  u8 kind=1 | u64 batch | u32 rows | u16 cols | cols × (u16 len, name, u8 storage)
//!          | cols × column data
//! ready    u8 kind=0 | u32 len | JSON {"flavor", "loader", …}
//! result   u8 kind=2 | u64 batch | u8 storage | u8 ndim | ndim × u32 dim | data
//! error    u8 kind=3 | u64 batch | u32 len | UTF-8 message   (batch 0 before ready: the load failed)
//! data     f64/i64: 8 bytes each; bool: 1 byte each; str: u32 len + UTF-8 each
//! ```
//!
//! Numeric columns cross as raw arrays that numpy maps without parsing:
//! the point of not using JSON between the front and the workers.

use serde_json::Value;

use crate::signature::Storage;
use crate::table::{Prediction, Table, Values};

/// A frame from a worker that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// It ends before its contents do.
    #[error("truncated frame")]
    Truncated,
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// An unknown storage code in a result.
    #[error("unknown result storage code {0}")]
    UnknownStorage(u8),
    /// A result shape whose element count overflows.
    #[error("result shape {0:?} is too large")]
    ShapeTooLarge(Vec<usize>),
    /// A ready frame whose JSON does not parse.
    #[error("ready frame: {0}")]
    ReadyJson(String),
}

/// A frame from a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerFrame {
    /// The model is loaded; JSON facts about it.
    Ready(Value),
    /// A batch's prediction.
    Result(u64, Prediction),
    /// A batch failed in `predict` (batch 0 before ready: loading failed).
    Error(u64, String),
}

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
        out.push(c.values.storage() as u8);
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

/// A cursor over a frame that never reads past its end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(FrameError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        self.take(N)?.try_into().map_err(|_| FrameError::Truncated)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Decodes a worker frame (without the length prefix). Worker output is
/// checked like any other input: a malformed frame is an error, never a panic.
pub fn decode_worker_frame(buf: &[u8]) -> Result<WorkerFrame, FrameError> {
    let mut r = Reader::new(buf);
    match r.u8()? {
        0 => {
            let n = r.u32()? as usize;
            let text = r.take(n)?;
            Ok(WorkerFrame::Ready(
                serde_json::from_slice(text).map_err(|e| FrameError::ReadyJson(e.to_string()))?,
            ))
        }
        2 => {
            let batch = r.u64()?;
            let code = r.u8()?;
            let storage = Storage::from_code(code).ok_or(FrameError::UnknownStorage(code))?;
            let ndim = r.u8()? as usize;
            let mut shape = Vec::with_capacity(ndim);
            for _ in 0..ndim {
                shape.push(r.u32()? as usize);
            }
            let count = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&c| c.checked_mul(8).is_some())
                .ok_or_else(|| FrameError::ShapeTooLarge(shape.clone()))?;
            let values = match storage {
                Storage::F64 => Values::F64(
                    r.take(count * 8)?
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                ),
                Storage::I64 => Values::I64(
                    r.take(count * 8)?
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect(),
                ),
                Storage::Bool => Values::Bool(r.take(count)?.iter().map(|&b| b != 0).collect()),
                Storage::Str => {
                    // Each string takes at least its 4-byte length: a count
                    // the frame cannot hold is refused before allocating.
                    if count > buf.len() / 4 {
                        return Err(FrameError::Truncated);
                    }
                    let mut v = Vec::with_capacity(count);
                    for _ in 0..count {
                        let n = r.u32()? as usize;
                        v.push(String::from_utf8_lossy(r.take(n)?).into_owned());
                    }
                    Values::Str(v)
                }
            };
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
        k => Err(FrameError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result_frame(batch: u64, storage: Storage, shape: &[u32], data: &[u8]) -> Vec<u8> {
        let mut frame = vec![2u8];
        frame.extend_from_slice(&batch.to_le_bytes());
        frame.extend_from_slice(&[storage as u8, shape.len() as u8]);
        for d in shape {
            frame.extend_from_slice(&d.to_le_bytes());
        }
        frame.extend_from_slice(data);
        frame
    }

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let mut data = Vec::new();
        encode_values(&Values::F64(vec![1.0, 2.0, 3.0, 4.0]), &mut data);
        let frame = result_frame(7, Storage::F64, &[2, 2], &data);
        let WorkerFrame::Result(7, p) = decode_worker_frame(&frame).unwrap() else {
            panic!("not a result")
        };
        assert_eq!(p.shape, vec![2, 2]);
        assert_eq!(p.values, Values::F64(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(
            decode_worker_frame(&frame[..frame.len() - 3]),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode_worker_frame(&[9]), Err(FrameError::UnknownKind(9)));
        assert_eq!(decode_worker_frame(&[]), Err(FrameError::Truncated));
        let huge = result_frame(1, Storage::F64, &[u32::MAX, u32::MAX], &[]);
        assert!(decode_worker_frame(&huge).is_err());
        let strings = result_frame(1, Storage::Str, &[u32::MAX], &[]);
        assert_eq!(decode_worker_frame(&strings), Err(FrameError::Truncated));
        let mut s = Vec::new();
        encode_values(&Values::Str(vec!["a".into(), "bé".into()]), &mut s);
        let ok = result_frame(2, Storage::Str, &[2], &s);
        let WorkerFrame::Result(2, p) = decode_worker_frame(&ok).unwrap() else {
            panic!("not a result")
        };
        assert_eq!(p.values, Values::Str(vec!["a".into(), "bé".into()]));
    }

    #[test]
    fn request_frames_carry_names_storage_and_columns() {
        let table = Table {
            columns: vec![
                crate::table::Column {
                    name: "x".into(),
                    values: Values::I64(vec![1, 2]),
                },
                crate::table::Column {
                    name: "s".into(),
                    values: Values::Str(vec!["a".into(), "b".into()]),
                },
            ],
        };
        let f = encode_request(5, &table);
        let mut r = Reader::new(&f);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u64().unwrap(), 5);
        assert_eq!(r.u32().unwrap(), 2);
        assert_eq!(u16::from_le_bytes(r.array().unwrap()), 2);
        assert_eq!(u16::from_le_bytes(r.array().unwrap()), 1);
        assert_eq!(r.take(1).unwrap(), b"x");
        assert_eq!(r.u8().unwrap(), Storage::I64 as u8);
    }
}
