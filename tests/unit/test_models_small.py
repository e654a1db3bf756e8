"""imgcls' own small networks: registered names, shapes for any channel count and small sizes, rebuild by spec."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from imgcls.models import create_model, is_registered, model_from_spec, model_spec  # noqa: E402


@pytest.mark.parametrize("name", ["resnet8", "resnet8_wide"])
def test_registered(name):
    assert is_registered(name)


@pytest.mark.parametrize(("chans", "size"), [(1, 8), (1, 28), (3, 32), (3, 33), (3, 64)])
def test_resnet8_logits_shape(chans, size):
    model = create_model("resnet8", num_classes=7, in_chans=chans, img_size=size).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_resnet8_is_small_and_wide_is_wider():
    small = create_model("resnet8", num_classes=10, in_chans=3)
    wide = create_model("resnet8_wide", num_classes=10, in_chans=3)
    n_small = sum(p.numel() for p in small.parameters())
    n_wide = sum(p.numel() for p in wide.parameters())
    assert 50_000 < n_small < 1_000_000 and n_wide > 2.5 * n_small


def test_rebuild_from_spec_loads_the_same_weights():
    spec = model_spec("resnet8", num_classes=5, in_chans=1, img_size=16, small_input_stem=None, width=8)
    a = create_model("resnet8", num_classes=5, in_chans=1, img_size=16, width=8)
    b = model_from_spec(spec)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 16, 16)
    with torch.inference_mode():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_channels_last_training_step_runs():
    model = create_model("resnet8", num_classes=10, in_chans=3).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
