"""Legion python toolchain: score data with a stored model (a batch job).

Run by the step the toolchain plans (the script is $LEGION_BATCH_SCRIPT). Reads every
.csv and .jsonl file under $LEGION_DATA_DIR, loads the model the way the
model server does for its flavor, and writes each file's rows with the
model's predictions beside them to the same relative path under
$LEGION_OUTPUT_DIR. Environment:

  LEGION_BATCH_MODEL   the stored model's files ($LEGION_MODEL_DIR)
  LEGION_BATCH_FLAVOR  sklearn | legion.python | python_function
  LEGION_BATCH_COLUMN  name of the prediction column (several outputs:
                       NAME_0, NAME_1, ...)
  LEGION_BATCH_FORMAT  csv | jsonl: the output files' format
"""
import os
import sys

import pandas as pd

model_dir = os.environ["LEGION_BATCH_MODEL"]
flavor = os.environ["LEGION_BATCH_FLAVOR"]
column = os.environ.get("LEGION_BATCH_COLUMN", "prediction")
fmt = os.environ.get("LEGION_BATCH_FORMAT", "csv")
data_dir = os.environ["LEGION_DATA_DIR"]
out_dir = os.environ["LEGION_OUTPUT_DIR"]


def load():
    if flavor == "sklearn":
        for name in ("model.pkl", "model.joblib"):
            path = os.path.join(model_dir, name)
            if os.path.isfile(path):
                if name.endswith(".joblib"):
                    import joblib

                    return joblib.load(path).predict
                import pickle

                with open(path, "rb") as f:
                    return pickle.load(f).predict
        sys.exit("no model.pkl or model.joblib in " + model_dir)
    if flavor == "legion.python":
        import importlib.util

        spec = importlib.util.spec_from_file_location("legion_model_predict", os.path.join(model_dir, "predict.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        state = module.load(model_dir)
        return lambda frame: module.predict(state, frame)
    if flavor == "python_function":
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(model_dir).predict
    sys.exit("the python toolchain cannot score a model of flavor " + repr(flavor))


def inputs():
    for root, _, files in os.walk(data_dir):
        for name in sorted(files):
            if name.endswith((".csv", ".jsonl")):
                yield os.path.join(root, name)


def read(path):
    if path.endswith(".jsonl"):
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


predict = load()
paths = sorted(inputs())
if not paths:
    sys.exit("no .csv or .jsonl file under $LEGION_DATA_DIR to score")
total = 0
for path in paths:
    frame = read(path)
    predictions = predict(frame)
    if isinstance(predictions, pd.DataFrame):
        predictions = predictions.to_numpy()
    out = frame.copy()
    shape = getattr(predictions, "shape", (len(frame),))
    if len(shape) > 1 and shape[1] > 1:
        for i in range(shape[1]):
            out[f"{column}_{i}"] = predictions[:, i]
    else:
        out[column] = list(predictions.reshape(-1) if hasattr(predictions, "reshape") else predictions)
    rel = os.path.relpath(path, data_dir)
    base = rel.rsplit(".", 1)[0]
    dest = os.path.join(out_dir, base + (".jsonl" if fmt == "jsonl" else ".csv"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if fmt == "jsonl":
        out.to_json(dest, orient="records", lines=True)
    else:
        out.to_csv(dest, index=False)
    total += len(frame)
    print(f"scored {len(frame)} rows of {rel} -> {os.path.relpath(dest, out_dir)}")
print(f"scored {total} rows in {len(paths)} files")
