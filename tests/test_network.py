"""The PyTorch network against the TensorFlow graph (fixtures made by tools/make_tf_fixture.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seedark.models.architecture import receptive_radius
from seedark.models.network import NetworkSpec, SIDUNet, depth_to_space_tf
from seedark.models.weights import load_weights

DATA = Path(__file__).parent / "data"
# Max abs difference we accept between our fp32 forward and TF's (raw network output).
TF_TOLERANCE = 1e-4


def test_full_width_network_has_the_papers_parameter_count() -> None:
    assert sum(p.numel() for p in SIDUNet().parameters()) == 7_760_268


def test_fuji_variant_shape() -> None:
    net = SIDUNet(NetworkSpec(in_channels=9, width=4, block=3))
    y = net(torch.rand(1, 9, 7, 5))
    assert y.shape == (1, 3, 21, 15)


def test_depth_to_space_uses_tensorflow_channel_order() -> None:
    # TF: out[h*b+i, w*b+j, c] = in[h, w, (i*b+j)*C + c]
    b, c, h, w = 2, 3, 2, 3
    x = torch.arange(b * b * c * h * w, dtype=torch.float32).reshape(1, b * b * c, h, w)
    y = depth_to_space_tf(x, b)
    for hh in range(h):
        for ww in range(w):
            for i in range(b):
                for j in range(b):
                    for cc in range(c):
                        assert y[0, cc, hh * b + i, ww * b + j] == x[0, (i * b + j) * c + cc, hh, ww]
    assert not torch.equal(y, torch.pixel_shuffle(x, b))


@pytest.mark.parametrize("variant", ["sony", "fuji"])
def test_matches_tensorflow_graph_on_odd_sizes(variant: str) -> None:
    folder = DATA / f"tf_{variant}_w4"
    weights = load_weights(folder)
    assert weights.spec.width == 4
    net = weights.build()
    parity = np.load(folder / "parity.npz", allow_pickle=False)
    sizes = parity["sizes"]
    assert any(h % 2 or w % 2 for h, w in sizes), "fixture must include odd sizes"
    with torch.no_grad():
        for i in range(len(sizes)):
            x = torch.from_numpy(parity[f"in_{i}"]).permute(0, 3, 1, 2)
            want = parity[f"out_{i}"]
            got = net(x).permute(0, 2, 3, 1).numpy()
            assert got.shape == want.shape
            err = float(np.abs(got - want).max())
            assert err <= TF_TOLERANCE, f"size {tuple(sizes[i])}: max abs error {err}"


def test_receptive_radius_matches_a_gradient_probe() -> None:
    torch.manual_seed(0)
    net = SIDUNet(NetworkSpec(width=1)).double()
    for p in net.parameters():
        p.data.uniform_(0.1, 1.0)  # all-positive weights: no cancellation hides a dependency
    x = torch.rand(1, 4, 300, 300, dtype=torch.double, requires_grad=True)
    y = net(x)
    worst = 0
    for p in range(128, 144):  # one output row per phase of the 16-pixel pooling grid
        x.grad = None
        y[0, :, 2 * p : 2 * p + 2, 2 * p : 2 * p + 2].sum().backward(retain_graph=True)
        rows = (x.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero().ravel()
        worst = max(worst, p - int(rows.min()), int(rows.max()) - p)
    assert worst == receptive_radius()
