"""imgcls.prediction: the one prediction JSON that predict and serve both emit."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.prediction import Prediction, prediction_json, top_ids, top_ids_row

CLASSES = ["cat", "dog", "bird", "fish"]


def test_top_ids_are_best_first_with_ties_to_the_lower_id() -> None:
    probs = np.array([[0.1, 0.4, 0.1, 0.4], [0.7, 0.1, 0.1, 0.1]], np.float32)
    assert top_ids(probs, 3).tolist() == [[1, 3, 0], [0, 1, 2]]
    assert top_ids(probs, 1).tolist() == [[1], [0]]  # the argmax shortcut breaks ties the same way
    assert top_ids(probs[0], 1).tolist() == [1] and top_ids(probs[0], 2).tolist() == [1, 3]  # one row
    assert top_ids(probs, 50).shape == (2, 4)  # k capped at the number of classes


def test_predict_and_serve_build_the_same_json() -> None:
    row = np.array([0.1, 0.6, 0.2, 0.1], np.float32)
    ids = top_ids(row, 2)
    served = prediction_json(CLASSES, row, ids)
    predicted = Prediction.from_probabilities(CLASSES, row, ids).to_dict()
    assert served == predicted
    assert list(served) == ["label", "class_id", "confidence", "top_k"]
    assert served["label"] == "dog" and served["class_id"] == 1 and type(served["class_id"]) is int
    assert served["confidence"] == served["top_k"][0]["probability"] == float(row[1])
    assert [t["label"] for t in served["top_k"]] == ["dog", "bird"]


@pytest.mark.parametrize("classes", [2, 4, 10, 64])
def test_the_servers_python_top_k_is_numpys_order_ties_included(classes: int) -> None:
    rng = np.random.default_rng(classes)
    rows = rng.dirichlet(np.ones(classes), 200).astype(np.float32)
    rows[:50] = np.round(rows[:50], 1)  # many exact ties
    rows[50] = 1.0 / classes  # all tied
    for row in rows:
        values = row.tolist()
        for k in (1, 2, 3, 5, classes, classes + 7):
            assert top_ids_row(values, k) == top_ids(row, k).tolist(), (row, k)
    served = prediction_json(CLASSES, [0.1, 0.4, 0.1, 0.4], top_ids_row([0.1, 0.4, 0.1, 0.4], 3))
    assert [t["class_id"] for t in served["top_k"]] == [1, 3, 0] and type(served["class_id"]) is int
