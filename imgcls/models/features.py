"""Penultimate features: what the classifier layer sees, for the drift embedding (imports torch lazily)."""

from __future__ import annotations

from typing import Any

from imgcls.errors import UsageError


def split_head(model: Any) -> tuple[Any, Any]:
    """``(features, head)`` callables with ``head(features(x)) == model(x)`` (the model in eval mode).

    imgcls' own small networks name their parts ``features``/``pool``/``drop``/``head``; timm models expose
    ``forward_features`` + ``forward_head(pre_logits=True)`` + ``get_classifier()``.

    Raises:
        UsageError: the architecture exposes neither.
    """
    if all(hasattr(model, a) for a in ("features", "pool", "drop", "head")):
        return (lambda x: model.drop(model.pool(model.features(x)).flatten(1))), model.head
    if all(hasattr(model, a) for a in ("forward_features", "forward_head", "get_classifier")):
        return (lambda x: model.forward_head(model.forward_features(x), pre_logits=True)), model.get_classifier()
    raise UsageError(f"cannot find the penultimate features of a {type(model).__name__}")


def embedding_module(model: Any, mean: Any, components: Any) -> Any:
    """A module ``x -> (logits, embedding)``: the model's logits and its penultimate features projected onto
    PCA ``components`` (k × d) after subtracting ``mean`` (d) — the graph ``imgcls export`` writes."""
    import torch

    features, head = split_head(model)

    class WithEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("pca_mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("pca_components", torch.as_tensor(components, dtype=torch.float32).T.contiguous())

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = features(x)
            return head(f), (f - self.pca_mean) @ self.pca_components

    return WithEmbedding().eval()
