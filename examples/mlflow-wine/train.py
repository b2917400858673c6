"""Wine quality: a random forest on a wine-quality-like table.

The table is generated (seeded) with the eleven physico-chemical columns of
the UCI wine quality data set, so the example needs no download. The model
is logged with MLflow with a signature and an input example.
"""
import argparse

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.ensemble import RandomForestRegressor

COLUMNS = [
    "fixed_acidity", "volatile_acidity", "citric_acid", "residual_sugar", "chlorides",
    "free_sulfur_dioxide", "total_sulfur_dioxide", "density", "pH", "sulphates", "alcohol",
]
# Typical means and spreads of the red wine data.
MEANS = [8.3, 0.53, 0.27, 2.5, 0.087, 15.9, 46.5, 0.9967, 3.31, 0.66, 10.4]
SPREADS = [1.7, 0.18, 0.19, 1.4, 0.047, 10.5, 32.9, 0.0019, 0.15, 0.17, 1.07]


def make_table(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {c: rng.normal(m, s, rows) for c, m, s in zip(COLUMNS, MEANS, SPREADS)}
    )
    quality = (
        5.6 + 0.35 * (X["alcohol"] - 10.4) - 1.2 * (X["volatile_acidity"] - 0.53)
        + 0.8 * (X["sulphates"] - 0.66) + rng.normal(0, 0.4, rows)
    )
    return X, quality.round().clip(3, 8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-estimators", type=int, default=50)
    parser.add_argument("--max-depth", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    X, y = make_table(args.rows, args.seed)
    model = RandomForestRegressor(
        n_estimators=args.n_estimators, max_depth=args.max_depth, random_state=args.seed, n_jobs=1
    )
    model.fit(X, y)
    predictions = model.predict(X)
    rmse = float(np.sqrt(np.mean((predictions - y) ** 2)))
    print(f"trained {args.n_estimators} trees, training rmse {rmse:.4f}")

    with mlflow.start_run():
        mlflow.log_params(vars(args))
        mlflow.log_metric("rmse", rmse)
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, predictions),
            input_example=X.head(3),
            # MLflow serialises with skops, which trusts no tree structure
            # unless told: this model was made right here.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )


if __name__ == "__main__":
    main()
