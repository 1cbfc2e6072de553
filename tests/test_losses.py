"""Losses: the one KL, Table 1 parity with the official formulas, and the METHODS table."""

import pytest
import torch
import torch.nn.functional as F

from rslad_kit import attacks
from rslad_kit.losses import METHODS, Method, ard_loss, iad_loss, kl, mart_loss, rslad_loss, trades_loss


def logits(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(*shape, generator=g)).requires_grad_(True)


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


# --- kl --------------------------------------------------------------------------------------------

def test_kl_is_batchmean_of_torch_kldiv():
    s, t = logits(8, 10), logits(8, 10, seed=1).detach()
    p = F.softmax(t, 1)
    expected = F.kl_div(F.log_softmax(s, 1), p, reduction="batchmean")
    assert torch.allclose(kl(s, p), expected, atol=1e-6)
    assert torch.allclose(kl(s, p, reduction="none").mean(), expected, atol=1e-6)


def test_kl_is_zero_at_target_and_positive_elsewhere():
    t = logits(4, 10).detach()
    assert kl(t, F.softmax(t, 1)).abs() < 1e-6
    assert kl(logits(4, 10, seed=3), F.softmax(t, 1)) > 0.01


def test_kl_temperature_softens_student():
    s, p = logits(4, 10), F.softmax(logits(4, 10, seed=1), 1)
    assert torch.allclose(kl(s, p, tau=4.0), kl(s / 4.0, p), atol=1e-6)


# --- parity with the official code (official_semantics.md) -----------------------------------------

def official_rslad_outer(adv_logits, nat_logits, teacher_logits, num_classes):
    """zibojia/RSLAD training loop: kl_loss(a, b) = -a*b + b*log(b + 1e-5), mean over B*C; x10 on CIFAR-100."""
    def kl_loss(a, b):
        return -a * b + torch.log(b + 1e-5) * b
    scale = 10 if num_classes == 100 else 1
    p_t = F.softmax(teacher_logits.detach(), dim=1)
    loss_adv = scale * torch.mean(kl_loss(F.log_softmax(adv_logits, dim=1), p_t))
    loss_nat = scale * torch.mean(kl_loss(F.log_softmax(nat_logits, dim=1), p_t))
    return 5 / 6 * loss_adv + 1 / 6 * loss_nat


@pytest.mark.parametrize("num_classes", [10, 100])
def test_rslad_outer_matches_official_value_and_gradients(num_classes):
    s_adv, s_nat, t_nat = logits(16, num_classes), logits(16, num_classes, seed=1), logits(16, num_classes, seed=2)
    ours = sum(rslad_loss(s_nat, s_adv, t_nat, kl_scale=0.1).values())
    official = official_rslad_outer(s_adv, s_nat, t_nat, num_classes)
    # The official +1e-5 inside the log only adds a constant (it multiplies the teacher's b alone) ...
    assert torch.allclose(ours, official, atol=1e-3)
    # ... so the gradients, which are what training sees, are the same.
    for g_ours, g_official in zip(grads(ours, s_adv, s_nat), grads(official, s_adv, s_nat)):
        assert torch.allclose(g_ours, g_official, atol=1e-7, rtol=1e-5)


def test_rslad_inner_objective_matches_official():
    """rslad_inner_loss: sum of KLDivLoss(reduce=False)(log_softmax(S(x')), softmax(T(x)))."""
    s_adv, t_nat = logits(16, 10), logits(16, 10, seed=2).detach()
    official = F.kl_div(F.log_softmax(s_adv, 1), F.softmax(t_nat, 1), reduction="none").sum()
    ours = attacks.kl_to(F.softmax(t_nat, 1))(s_adv).sum()
    assert torch.allclose(ours, official, atol=1e-5)
    assert torch.allclose(grads(ours, s_adv)[0], grads(official, s_adv)[0], atol=1e-6)


def test_trades_matches_official():
    """trades.py: CE(f(x), y) + beta * (1/B) * KLDivLoss(sum)(log_softmax(f(x')), softmax(f(x)))."""
    s_nat, s_adv, y = logits(16, 10), logits(16, 10, seed=1), torch.arange(16) % 10
    official = F.cross_entropy(s_nat, y) + 6.0 / 16 * F.kl_div(
        F.log_softmax(s_adv, 1), F.softmax(s_nat, 1), reduction="sum")
    ours = sum(trades_loss(s_nat, s_adv, y).values())
    assert torch.allclose(ours, official, atol=1e-5)
    for a, b in zip(grads(ours, s_nat, s_adv), grads(official, s_nat, s_adv)):
        assert torch.allclose(a, b, atol=1e-6)


def test_ard_matches_official_with_element_mean_scale():
    """ARD main.py: alpha*T^2*KLDivLoss()(...) + (1-alpha)*CE, KLDivLoss() being the element mean."""
    s_nat, s_adv, t_nat, y = logits(16, 10), logits(16, 10, seed=1), logits(16, 10, seed=2), torch.arange(16) % 10
    alpha, tau = 0.9, 30.0
    p = F.softmax(t_nat / tau, 1)
    element_mean = (torch.xlogy(p, p) - p * F.log_softmax(s_adv / tau, 1)).mean()
    official = alpha * tau**2 * element_mean + (1 - alpha) * F.cross_entropy(s_nat, y)
    ours = sum(ard_loss(s_nat, s_adv, t_nat, y, alpha=alpha, tau=tau, kl_scale=1 / 10).values())
    assert torch.allclose(ours, official, rtol=1e-5)


def test_mart_matches_official():
    s_nat, s_adv, y = logits(16, 10), logits(16, 10, seed=1), torch.arange(16) % 10
    adv_probs = F.softmax(s_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(s_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(s_nat, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1)).squeeze()
    kl_none = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none")
    loss_robust = (1.0 / 16) * torch.sum(torch.sum(kl_none, dim=1) * (1.0000001 - true_probs))
    official = loss_adv + 5.0 * loss_robust
    ours = sum(mart_loss(s_nat, s_adv, y, beta=5.0).values())
    assert torch.allclose(ours, official, atol=1e-5)


def test_iad_follows_table_1_and_warms_up():
    s_nat, s_adv, t_nat, t_adv = (logits(16, 10, seed=i) for i in range(4))
    y = torch.arange(16) % 10
    w = F.softmax(t_adv, 1)[torch.arange(16), y] ** 0.1
    expected = (w * kl(s_adv, F.softmax(t_nat, 1), reduction="none")
                + (1 - w) * kl(s_adv, F.softmax(s_nat, 1), reduction="none")).mean()
    after = sum(iad_loss(s_nat, s_adv, t_nat, t_adv, y, epoch=61).values())
    assert torch.allclose(after, expected, atol=1e-6)
    during_warmup = iad_loss(s_nat, s_adv, t_nat, t_adv, y, epoch=60)
    assert during_warmup["kl_self"] == 0
    assert torch.allclose(during_warmup["kl_teacher"], kl(s_adv, F.softmax(t_nat, 1)))


# --- the table -----------------------------------------------------------------------------------

def test_methods_mirror_table_1():
    assert list(METHODS) == ["natural", "sat", "trades", "mart", "ard", "iad", "rslad"]
    attack = {name: m.attack for name, m in METHODS.items()}
    assert attack == {"natural": "none", "sat": "ce", "trades": "kl_self", "mart": "ce",
                      "ard": "ce", "iad": "ce", "rslad": "kl_teacher"}
    teachers = {name for name, m in METHODS.items() if m.needs_teacher}
    assert teachers == {"ard", "iad", "rslad"}


def test_paper_defaults():
    assert METHODS["rslad"].defaults == {"alpha": 5 / 6, "kl_scale": 1.0}
    assert METHODS["trades"].defaults["beta"] == 6.0
    assert METHODS["ard"].defaults == {"alpha": 1.0, "tau": 30.0, "kl_scale": 1.0}
    assert METHODS["iad"].defaults["warmup"] == 60


def test_rslad_reads_no_hard_label():
    assert "y" not in METHODS["rslad"].inputs
    assert METHODS["rslad"].inputs == ("s_nat", "s_adv", "t_nat")


@pytest.mark.parametrize("name", list(METHODS))
def test_every_loss_returns_finite_named_terms(name):
    method: Method = METHODS[name]
    tensors = {"s_nat": logits(8, 10), "s_adv": logits(8, 10, seed=1), "t_nat": logits(8, 10, seed=2),
               "t_adv": logits(8, 10, seed=3), "y": torch.arange(8) % 10, "epoch": 100}
    terms = method.loss(**{k: tensors[k] for k in method.inputs})
    assert terms and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
