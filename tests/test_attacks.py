"""Attacks and evaluation: contracts a user relies on."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rslad_kit import UserError, attacks
from rslad_kit import evaluate as evaluate_lib
from rslad_kit.evaluate import evaluate

EPS = 8 / 255


def tiny_model(seed=0, classes=10):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


OBJECTIVES = {
    "ce": lambda y, m, x: attacks.ce(y),
    "kl": lambda y, m, x: attacks.kl_to(F.softmax(m(x), 1).detach()),
    "cw": lambda y, m, x: attacks.cw_margin(y),
}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("start", ["uniform", "normal", "none"])
def test_pgd_stays_in_ball_and_range_and_is_detached(batch, objective, start):
    x, y = batch
    model = tiny_model().eval()
    x_adv = attacks.pgd(model, x, OBJECTIVES[objective](y, model, x), eps=EPS, step_size=2 / 255, steps=5,
                        random_start=start)
    assert (x_adv - x).abs().max() <= EPS + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert (x_adv != x).any()


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_pgd_restores_mode_and_leaves_parameter_grads(batch, mode, bn_mode):
    x, y = batch
    model = tiny_model().train(mode == "train")
    model[0].weight.grad = torch.ones_like(model[0].weight)
    attacks.pgd(model, x, attacks.ce(y), eps=EPS, step_size=2 / 255, steps=3, bn_mode=bn_mode)
    assert model.training == (mode == "train")
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")


def test_bn_mode_train_moves_running_stats_and_eval_does_not(batch):
    x, y = batch
    model = tiny_model()
    before = model[1].running_mean.clone()
    attacks.pgd(model, x, attacks.ce(y), eps=EPS, step_size=2 / 255, steps=2, bn_mode="eval")
    assert torch.equal(model[1].running_mean, before)
    attacks.pgd(model, x, attacks.ce(y), eps=EPS, step_size=2 / 255, steps=2, bn_mode="train")
    assert not torch.equal(model[1].running_mean, before)


def test_pgd_increases_the_loss_it_maximises(batch):
    x, y = batch
    model = tiny_model().eval()
    x_adv = attacks.pgd(model, x, attacks.ce(y), eps=EPS, step_size=2 / 255, steps=10)
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_fgsm_is_one_full_step_from_clean(batch):
    x, y = batch
    model = tiny_model().eval()
    x_adv = attacks.fgsm(model, x, y, eps=EPS)
    delta = (x_adv - x).abs()
    interior = (x > EPS) & (x < 1 - EPS)   # where clipping to [0,1] cannot bite
    assert torch.allclose(delta[interior], torch.full_like(delta[interior], EPS), atol=1e-6)


def test_cw_margin_formula():
    z = torch.tensor([[5.0, 1.0, 3.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(attacks.cw_margin(y, kappa=0.0)(z), torch.tensor([-2.0, 0.0]))
    assert torch.allclose(attacks.cw_margin(y, kappa=50.0)(z), torch.tensor([-52.0, -48.0]))


def test_matches_official_rslad_inner_maximisation(batch):
    """rslad_loss.py::rslad_inner_loss, transcribed, gives the same adversarial examples."""
    x, _ = batch
    student, teacher = tiny_model(0), tiny_model(1).eval()
    with torch.no_grad():
        teacher_logits = teacher(x)

    torch.manual_seed(5)
    student.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(10):
        x_adv.requires_grad_()
        loss_kl = torch.sum(F.kl_div(F.log_softmax(student(x_adv), dim=1), F.softmax(teacher_logits, dim=1),
                                     reduction="none"))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + 2 / 255 * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    student.train()

    torch.manual_seed(5)
    ours = attacks.pgd(student, x, attacks.kl_to(F.softmax(teacher_logits, 1)), eps=EPS, step_size=2 / 255,
                       steps=10, random_start="normal")
    assert torch.equal(ours, x_adv)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5])
def test_bad_eps_is_a_user_error(batch, eps):
    x, y = batch
    with pytest.raises(UserError, match="eps must lie in"):
        attacks.pgd(tiny_model(), x, attacks.ce(y), eps=eps, step_size=0.01, steps=1)


def test_inputs_outside_unit_range_are_a_user_error(batch):
    x, y = batch
    with pytest.raises(UserError, match=r"inputs must lie in \[0,1\]"):
        attacks.pgd(tiny_model(), (x - 0.5) / 0.25, attacks.ce(y), eps=EPS, step_size=0.01, steps=1)


def test_unknown_attack_is_a_user_error(batch):
    with pytest.raises(UserError, match="unknown attack 'pgd50'"):
        evaluate(tiny_model(), batch, ["clean", "pgd50"])


# --- evaluation --------------------------------------------------------------------------------------

def test_evaluate_row_is_complete_ordered_and_json(batch):
    model = tiny_model().eval()
    row = evaluate(model, batch, ["clean", "fgsm", "pgd_sat", "pgd_trades", "cw"], eps=EPS)
    json.dumps(row)
    assert row["n"] == 16 and set(row["seconds"]) == {"clean", "fgsm", "pgd_sat", "pgd_trades", "cw"}
    for name in ("fgsm", "pgd_sat", "pgd_trades", "cw"):
        assert row[name] <= row["clean"]
    assert row["warnings"] == []


def test_evaluate_is_seeded_and_leaves_the_callers_rng_alone(batch):
    model = tiny_model().eval()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = evaluate(model, batch, ["pgd_sat"], eps=EPS, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = evaluate(model, batch, ["pgd_sat"], eps=EPS, seed=1)
    assert a["pgd_sat"] == b["pgd_sat"]


def test_evaluate_warns_about_train_mode_and_probabilities(batch):
    model = tiny_model().train()
    with pytest.warns(UserWarning, match="train mode"):
        row = evaluate(model, batch, ["clean"])
    assert model.training  # restored
    softmaxed = nn.Sequential(tiny_model(), nn.Softmax(dim=1)).eval()
    with pytest.warns(UserWarning, match="probabilities"):
        row = evaluate(softmaxed, batch, ["clean"])
    assert any("probabilities" in w for w in row["warnings"])


def test_evaluate_warns_when_a_perturbation_leaves_the_ball(batch, monkeypatch):
    monkeypatch.setattr(attacks, "white_box", lambda name, m, x, y, eps: (x + 2 * eps).clamp(0, 1))
    with pytest.warns(UserWarning, match="left the eps-ball"):
        row = evaluate(tiny_model().eval(), batch, ["fgsm"], eps=EPS)
    assert row["warnings"]


class Masked(nn.Module):
    """Gradient masking: predictions depend on a quantised input, so gradients are zero."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4) * 1.0 + 0 * x.sum()


class GradientOnlyOnTheGrid(torch.autograd.Function):
    """The identity, whose gradient passes only for images whose pixels all lie on the 1/4 grid."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x * 4 == torch.round(x * 4)).flatten(1).all(1).view(-1, 1, 1, 1)


class CleanOnly(nn.Module):
    """Gradient masking that only a one-step attack gets past: on-grid (clean) images have their true
    gradient, so FGSM works; a random start leaves the grid, and PGD sees no gradient."""

    def __init__(self):
        super().__init__()
        self.net = tiny_model()

    def forward(self, x):
        return self.net(GradientOnlyOnTheGrid.apply(x))


CHEAP = ["clean", "fgsm", "pgd_sat", "pgd_trades", "cw", "pgd_large_eps", "transfer_pgd", "transfer_cw"]


def fired(row):
    return {c["check"] for c in row["masking_checks"] if c["fired"]}


def self_labelled(model, x):
    return x, model(x).argmax(1)   # correct everywhere, so only the attacks decide


HONEST_ROW = {"clean": 90.0, "fgsm": 50.0, "pgd_sat": 40.0, "pgd_trades": 41.0, "cw": 39.0, "autoattack": 36.0,
              "square": 45.0, "transfer_pgd": 70.0, "transfer_cw": 72.0, "pgd_large_eps": 0.0}
MASKED_VALUES = {"autoattack": 20.0, "square": 30.0, "fgsm": 35.0, "transfer_pgd": 30.0, "transfer_cw": 30.0,
                 "pgd_large_eps": 60.0}


@pytest.mark.parametrize("check", evaluate_lib.MASKING_CHECKS)
def test_each_masking_check_fires_on_its_sign_alone_and_not_on_an_honest_row(check):
    assert {c["check"] for c in evaluate_lib.masking_checks(HONEST_ROW)} == set(evaluate_lib.MASKING_CHECKS)
    assert not fired({"masking_checks": evaluate_lib.masking_checks(HONEST_ROW)})
    row = HONEST_ROW | {check: MASKED_VALUES[check]}
    found = [c for c in evaluate_lib.masking_checks(row) if c["fired"]]
    assert [c["check"] for c in found] == [check] and "gradient masking suspected" in found[0]["detail"]
    assert check not in {c["check"] for c in evaluate_lib.masking_checks({"clean": 90.0})}   # nothing to compare


def test_a_quantised_input_fires_the_large_eps_and_transfer_checks():
    model = Masked().eval()
    x, y = self_labelled(model, torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    with pytest.warns(UserWarning, match="gradient masking suspected"):
        row = evaluate(model, (x, y), CHEAP, eps=0.05, surrogate=model.net)
    assert row["pgd_large_eps"] == 100.0   # zero gradients: PGD never leaves the clean image
    assert fired(row) == {"pgd_large_eps", "transfer_pgd", "transfer_cw"}
    assert any(w.startswith("PGD at eps 0.5 leaves 100.0%") for w in row["warnings"])


def test_gradients_only_at_clean_images_fire_the_fgsm_check():
    model = CleanOnly().eval()
    x, y = self_labelled(model, torch.randint(0, 5, (64, 3, 8, 8), generator=torch.Generator().manual_seed(0)) / 4)
    row = evaluate(model, (x, y), ["clean", "fgsm", "pgd_sat", "pgd_trades"], eps=0.05)
    assert row["fgsm"] < row["pgd_sat"] - evaluate_lib.MASKING_MARGIN and fired(row) == {"fgsm"}


def test_an_honest_model_fires_no_masking_check():
    model = tiny_model().eval()
    x, y = self_labelled(model, torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    row = evaluate(model, (x, y), CHEAP, eps=0.05, surrogate=tiny_model(seed=1).eval())
    assert {c["check"] for c in row["masking_checks"]} == {"fgsm", "transfer_pgd", "transfer_cw", "pgd_large_eps"}
    assert row["pgd_sat"] < 100.0 and row["pgd_large_eps"] == 0.0   # the attacks work, and nothing fires
    assert not fired(row) and not row["warnings"]


@pytest.mark.slow
@pytest.mark.parametrize("masked", [True, False])
def test_square_and_autoattack_fire_on_masked_gradients_only(masked, tmp_path):
    torch.set_num_threads(1)
    model = (Masked() if masked else tiny_model()).eval()
    x, y = self_labelled(model, torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    # through the resumable path `reproduce` uses: one sub-attack per AutoAttack call
    state = tmp_path / "state.pt"
    row = evaluate(model, (x, y), ["clean", "pgd_sat", "cw", "autoattack", "square"], eps=0.05,
                   autoattack_state=state, autoattack_only=("apgd-ce", "square"), square_queries=1000)
    assert fired(row) == ({"autoattack", "square"} if masked else set())
    if masked:   # AutoAttack's own Square check, which needs every sub-attack's accuracy, still runs
        assert row["clean"] == 100.0 and row["pgd_sat"] == 100.0
        assert any("(AutoAttack's check): Square Attack has decreased" in w for w in row["warnings"])
        assert set(torch.load(state, weights_only=True)["accuracy"]) == {"clean", "apgd-ce", "square"}


def test_autoattack_adapter_is_deterministic_bounded_and_resumable(batch, tmp_path):
    x, y = batch[0][:8], batch[1][:8]
    model = tiny_model().eval()
    a = attacks.autoattack(model, x, y, eps=EPS, seed=0)
    b = attacks.autoattack(model, x, y, eps=EPS, seed=0, state_path=tmp_path / "state.pt")
    assert torch.equal(a, b)
    state = torch.load(tmp_path / "state.pt", weights_only=True)   # progress a rerun can resume from
    assert state["done"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and torch.equal(state["x_adv"], a)
    assert (a - x).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert not model.training


def test_autoattacks_own_checks_land_in_the_row(batch, monkeypatch):
    import logging

    def flags_and_returns_clean(model, x, y, **kwargs):
        logging.getLogger("auto-attack").warning("Square Attack has decreased the robust accuracy")
        return x

    monkeypatch.setattr(attacks, "autoattack", flags_and_returns_clean)
    with pytest.warns(UserWarning, match="AutoAttack's check"):
        row = evaluate(tiny_model().eval(), batch, ["autoattack"], eps=EPS)
    assert any("Square Attack has decreased" in w for w in row["warnings"])


def test_an_interrupted_autoattack_resumes_after_its_finished_sub_attacks(batch, tmp_path, monkeypatch):
    """Killed during its second sub-attack, a rerun skips the first and ends where one call would."""
    from pyautoattack import AutoAttack

    x, y = batch[0][:8], batch[1][:8]
    model = tiny_model().eval()
    whole = attacks.autoattack(model, x, y, eps=EPS, seed=0)
    real, calls = AutoAttack.run_standard_evaluation, []

    def dies_on_the_second(self, *args, **kwargs):
        calls.append(self.attacks_to_run[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        attacks.autoattack(model, x, y, eps=EPS, seed=0, state_path=tmp_path / "state.pt")
    assert calls == ["apgd-ce", "apgd-t"]
    calls.clear()
    monkeypatch.setattr(AutoAttack, "run_standard_evaluation",
                        lambda self, *a, **k: calls.append(self.attacks_to_run[0]) or real(self, *a, **k))
    resumed = attacks.autoattack(model, x, y, eps=EPS, seed=0, state_path=tmp_path / "state.pt")
    assert "apgd-ce" not in calls and torch.equal(resumed, whole)


# ---------------------------------------------------------------- the registry of named attacks

def test_every_named_attack_has_one_label_and_a_description():
    assert set(evaluate_lib.PAPER_ATTACKS) <= set(evaluate_lib.ATTACKS)
    for name, attack in evaluate_lib.ATTACKS.items():
        assert attack.label and attack.about and callable(attack.run), name
    labels = [a.label for a in evaluate_lib.ATTACKS.values()]
    assert len(set(labels)) == len(labels)
    assert evaluate_lib.attack_label("autoattack") == "AutoAttack"   # tables and figures alike
    assert evaluate_lib.attack_label("not-an-attack") == "not-an-attack"


def test_the_plans_attack_lists_are_registry_names():
    from rslad_kit import plan

    for names in (plan.PAPER_ATTACKS, plan.BLACK_BOX, plan.SOFT_LABEL_ATTACKS, plan.CHECKS, plan.SLOW_ATTACKS):
        assert set(names) <= set(evaluate_lib.ATTACKS)
    assert set(attacks.WHITE_BOX) <= set(evaluate_lib.ATTACKS)
