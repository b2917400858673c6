//! `legion batch` end to end with real Python: a model trained by the
//! python toolchain scores a CSV through contract 0.2.0's `batch`
//! interface, and its predictions match the model's own `predict`; and
//! the ways a batch job is refused or fails, each named, the failed job's
//! log kept.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{plugin, train_iris, Legion};
use serde_json::Value;

const COLUMNS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// 30 rows spread over the iris ranges (not the training rows).
fn rows_csv(dir: &Path) -> PathBuf {
    let mut text = COLUMNS.join(",") + "\n";
    for i in 0..30 {
        let f = i as f64;
        text += &format!(
            "{:.2},{:.2},{:.2},{:.2}\n",
            4.3 + (f * 0.12) % 3.6,
            2.0 + (f * 0.07) % 2.4,
            1.0 + (f * 0.21) % 5.9,
            0.1 + (f * 0.083) % 2.4
        );
    }
    let path = dir.join("rows.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn batch(l: &Legion, args: &[&str]) -> Value {
    let mut all = vec!["batch"];
    all.extend_from_slice(args);
    l.json(&all)
}

/// The python the batch job ran with: its log names the environment.
fn job_python(log: &str) -> PathBuf {
    let line = log
        .lines()
        .find(|l| l.contains("python environment "))
        .unwrap_or_else(|| panic!("no environment in the log:\n{log}"));
    let dir = line
        .split("python environment ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    PathBuf::from(dir).join("bin/python")
}

#[test]
fn a_batch_job_scores_a_csv_as_the_models_own_predict_does() {
    let l = Legion::new();
    train_iris(&l);
    let data = tempfile::tempdir().unwrap();
    let csv = rows_csv(data.path());
    let out = data.path().join("scored");
    let report = batch(
        &l,
        &[
            "iris:1",
            "--data",
            csv.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--arg",
            "prediction-column=species",
        ],
    );
    assert_eq!(report["model"], "iris:1");
    assert_eq!(report["toolchain"], "python");
    assert_eq!(report["files"], serde_json::json!(["rows.csv"]));
    let log_path = PathBuf::from(report["log"].as_str().unwrap());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("scored 30 rows of rows.csv"), "{log}");

    // The model's own predict, in the job's environment, on the same rows.
    let model = log_path.parent().unwrap().join("model/model.pkl");
    let expected = Command::new(job_python(&log))
        .arg("-c")
        .arg("import pickle, sys, pandas as pd\nm = pickle.load(open(sys.argv[1], 'rb'))\nprint('\\n'.join(str(int(p)) for p in m.predict(pd.read_csv(sys.argv[2]))))")
        .arg(&model)
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        expected.status.success(),
        "{}",
        String::from_utf8_lossy(&expected.stderr)
    );
    let expected: Vec<String> = String::from_utf8_lossy(&expected.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(expected.len(), 30);

    let scored = std::fs::read_to_string(out.join("rows.csv")).unwrap();
    let mut lines = scored.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, [&COLUMNS[..], &["species"]].concat());
    let input: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    let (mut got, mut kept) = (Vec::new(), Vec::new());
    for line in lines {
        let (features, species) = line.rsplit_once(',').unwrap();
        kept.push(
            features
                .split(',')
                .map(|v| v.parse::<f64>().unwrap())
                .collect::<Vec<_>>(),
        );
        got.push(species.to_string());
    }
    assert_eq!(
        got, expected,
        "batch predictions differ from the model's own"
    );
    let given: Vec<Vec<f64>> = input
        .iter()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        kept, given,
        "the input rows are kept beside their predictions"
    );
    // Not all one class: the rows span the species.
    got.sort();
    got.dedup();
    assert!(got.len() > 1, "{got:?}");
}

#[test]
fn batch_jobs_are_refused_or_fail_by_name_and_keep_their_log() {
    let l = Legion::new();
    train_iris(&l);
    let data = tempfile::tempdir().unwrap();
    let csv = rows_csv(data.path());
    let out = data.path().join("out");
    let (csv, out) = (csv.to_str().unwrap(), out.to_str().unwrap());

    // A value outside the declared choice: refused before any job exists.
    let jobs = |l: &Legion| {
        std::fs::read_dir(l.home.path().join("runs"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("batch-"))
                    .count()
            })
            .unwrap_or(0)
    };
    let err = l.fails(&[
        "batch",
        "iris:1",
        "--data",
        csv,
        "--output",
        out,
        "--arg",
        "output-format=xml",
    ]);
    assert!(
        err.contains("--arg output-format") && err.contains("one of csv, jsonl"),
        "{err}"
    );
    assert_eq!(jobs(&l), 0);

    // A toolchain without the batch interface (a 0.1.0 plugin cannot have one).
    l.ok(&[
        "toolchain",
        "add",
        plugin("contract-v0-1").to_str().unwrap(),
        "--name",
        "old",
    ]);
    let err = l.fails(&[
        "batch", "iris:1", "-t", "old", "--data", csv, "--output", out,
    ]);
    assert!(
        err.contains("does not export `batch`") && err.contains("legion:toolchain@0.1.0"),
        "{err}"
    );

    // Unknown model; output that is not a folder here.
    let err = l.fails(&["batch", "nope:1", "--data", csv, "--output", out]);
    assert!(err.contains("nope"), "{err}");
    let err = l.fails(&[
        "batch",
        "iris:1",
        "--data",
        csv,
        "--output",
        "s3://bucket/x",
    ]);
    assert!(
        err.contains("--output") && err.contains("s3://bucket/x"),
        "{err}"
    );

    // Data the model cannot score: the step fails, the log stays and is named.
    let bad = data.path().join("bad.csv");
    std::fs::write(&bad, "colour,size\nred,3\n").unwrap();
    let err = l.fails(&[
        "batch",
        "iris:1",
        "--data",
        bad.to_str().unwrap(),
        "--output",
        out,
    ]);
    assert!(err.contains("step 'score'"), "{err}");
    let log = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("its log: "))
        .unwrap_or_else(|| panic!("no log named:\n{err}"));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("feature names") || log.contains("colour"),
        "{log}"
    );
    assert!(!Path::new(out).join("bad.csv").exists());
    assert_eq!(jobs(&l), 1, "the failed job's folder stays");

    // jsonl output, the data placed under a name of the caller's.
    let report = batch(
        &l,
        &[
            "iris:1",
            "--data",
            &format!("file://{csv}=in/part-1.csv"),
            "--output",
            out,
            "--arg",
            "output-format=jsonl",
        ],
    );
    assert_eq!(report["files"], serde_json::json!(["in/part-1.jsonl"]));
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(Path::new(out).join("in/part-1.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(first["prediction"].is_i64(), "{first}");
}
