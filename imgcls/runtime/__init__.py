"""The torch-free runtime shared by ``predict``, ``serve`` and ``bench``: bundle -> engine -> top-k.

Rooms:
    :mod:`~imgcls.runtime.predictor`  the :class:`Predictor` (decode, preprocess, run, top-k)
    :mod:`~imgcls.runtime.engines`    one interface over onnxruntime (:mod:`.ort`) and OpenVINO (:mod:`.ov`)
    :mod:`~imgcls.runtime.onnxfile`   the bundle's ONNX files: which one, verified, self-contained, metadata
    :mod:`~imgcls.runtime.profile`    the bundle's serving profile and ``engine="auto"``
    :mod:`~imgcls.runtime.gate`       the accuracy gate of an engine × precision against fp32 onnxruntime

Example:
    from imgcls.runtime import Predictor
    predictor = Predictor.from_bundle("runs/digits-resnet8", engine="auto")
"""

from imgcls.prediction import Prediction, TopK
from imgcls.runtime.engines import DEVICES, ENGINE_PRECISIONS, ENGINES, PRECISIONS, Engine, create_engine
from imgcls.runtime.onnxfile import MODEL_FILES, external_data_tensors, model_file_for
from imgcls.runtime.predictor import Predictor, softmax
from imgcls.runtime.resolve import resolve_model

__all__ = [
    "DEVICES",
    "ENGINES",
    "ENGINE_PRECISIONS",
    "MODEL_FILES",
    "PRECISIONS",
    "Engine",
    "Prediction",
    "Predictor",
    "TopK",
    "create_engine",
    "external_data_tensors",
    "model_file_for",
    "resolve_model",
    "softmax",
]
