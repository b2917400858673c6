//! The front's own cost per request, by protocol: parse the body, fit it to
//! the signature, and build the response for a one-row prediction of the
//! wine model (11 float columns). On one core the front shares with the
//! Python worker, every microsecond here is a microsecond less of
//! `predict`, so the V2 path must cost no more than `/invocations`.
//!
//!   cargo bench -p legion-serve --bench protocols

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use legion_serve::protocol::{conform, legion, mlflow, oip};
use legion_serve::signature::{Signature, TensorSpec};
use legion_serve::table::{Prediction, Values};
use serde_json::{json, Value};

const COLUMNS: [&str; 11] = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "free_sulfur_dioxide",
    "total_sulfur_dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
];
const ROW: [f64; 11] = [
    8.81, 0.44, 0.31, 2.81, 0.102, 17.75, 36.3, 0.9963, 3.11, 0.768, 8.62,
];

fn signature() -> Signature {
    let col = |n: &str| TensorSpec {
        name: Some(n.into()),
        datatype: "double".into(),
        shape: vec![],
        optional: false,
    };
    Signature {
        inputs: COLUMNS.iter().map(|c| col(c)).collect(),
        outputs: vec![TensorSpec {
            name: None,
            datatype: "float64".into(),
            shape: vec![-1],
            optional: false,
        }],
    }
}

fn bodies(rows: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let data: Vec<Vec<f64>> = (0..rows).map(|_| ROW.to_vec()).collect();
    let split = json!({"dataframe_split": {"columns": COLUMNS, "data": data}});
    let v2 = json!({"parameters": {"content_type": "pd"}, "inputs": COLUMNS.iter().enumerate().map(|(i, c)| json!({
        "name": c, "shape": [rows], "datatype": "FP64", "data": data.iter().map(|r| r[i]).collect::<Vec<_>>()
    })).collect::<Vec<_>>()});
    let legion = json!({"columns": COLUMNS, "data": data});
    (
        serde_json::to_vec(&split).unwrap(),
        serde_json::to_vec(&v2).unwrap(),
        serde_json::to_vec(&legion).unwrap(),
    )
}

fn bench(c: &mut Criterion) {
    let sig = signature();
    for rows in [1usize, 100] {
        let (split, v2, leg) = bodies(rows);
        let p = Prediction {
            shape: vec![rows],
            values: Values::F64(vec![5.1; rows]),
        };
        c.bench_function(&format!("mlflow dataframe_split, {rows} rows"), |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&split)).unwrap();
                let t =
                    conform(mlflow::parse_json_body(&v, Some(&sig)).unwrap(), Some(&sig)).unwrap();
                black_box(t);
                serde_json::to_vec(&mlflow::response(&p)).unwrap()
            })
        });
        c.bench_function(&format!("oip v2, {rows} rows"), |b| {
            b.iter(|| {
                let req = oip::parse_body(black_box(&v2), &[], Some(&sig)).unwrap();
                let t = conform(req.table, Some(&sig)).unwrap();
                black_box(t);
                let (r, _) =
                    oip::response("wine", "1", "id", p.clone(), Some(&sig), &req.wanted).unwrap();
                serde_json::to_vec(&r).unwrap()
            })
        });
        c.bench_function(&format!("legion invoke, {rows} rows"), |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&leg)).unwrap();
                let t = conform(legion::parse_request(&v).unwrap(), Some(&sig)).unwrap();
                black_box(t);
                serde_json::to_vec(&legion::response(&p, Some(&sig))).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
