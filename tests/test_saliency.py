"""Grad-CAM on every architecture without side effects, SmoothGrad against its definition, and the
map-similarity number's two anchors (a model against itself; against random maps)."""

import pytest
import torch
import torch.nn.functional as F

from rslad_kit import models, saliency, soft_labels
from rslad_kit.config import preset


def small_input(arch: str, n: int = 2) -> torch.Tensor:
    """Digits-sized input for the classroom CNNs, 32x32 RGB for the CIFAR architectures."""
    shape = (1, 8, 8) if arch.startswith("cnn") else (3, 32, 32)
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def test_every_registry_architecture_has_a_gradcam_layer():
    assert set(saliency.GRADCAM_LAYERS) == set(models.MODELS)


def n_params(arch: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in models.build(arch, 10).parameters())


BIG = sorted(a for a in models.MODELS if n_params(a) > 15_000_000)   # shape checks only: seconds to build
SMALL = sorted(a for a in models.MODELS if a not in BIG)


@pytest.mark.parametrize("arch", SMALL)
def test_gradcam_runs_and_leaves_the_model_as_it_was(arch):
    """Maps of the input's size in [0,1]; mode and requires_grad flags unchanged, in train mode, frozen
    (like a teacher), or called under no_grad."""
    torch.manual_seed(0)
    x = small_input(arch)
    model = models.build(arch, 10, in_channels=x.shape[1])
    for frozen in (False, True):
        model.train().requires_grad_(not frozen)
        with torch.no_grad():
            maps = saliency.gradcam(model, arch, x, torch.tensor([1, 2]))
        assert maps.shape == (2, *x.shape[-2:])
        assert maps.min() >= 0 and maps.max() <= 1
        assert model.training
        assert all(p.requires_grad is not frozen for p in model.parameters())
        assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("arch", BIG)
def test_gradcam_layer_of_a_big_architecture_has_a_map(arch):
    """Shapes only (on the meta device, nothing allocated): the layer exists and gives a 2-D map of at
    least 4x4 on 32x32 CIFAR images."""
    shapes = []
    with torch.device("meta"):
        model = models.build(arch, 10).eval()
        hook = saliency.target_layer(model, arch).register_forward_hook(lambda m, i, o: shapes.append(o.shape))
        model(torch.empty(1, 3, 32, 32))
    hook.remove()
    assert len(shapes) == 1 and shapes[0][-1] >= 4 and shapes[0][-2] >= 4


@pytest.mark.parametrize("arch", sorted(saliency.GRADCAM_LAYERS))
def test_the_gradcam_layer_is_the_last_activation_the_global_pooling_reads(arch, monkeypatch):
    """Every architecture's Grad-CAM layer outputs the very tensor its global pooling reads (the
    SmallCNNs: that tensor after their 2x2 max-pool), so maps compare the same stage everywhere.
    CIFAR architectures on the meta device (identity, not values, is checked)."""
    hooked, pooled, pool = [], [], models._pool_flatten
    monkeypatch.setattr(models, "_pool_flatten", lambda out: pooled.append(out) or pool(out))
    cnn = arch.startswith("cnn")
    with torch.device("cpu" if cnn else "meta"):
        model = models.build(arch, 10, in_channels=1 if cnn else 3).eval()
        saliency.target_layer(model, arch).register_forward_hook(lambda m, i, out: hooked.append(out))
        model(small_input(arch) if cnn else torch.empty(2, 3, 32, 32))
    assert len(hooked) == 1 and len(pooled) == 1
    if cnn:
        assert torch.equal(F.max_pool2d(hooked[0], 2), pooled[0]) and hooked[0].min() >= 0   # after its ReLU
    else:
        assert hooked[0] is pooled[0]


def test_gradcam_raises_when_the_library_returns_fewer_maps(monkeypatch):
    from pytorch_grad_cam import GradCAM

    real, calls = GradCAM.__call__, []

    def fails_on_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise IndexError("list index out of range")   # which the library's __exit__ swallows
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GradCAM, "__call__", fails_on_the_second_batch)
    model = models.build("cnn-w4", 10, in_channels=1)
    with pytest.raises(RuntimeError, match="returned 1 maps for 2 images of cnn-w4"):
        saliency.gradcam(model, "cnn-w4", small_input("cnn-w4"), torch.tensor([1, 2]), batch_size=1)


def test_the_classroom_layer_sees_at_least_4x4_on_8x8_digits():
    model = models.build("cnn-w4", 10, in_channels=1).eval()
    shapes = []
    hook = saliency.target_layer(model, "cnn-w4").register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    model(small_input("cnn-w4"))
    hook.remove()
    assert shapes[0][-2:] == (4, 4)


def test_smoothgrad_is_the_average_input_gradient_over_the_same_noise():
    torch.manual_seed(0)
    model = models.build("cnn-w4", 10, in_channels=1).train()
    x, y = small_input("cnn-w4", 3), torch.tensor([0, 4, 9])
    sigma, samples = 0.2, 5
    got = saliency.smoothgrad(model, x, y, sigma=sigma, samples=samples, generator=torch.Generator().manual_seed(7))
    assert model.training

    model.eval()
    noise = torch.randn((samples, *x.shape), generator=torch.Generator().manual_seed(7))
    spread = x.flatten(1).max(1).values - x.flatten(1).min(1).values
    grads = []
    for i in range(len(x)):   # one image and one noise sample at a time
        for k in range(samples):
            xi = (x[i:i + 1] + noise[k, i:i + 1] * sigma * spread[i]).requires_grad_(True)
            grads.append(torch.autograd.grad(model(xi)[0, y[i]], xi)[0])
    expected = torch.stack(grads).view(len(x), samples, *x.shape[1:]).mean(1).abs().amax(1)
    torch.testing.assert_close(got, expected)


def test_similarity_is_one_for_a_model_against_itself_and_near_zero_against_random_maps():
    torch.manual_seed(0)
    model = models.build("cnn-w4", 10, in_channels=1).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    maps = saliency.smoothgrad(model, x, y, samples=4, generator=torch.Generator().manual_seed(0))
    same = saliency.map_similarity(maps, maps.clone())
    assert same["mean"] == pytest.approx(1.0) and same["n"] == 64

    random_maps = torch.rand(64, 8, 8, generator=torch.Generator().manual_seed(1))
    other = saliency.map_similarity(maps, random_maps)
    assert abs(other["mean"]) < 0.1
    assert other["low"] < 0 < other["high"]   # the 95% interval covers the true value, 0


def test_constant_maps_are_left_out_not_counted_as_agreement():
    a = torch.rand(3, 4, 4)
    b = a.clone()
    b[0] = 0.5
    result = saliency.map_similarity(a, b)
    assert result["n"] == 2 and result["mean"] == pytest.approx(1.0)


def test_soft_label_statistics():
    y = torch.tensor([0, 1])
    one_hot = torch.eye(3)[y]
    uniform = torch.full((2, 3), 1 / 3)
    assert soft_labels.soft_label_stats(one_hot, y) == pytest.approx({"entropy": 0.0, "true_prob": 1.0, "n": 2})
    stats = soft_labels.soft_label_stats(uniform, y)
    assert stats["entropy"] == pytest.approx(torch.log(torch.tensor(3.0)).item())
    assert stats["true_prob"] == pytest.approx(1 / 3)


def test_soft_label_statistics_per_class_and_overall():
    y = torch.tensor([0, 1, 1])
    probs = {"RSL": torch.eye(3)[y], "SSL": torch.full((3, 3), 1 / 3)}
    stats = soft_labels.soft_label_class_stats(probs, y, (1,))
    assert set(stats) == {"RSL", "SSL"} and set(stats["RSL"]) == {1, "all"}
    assert stats["RSL"][1]["n"] == 2 and stats["RSL"]["all"]["n"] == 3
    assert stats["SSL"][1]["true_prob"] == pytest.approx(1 / 3)


def test_soft_label_sets_are_the_same_in_batches():
    torch.manual_seed(0)
    robust, natural = (models.build("cnn-w4", 10, in_channels=1).eval() for _ in range(2))
    x, y = torch.rand(37, 1, 8, 8), torch.randint(0, 10, (37,))
    whole = soft_labels.soft_label_sets(robust, natural, x, y, preset("smoke"), 10)
    batched = soft_labels.soft_label_sets(robust, natural, x, y, preset("smoke"), 10, batch_size=5)
    assert all(torch.allclose(whole[k], batched[k], atol=1e-6) for k in ("RSL", "NSL", "SSL"))
    assert whole["RSL"].shape == (37, 10) and torch.allclose(whole["NSL"].sum(1), torch.ones(37))


def test_paired_differences_pair_the_seeds_and_find_a_consistent_lead_only():
    def row(student, means):
        return {"student": student, "map": "gradcam", "per_seed": [{"mean": m} for m in means]}

    rows = [row("rslad", [0.50, 0.42, 0.61]), row("ard", [0.40, 0.33, 0.50]), row("sat", [0.61, 0.40, 0.50])]
    lead, tie = saliency.paired_differences(rows, "rslad", ("ard", "sat"))
    assert lead["minus"] == "ard" and lead["seeds"] == 3 and lead["low"] > 0   # +0.10 on every seed
    assert tie["minus"] == "sat" and abs(tie["mean"]) < 0.01 and tie["low"] < 0 < tie["high"]
