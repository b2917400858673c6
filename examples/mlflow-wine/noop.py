"""Logs a trivial model and nothing else: the no-op project used to measure
Legion's own overhead per training against `mlflow run` (docs/benchmarks.md)."""
import mlflow
import mlflow.pyfunc


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


with mlflow.start_run():
    mlflow.pyfunc.log_model(name="model", python_model=Constant())
