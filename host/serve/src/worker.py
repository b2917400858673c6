"""Legion model worker: loads one model and answers prediction batches.

Started by `legion-serve` as `python -c SCRIPT MODEL_DIR FLAVOR`. It reads
request frames on stdin and writes frames on the stdout it was given;
anything the model prints goes to stderr, so it can never corrupt the frame
stream. The frame layout is in host/serve/src/frame.rs.

Start-up time is the server's time to ready, so nothing is imported before
it is needed: a scikit-learn model whose columns match its fitted ones is
fed a plain numpy array and never imports pandas.
"""
import json
import os
import struct
import sys

import numpy as np

F64, I64, BOOL, STR = 1, 2, 3, 4


class Frame:
    """A request's columns, in order, as numpy arrays (or lists of str).
    `to_pandas()` makes the DataFrame that models other than the fast path
    are given; it is the only place pandas is imported."""

    def __init__(self, names, data):
        self.columns = names
        self.data = data

    def all_float(self):
        return all(getattr(self.data[n], "dtype", None) == np.float64 for n in self.columns)

    def to_numpy(self):
        return np.column_stack([self.data[n] for n in self.columns])

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.data, columns=self.columns)


def pandas_predict(predict):
    return lambda frame: predict(frame.to_pandas())


def sklearn_flavor(model_dir):
    """The MLmodel's sklearn flavor, if it has one with its model file."""
    try:
        import yaml

        with open(os.path.join(model_dir, "MLmodel")) as f:
            meta = yaml.safe_load(f) or {}
    except Exception:  # no PyYAML or no MLmodel: not the fast path
        return None
    sk = (meta.get("flavors") or {}).get("sklearn") or {}
    name = sk.get("pickled_model")
    if name and os.path.isfile(os.path.join(model_dir, name)):
        return sk
    return None


def load_sklearn(model_dir, sk):
    """Loads an MLflow scikit-learn model as its flavor says: skops (with
    the trusted types MLflow recorded), cloudpickle or pickle."""
    path = os.path.join(model_dir, sk["pickled_model"])
    fmt = sk.get("serialization_format", "cloudpickle")
    if fmt == "skops":
        import skops.io

        return fmt, skops.io.load(path, trusted=sk.get("skops_trusted_types") or [])
    if fmt == "cloudpickle":
        import cloudpickle

        with open(path, "rb") as f:
            return fmt, cloudpickle.load(f)
    import pickle

    with open(path, "rb") as f:
        return fmt, pickle.load(f)


def cache_path(model_dir):
    """Where `legion serve` keeps a pickle of an estimator it loaded once
    through skops: beside the model folder, in the serving folder only the
    host writes. skops checks types as it loads; the pickle is made from
    that checked object, and loading it skips skops scanning all of
    scikit-learn (seconds)."""
    return os.path.join(os.path.dirname(os.path.abspath(model_dir)), "cache", "sklearn.pkl")


def load(model_dir, flavor):
    """Returns (loader name, predict(Frame) -> array-like)."""
    if flavor == "python_function":
        sk = sklearn_flavor(model_dir)
        if sk is not None:
            # Fast path: a scikit-learn model loads without importing MLflow.
            cached = cache_path(model_dir)
            if os.path.isfile(cached):
                import pickle

                with open(cached, "rb") as f:
                    return "sklearn (fast path, cached)", array_predict(pickle.load(f))
            fmt, model = load_sklearn(model_dir, sk)
            return "sklearn (fast path, " + fmt + ")", array_predict(model)
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(model_dir)
        return "mlflow.pyfunc", pandas_predict(model.predict)
    if flavor == "sklearn":
        for name in ("model.pkl", "model.joblib"):
            path = os.path.join(model_dir, name)
            if os.path.isfile(path):
                if name.endswith(".joblib"):
                    import joblib

                    model = joblib.load(path)
                else:
                    import pickle

                    with open(path, "rb") as f:
                        model = pickle.load(f)
                return "sklearn (" + name + ")", array_predict(model)
        raise RuntimeError("no model.pkl or model.joblib in " + model_dir)
    if flavor == "legion.python":
        import importlib.util

        path = os.path.join(model_dir, "predict.py")
        if not os.path.isfile(path):
            raise RuntimeError("a legion.python model needs predict.py with load(dir) and predict(state, frame); " + model_dir + " has none")
        spec = importlib.util.spec_from_file_location("legion_model_predict", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        state = module.load(model_dir)
        return "predict.py", lambda frame: module.predict(state, frame.to_pandas())
    raise RuntimeError("unknown model flavor " + repr(flavor))


def array_predict(model):
    """predict() on a plain array when the frame's columns are exactly the
    ones the estimator was fitted with, in order, and all floats: it skips
    pandas (and its import) and the estimator's feature-name check on
    every call. Anything else goes through a DataFrame as usual."""
    import warnings

    names = list(getattr(model, "feature_names_in_", []))

    def predict(frame):
        if names and list(frame.columns) == names and frame.all_float():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return model.predict(frame.to_numpy())
        return model.predict(frame.to_pandas())

    return predict


def read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def decode_request(buf):
    kind = buf[0]
    if kind != 1:
        raise ValueError("unexpected frame kind %d" % kind)
    batch, rows, ncols = struct.unpack_from("<QIH", buf, 1)
    pos = 15
    cols = []
    for _ in range(ncols):
        (n,) = struct.unpack_from("<H", buf, pos)
        pos += 2
        name = buf[pos:pos + n].decode()
        pos += n
        cols.append((name, buf[pos]))
        pos += 1
    data = {}
    for name, dtype in cols:
        if dtype == F64:
            data[name] = np.frombuffer(buf, dtype="<f8", count=rows, offset=pos)
            pos += 8 * rows
        elif dtype == I64:
            data[name] = np.frombuffer(buf, dtype="<i8", count=rows, offset=pos)
            pos += 8 * rows
        elif dtype == BOOL:
            data[name] = np.frombuffer(buf, dtype=np.bool_, count=rows, offset=pos)
            pos += rows
        else:
            values = []
            for _ in range(rows):
                (n,) = struct.unpack_from("<I", buf, pos)
                pos += 4
                values.append(buf[pos:pos + n].decode())
                pos += n
            data[name] = values
    return batch, Frame([c for c, _ in cols], data)


def encode_result(batch, prediction):
    if hasattr(prediction, "to_numpy"):  # a pandas DataFrame or Series
        prediction = prediction.to_numpy()
    arr = np.asarray(prediction)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    head = struct.pack("<BQ", 2, batch)
    if arr.dtype.kind == "f":
        body = struct.pack("<BB", F64, arr.ndim) + struct.pack("<%dI" % arr.ndim, *arr.shape)
        body += np.ascontiguousarray(arr, dtype="<f8").tobytes()
    elif arr.dtype.kind in "iu":
        body = struct.pack("<BB", I64, arr.ndim) + struct.pack("<%dI" % arr.ndim, *arr.shape)
        body += np.ascontiguousarray(arr, dtype="<i8").tobytes()
    elif arr.dtype.kind == "b":
        body = struct.pack("<BB", BOOL, arr.ndim) + struct.pack("<%dI" % arr.ndim, *arr.shape)
        body += np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    else:
        parts = [struct.pack("<BB", STR, arr.ndim), struct.pack("<%dI" % arr.ndim, *arr.shape)]
        for v in arr.reshape(-1):
            b = str(v).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        body = b"".join(parts)
    return head + body


def write_cache(model_dir):
    """`--cache MODEL_DIR`: loads an MLflow scikit-learn model stored with
    skops and writes the pickle `load` prefers. Exit 0 when written, 3 when
    the model is not one that gains from it."""
    import pickle

    sk = sklearn_flavor(model_dir)
    if sk is None or sk.get("serialization_format") != "skops":
        sys.exit(3)
    _, model = load_sklearn(model_dir, sk)
    path = cache_path(model_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)


def main():
    if sys.argv[1] == "--cache":
        return write_cache(sys.argv[2])
    model_dir, flavor = sys.argv[1], sys.argv[2]
    # Keep the frame stream for ourselves; the model's prints go to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = os.fdopen(0, "rb", buffering=0)

    def send(payload):
        out.write(struct.pack("<I", len(payload)) + payload)

    try:
        loader, predict = load(model_dir, flavor)
    except BaseException as e:  # tell the server why, then stop
        import traceback

        traceback.print_exc(file=sys.stderr)
        msg = ("%s: %s" % (type(e).__name__, e)).encode()[:4000]
        send(struct.pack("<BQI", 3, 0, len(msg)) + msg)
        sys.exit(1)
    ready = json.dumps({"flavor": flavor, "loader": loader, "pid": os.getpid()}).encode()
    send(struct.pack("<BI", 0, len(ready)) + ready)
    while True:
        try:
            (n,) = struct.unpack("<I", read_exact(inp, 4))
            buf = read_exact(inp, n)
        except EOFError:
            return
        batch = 0
        try:
            batch, frame = decode_request(buf)
            send(encode_result(batch, predict(frame)))
        except Exception as e:  # the model's error goes back to the caller
            import traceback

            traceback.print_exc(file=sys.stderr)
            msg = ("%s: %s" % (type(e).__name__, e)).encode()[:4000]
            send(struct.pack("<BQI", 3, batch, len(msg)) + msg)


if __name__ == "__main__":
    main()
