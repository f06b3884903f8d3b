"""The registered model as MLflow serves it: events in (the data contract's columns), top-k
lists out, ranked by the same `RankingPipeline.recommend` that evaluation and serving call.

MLflow logs this file as code ("models from code") and runs it when the model is loaded, so the
wrapper is not pickled; the fitted pipeline travels as the model's `pipeline` artifact. It is
never imported by freshrank itself (importing MLflow takes seconds); `ml.tracking` logs it by
path. Loading it needs freshrank installed, as unpickling the pipeline does.
"""

import pickle

import mlflow
import pandas as pd


class RankingPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        with open(context.artifacts["pipeline"], "rb") as handle:
            self.pipeline = pickle.load(handle)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from ml.pipeline.snapshot import Behaviour

        return self.pipeline.recommend(Behaviour(model_input))


mlflow.models.set_model(RankingPyfunc())
