"""Model registry + factory over timm and imgcls' own small networks (imports torch: train side only).

Example:
    model = create_model("resnet18", num_classes=100, in_chans=3, img_size=32)   # CIFAR stem applied
    model = model_from_spec(bundle.model)                                      # rebuild from a bundle
"""

from imgcls.models.registry import (
    check_model_name,
    create_model,
    is_registered,
    list_models,
    model_from_spec,
    model_spec,
    register_model,
)

__all__ = ["check_model_name", "create_model", "is_registered", "list_models", "model_from_spec", "model_spec"]
__all__ += ["register_model"]
