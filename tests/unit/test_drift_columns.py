"""Drift scores (equal to evidently's), stratified sampling, temperature scaling and the calibrated thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.drift import columns as C
from imgcls.drift.reference import calibrated, fit_temperature, stratified_sample


def test_scores_equal_evidentlys_value_drift() -> None:
    pd = pytest.importorskip("pandas")
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=400), "c": rng.choice(["x", "y", "z"], 400)})
    cur = pd.DataFrame({"a": rng.normal(0.3, 1.4, size=120), "c": rng.choice(["x", "y"], 120, p=[0.8, 0.2])})
    definition = DataDefinition(numerical_columns=["a"], categorical_columns=["c"])
    snap = Report(
        [ValueDrift(column="a", method="wasserstein", threshold=0.1), ValueDrift(column="c", method="jensenshannon")]
    ).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    values = [float(m["value"]) for m in snap.dict()["metrics"]]
    ids = {"x": 0, "y": 1, "z": 2}
    assert C.wasserstein_norm(ref["a"].to_numpy(), cur["a"].to_numpy()) == pytest.approx(values[0], rel=1e-12)
    assert C.jensenshannon(ref["c"].map(ids).to_numpy(), cur["c"].map(ids).to_numpy(), 3) == pytest.approx(
        values[1], rel=1e-12
    )


def test_stratified_sample_keeps_each_class_share() -> None:
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)
    pick = stratified_sample(labels, 200, seed=3)
    assert len(pick) == 200 and len(set(pick.tolist())) == 200
    assert np.bincount(labels[pick]).tolist() == [120, 60, 20]
    assert stratified_sample(labels, 200, seed=3).tolist() == pick.tolist()
    assert stratified_sample(labels, 200, seed=4).tolist() != pick.tolist()


def test_temperature_scaling_recovers_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    p = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    t = fit_temperature(true_logits * 3.0, labels)  # a model 3× too sure of itself
    assert t == pytest.approx(3.0, rel=0.1)
    cal = calibrated(p, 1.0)
    assert np.allclose(cal, p)


def test_output_columns_margin_and_entropy() -> None:
    out = C.output_columns(np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    assert out["pred_class"].tolist() == [0, 0]
    assert out["pred_margin"] == pytest.approx([0.5, 0.0])
    assert out["pred_entropy"][1] == pytest.approx(np.log(3))


def _data(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    base = rng.normal(size=n)
    return {
        "a": base,
        "b": base * 0.9 + rng.normal(scale=0.3, size=n),  # correlated with a
        "c": rng.exponential(size=n),
        "pred_class": rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1]),
    }


def test_calibrated_thresholds_hold_the_false_alarm_rate_and_catch_one_column() -> None:
    rng = np.random.default_rng(0)
    cols = ["a", "b", "c", "pred_class"]
    reference = _data(rng, 2000)
    cal = C.calibrate(reference, cols, 4, seed=0, windows=(100, 200, 500), draws=200)
    assert 0 < cal["column_alpha"] < cal["family_alpha"]

    def alarm(window: dict[str, np.ndarray]) -> list[str]:
        n = len(window["a"])
        return [
            c
            for c in cols
            if C.score(c, reference[c], window[c], 4) >= C.threshold(cal["constants"][c], n, 2000)  # type: ignore[index]
        ]

    fresh = [alarm(_data(rng, 300)) for _ in range(100)]  # new windows from the same distribution
    assert sum(bool(a) for a in fresh) <= 12  # ≈ 5 % expected; 12 of 100 would be p < 0.01
    shifted = _data(rng, 300)
    shifted["c"] = shifted["c"] + 0.5
    assert alarm(shifted) == ["c"]
    prior = _data(rng, 300)
    prior["pred_class"][:210] = 3  # 70 % one class
    assert "pred_class" in alarm(prior)


def test_too_few_images_for_a_reference_names_the_real_minimum():
    from imgcls.bundle import InputSpec
    from imgcls.drift.reference import MIN_SOURCE_IMAGES, build_reference
    from imgcls.errors import UsageError

    images = np.zeros((MIN_SOURCE_IMAGES - 1, 8, 8, 1), np.uint8)
    spec = InputSpec(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,))
    # it said "needs at least 1000" (the smallest --size) while a split of 20 images makes one
    with pytest.raises(UsageError, match=f"val has {MIN_SOURCE_IMAGES - 1} images; a drift reference needs at least "
                                         f"{MIN_SOURCE_IMAGES}$"):  # fmt: skip
        build_reference(None, spec, images, np.zeros(len(images), np.int64), source="val")
