"""The compiled serving path gives the pipeline's exact answers, or is not used at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.data.synth import generate
from mlship.model import estimators
from mlship.serving.compiled import NotCompiled, _Numeric, compile_pipeline, probe_rows, verified
from mlship.serving.model import Column, ServedModel

CATEGORICAL = ["merchant_category", "country", "device_type"]
NUMERIC = ["amount", "hour", "account_age_days", "num_tx_24h"]
COLUMNS = [Column(c, "string") for c in CATEGORICAL] + [Column(c, "double") for c in NUMERIC]


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = frame.to_dict(orient="records")
    return [{str(k): (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return generate(1500, seed=7)


def _fit(factory: Any, data: pd.DataFrame, **overrides: Any) -> Any:
    pipeline = factory(CATEGORICAL, NUMERIC, 0)
    if overrides:
        pipeline.set_params(**overrides)
    return pipeline.fit(data[CATEGORICAL + NUMERIC], data["is_fraud"])


def _served(pipeline: Any, data: pd.DataFrame) -> ServedModel:
    served = ServedModel(
        estimator=pipeline, columns=COLUMNS, name="m", version="1", example=_rows(data[CATEGORICAL + NUMERIC].head(5))
    )
    served.compile()
    return served


@pytest.mark.parametrize("factory", [estimators.gradient_boosting, estimators.logistic_regression])
def test_compiled_pipeline_answers_exactly_as_the_pipeline(factory: Any, data: pd.DataFrame) -> None:
    pipeline = _fit(factory, data.iloc[:1000])
    served = _served(pipeline, data)
    assert served.compiled is not None, served.compile_note
    held_out = data.iloc[1000:][CATEGORICAL + NUMERIC].copy()
    held_out.loc[held_out.index[:7], "country"] = "ZZ"  # unknown categories are all-zero indicators
    rows = _rows(held_out)
    expected = pipeline.predict_proba(served.frame(rows))
    assert np.array_equal(served.compiled.predict_proba(rows), expected)
    labels, probabilities = served.predict(rows)
    assert probabilities == expected[:, 1].tolist()
    assert labels == [int(p > 0.5) for p in expected[:, 1]]  # the argmax of two classes
    for size in (1, 2, 3):  # small batches take the same path and the same answers
        assert served.predict(rows[:size])[1] == expected[:size, 1].tolist()


def test_a_batch_the_compiled_path_cannot_encode_goes_through_the_pipeline(data: pd.DataFrame) -> None:
    pipeline = _fit(estimators.gradient_boosting, data.iloc[:1000])
    served = _served(pipeline, data)
    rows = _rows(data.iloc[1000:1010][CATEGORICAL + NUMERIC])
    rows[3]["amount"] = None  # a missing number: gradient boosting's own missing-value branch decides
    rows[4]["device_type"] = None
    assert served.compiled is not None
    with pytest.raises(NotCompiled):
        served.compiled.predict_proba(rows)
    expected = pipeline.predict_proba(served.frame(rows))[:, 1].tolist()
    assert served.predict(rows)[1] == expected


def test_an_encoder_that_refuses_unknown_categories_still_refuses(data: pd.DataFrame) -> None:
    pipeline = _fit(estimators.gradient_boosting, data.iloc[:1000], preprocess__categorical__handle_unknown="error")
    served = _served(pipeline, data)
    assert served.compiled is not None, served.compile_note
    row = {**_rows(data.head(1)[CATEGORICAL + NUMERIC])[0], "country": "ZZ"}
    with pytest.raises(ValueError, match="unknown categor"):  # scikit-learn's own error, from the real pipeline
        served.predict([row])


def test_trees_that_split_off_by_one_ulp_are_caught_on_the_thresholds(data: pd.DataFrame) -> None:
    pipeline = _fit(estimators.gradient_boosting, data.iloc[:1000])
    compiled = compile_pipeline(pipeline, set(NUMERIC))
    forest = compiled.forest
    assert forest is not None
    forest._threshold = np.nextafter(forest._threshold, -np.inf)  # `<` where sklearn says `<=`
    served = _served(pipeline, data)
    with pytest.raises(NotCompiled, match="differ"):
        verified(compiled, pipeline, served.frame, probe_rows(pipeline, served.example))
    # The boundary rows alone catch it, whatever rows the example happens to hold.
    base = compile_pipeline(pipeline, set(NUMERIC)).transform(served.example[:1])[0]
    edges = forest.boundary_rows(base)
    intact = compile_pipeline(pipeline, set(NUMERIC)).forest
    assert intact is not None
    assert np.array_equal(intact.predict_proba(edges), pipeline[-1].predict_proba(edges))
    assert not np.array_equal(forest.predict_proba(edges, forest.raw_walk), pipeline[-1].predict_proba(edges))


def test_large_batches_go_tree_by_tree_and_both_paths_equal_the_pipeline(data: pd.DataFrame) -> None:
    """Past WALK_MAX_ROWS the forest answers with scikit-learn's per-tree predictor, summed in
    sklearn's order: the same probabilities as the pipeline, as the walk gives on small batches.
    (With leaf masks, every batch is scored by them; the per-tree route is checked without.)"""
    from mlship.serving.forest import WALK_MAX_ROWS

    pipeline = _fit(estimators.gradient_boosting, data.iloc[:1000])
    served = _served(pipeline, data)
    assert served.compiled is not None and served.compiled.forest is not None
    forest = served.compiled.forest
    frame = data.dropna(subset=CATEGORICAL + NUMERIC).iloc[:4096]
    rows = [
        {c: (float(r[c]) if c in NUMERIC else r[c]) for c in CATEGORICAL + NUMERIC} for r in frame.to_dict("records")
    ]
    features = served.compiled.transform(rows)
    expected = pipeline.predict_proba(served.frame(rows))
    assert np.array_equal(served.compiled.predict_proba(rows), expected)  # by leaf masks
    assert np.array_equal(forest.raw_masks(features), forest.raw_by_tree(features))
    forest._masks = None  # the routes of a forest whose trees are too wide for masks
    calls: list[int] = []
    original = forest.raw_by_tree
    forest.raw_by_tree = lambda x: calls.append(len(x)) or original(x)  # type: ignore[method-assign]
    assert np.array_equal(served.compiled.predict_proba(rows), expected)
    assert calls == [len(rows)], "a large batch goes tree by tree"
    assert np.array_equal(forest.raw_walk(features[:300]), original(features[:300]))
    small = rows[:WALK_MAX_ROWS]
    assert np.array_equal(served.compiled.predict_proba(small), expected[:WALK_MAX_ROWS])
    assert calls == [len(rows)], "a small batch walks"


def test_leaf_masks_score_every_batch_and_walk_only_rows_they_do_not_cover(data: pd.DataFrame) -> None:
    """The masks answer batches of 1, 32, 256 and 4,096 rows exactly as scikit-learn; a row with two
    indicators of one one-hot block set (never built from a request) is walked, and still exact."""
    pipeline = _fit(estimators.gradient_boosting, data.iloc[:1000])
    served = _served(pipeline, data)
    assert served.compiled is not None and served.compiled.forest is not None
    forest = served.compiled.forest
    frame = data.dropna(subset=CATEGORICAL + NUMERIC).iloc[:4096]
    rows = [
        {c: (float(r[c]) if c in NUMERIC else r[c]) for c in CATEGORICAL + NUMERIC} for r in frame.to_dict("records")
    ]
    walked: list[int] = []
    original = forest.raw_walk
    forest.raw_walk = lambda x: walked.append(len(x)) or original(x)  # type: ignore[method-assign]
    for n in (1, 32, 256, 4096):
        expected = pipeline.predict_proba(served.frame(rows[:n]))
        assert np.array_equal(served.compiled.predict_proba(rows[:n]), expected), n
    assert walked == [], "request rows are all covered by the masks"
    features = served.compiled.transform(rows[:4])
    features[1, :] = 1.0  # every indicator set: not a row a request can make
    assert np.array_equal(forest.raw_masks(features), forest.raw_by_tree(features))
    assert walked == [1]


def test_features_that_differ_are_caught(data: pd.DataFrame) -> None:
    pipeline = _fit(estimators.logistic_regression, data.iloc[:1000])
    compiled = compile_pipeline(pipeline, set(NUMERIC))
    compiled._blocks[-1] = _Numeric("num_tx_24h", 0.0, 2.0)  # a wrong scale
    served = _served(pipeline, data)
    with pytest.raises(NotCompiled, match="features differ"):
        verified(compiled, pipeline, served.frame, probe_rows(pipeline, served.example))
    with pytest.raises(NotCompiled, match="no input example"):
        verified(compiled, pipeline, served.frame, [])


def _unsupported(data: pd.DataFrame) -> dict[str, tuple[Any, str]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

    X, y = data[CATEGORICAL + NUMERIC], data["is_fraud"]

    def pipe(pre: Any, clf: Any = None) -> Any:
        return Pipeline([("pre", pre), ("clf", clf or LogisticRegression(max_iter=500))]).fit(X, y)

    def onehot(**kw: Any) -> Any:
        return ColumnTransformer([("c", OneHotEncoder(**kw), CATEGORICAL)], remainder="passthrough")

    three = Pipeline([("pre", onehot(sparse_output=False)), ("scale", MinMaxScaler()), ("clf", LogisticRegression())])
    multiclass_y = (data["amount"] // 200).clip(upper=2).astype(int)
    return {
        "bare": (LogisticRegression(max_iter=500).fit(X[NUMERIC], y), "two-step Pipeline"),
        "three steps": (three.fit(X, y), "two-step Pipeline"),
        "not a column transformer": (
            Pipeline([("s", MinMaxScaler()), ("c", LogisticRegression())]).fit(X[NUMERIC], y),
            "not a ColumnTransformer",
        ),
        "sparse": (pipe(onehot(handle_unknown="ignore")), "sparse"),
        "dropped category": (pipe(onehot(drop="first", sparse_output=False)), "drops or groups"),
        "infrequent": (
            pipe(onehot(sparse_output=False, min_frequency=50, handle_unknown="infrequent_if_exist")),
            "drops or groups",
        ),
        "positional columns": (
            Pipeline(
                [("pre", ColumnTransformer([("n", "passthrough", [0, 1, 2, 3])])), ("clf", LogisticRegression())]
            ).fit(X[NUMERIC].to_numpy(), y),
            "by position",
        ),
        "other transformer": (pipe(ColumnTransformer([("n", MinMaxScaler(), NUMERIC)])), "MinMaxScaler"),
        "multiclass trees": (
            Pipeline(
                [
                    ("pre", ColumnTransformer([("n", "passthrough", NUMERIC)])),
                    ("clf", HistGradientBoostingClassifier(max_iter=5)),
                ]
            ).fit(X, multiclass_y),
            "multiclass",
        ),
    }


def test_pipelines_it_does_not_reproduce_are_served_as_they_are(data: pd.DataFrame) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = _unsupported(data.iloc[:600])
    for name, (pipeline, reason) in cases.items():
        with pytest.raises(NotCompiled, match=reason):
            compile_pipeline(pipeline, set(NUMERIC))
        served = _served(pipeline, data)
        assert served.compiled is None, name
        assert served.compile_note.startswith("not compiled:"), name


def test_a_column_served_as_text_is_never_passed_through_as_a_number(data: pd.DataFrame) -> None:
    pipeline = _fit(estimators.gradient_boosting, data.iloc[:600])
    with pytest.raises(NotCompiled, match="non-numeric columns \\['amount'\\]"):
        compile_pipeline(pipeline, set(NUMERIC) - {"amount"})


def test_native_categorical_trees_are_not_compiled(data: pd.DataFrame) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    pre = ColumnTransformer([("n", "passthrough", NUMERIC)])
    clf = HistGradientBoostingClassifier(max_iter=5, categorical_features=[1])  # `hour` as a category
    pipeline = Pipeline([("pre", pre), ("clf", clf)]).fit(data[NUMERIC], data["is_fraud"])
    with pytest.raises(NotCompiled, match="categorical"):
        compile_pipeline(pipeline, set(NUMERIC))


@pytest.mark.parametrize("factory", [estimators.gradient_boosting, estimators.logistic_regression])
@pytest.mark.parametrize(("categorical", "numeric"), [([], NUMERIC), (CATEGORICAL, []), ([], ["amount"])])
def test_a_pipeline_with_an_empty_column_group_is_compiled_and_exact(
    factory: Any, categorical: list[str], numeric: list[str], data: pd.DataFrame
) -> None:
    """Regression: with no categorical features the one-hot encoder is never fitted (no
    categories_) and the probe rows raised AttributeError — every deploy rolled back."""
    pipeline = factory(categorical, numeric, 0).fit(data[categorical + numeric].iloc[:800], data["is_fraud"][:800])
    columns = [Column(c, "string") for c in categorical] + [Column(c, "double") for c in numeric]
    rows = _rows(data[categorical + numeric].iloc[800:])
    served = ServedModel(estimator=pipeline, columns=columns, name="m", version="1", example=rows[:3])
    served.compile()
    assert served.compiled is not None, served.compile_note
    assert served.predict(rows)[1] == pipeline.predict_proba(served.frame(rows))[:, 1].tolist()


def test_a_compiler_that_crashes_falls_back_to_the_pipeline_with_the_reason(
    data: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only NotCompiled: any error of the fast path leaves the plain pipeline serving."""
    from mlship.serving import compiled as module

    pipeline = _fit(estimators.logistic_regression, data.iloc[:600])

    def broken(estimator: Any, example: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise AttributeError("'OneHotEncoder' object has no attribute 'categories_'")

    monkeypatch.setattr(module, "probe_rows", broken)
    served = _served(pipeline, data)
    assert served.compiled is None
    assert served.compile_note == (
        "not compiled: the compiler failed (AttributeError: 'OneHotEncoder' object has no attribute 'categories_')"
    )
    rows = _rows(data[CATEGORICAL + NUMERIC].iloc[600:700])
    assert served.predict(rows)[1] == pipeline.predict_proba(served.frame(rows))[:, 1].tolist()


def test_a_compiled_path_that_raises_at_request_time_is_answered_by_the_pipeline(data: pd.DataFrame) -> None:
    pipeline = _fit(estimators.logistic_regression, data.iloc[:600])
    served = _served(pipeline, data)
    assert served.compiled is not None

    class Exploding:
        def predict_proba(self, rows: Any) -> Any:
            raise IndexError("a bug in the fast path")

    served.compiled = Exploding()  # type: ignore[assignment]
    rows = _rows(data[CATEGORICAL + NUMERIC].iloc[600:650])
    assert served.predict(rows)[1] == pipeline.predict_proba(served.frame(rows))[:, 1].tolist()


@pytest.mark.parametrize(("leaves", "bits"), [(48, 64), (96, None)])
def test_trees_over_32_leaves_take_64_bit_masks_and_over_64_none(
    data: pd.DataFrame, leaves: int, bits: int | None
) -> None:
    """Up to 64 leaves a tree fits a 64-bit mask; a wider forest has none and walks or goes tree by
    tree as before, equal to the pipeline either way."""
    params = {"classifier__max_leaf_nodes": leaves, "classifier__max_iter": 20, "classifier__min_samples_leaf": 1}
    pipeline = _fit(estimators.gradient_boosting, data, **params)
    served = _served(pipeline, data)
    assert served.compiled is not None and served.compiled.forest is not None
    forest = served.compiled.forest
    widest = max(int(p.nodes["is_leaf"].sum()) for (p,) in pipeline[-1]._predictors)
    assert widest > 32 if bits else widest > 64
    masks = forest._masks
    assert (masks.dtype.itemsize * 8 if masks is not None else None) == bits
    assert (forest.raw_masks in forest.paths()) == (bits is not None)
    rows = _rows(data[CATEGORICAL + NUMERIC].dropna().iloc[:300])
    assert np.array_equal(served.compiled.predict_proba(rows), pipeline.predict_proba(served.frame(rows)))
    if masks is None:
        with pytest.raises(NotCompiled, match="no leaf masks"):
            forest.raw_masks(served.compiled.transform(rows))
