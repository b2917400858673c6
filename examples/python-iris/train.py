"""Train a logistic regression on the iris data set that ships with scikit-learn.

Follows Legion's python toolchain contract: the model goes to
$LEGION_OUTPUT_DIR/model/ as model.pkl, with signature.json and
input_example.json beside it. Hyper-parameters come as LEGION_PARAM_<NAME>.
"""
import json
import os
import pickle

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

C = float(os.environ.get("LEGION_PARAM_C", "1.0"))
MAX_ITER = int(os.environ.get("LEGION_PARAM_MAX_ITER", "200"))

iris = load_iris(as_frame=True)
X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
y = iris.target

model = LogisticRegression(C=C, max_iter=MAX_ITER, random_state=0)
model.fit(X, y)
print(f"training accuracy: {model.score(X, y):.4f}")

out = os.path.join(os.environ["LEGION_OUTPUT_DIR"], "model")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "model.pkl"), "wb") as f:
    pickle.dump(model, f, protocol=5)
with open(os.path.join(out, "signature.json"), "w") as f:
    json.dump(
        {
            "inputs": [{"name": c, "datatype": "double"} for c in X.columns],
            "outputs": [{"name": "species", "datatype": "long"}],
        },
        f,
        indent=2,
        sort_keys=True,
    )
with open(os.path.join(out, "input_example.json"), "w") as f:
    json.dump({"columns": list(X.columns), "data": X.head(2).values.tolist()}, f, sort_keys=True)
print(f"model written to {out}")
