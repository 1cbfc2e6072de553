"""Exercises that bind: a prediction recorded before the experiment, the answer only after it; and
code that students write, checked against the kit's own functions.

In a notebook, an exercise is three steps (notebooks/README.md, "Solutions"):

    ask = solutions.predict("00.1", "PGD accuracy of the natural model, in %")   # before the experiment
    ...                                                                           # the experiment
    ask.reveal(result)   # the answer, beside the prediction and the result, once a prediction is locked

`reveal` is the only way an answer reaches the page, so Run All never shows one before its
experiment; a button's experiment reveals inside the button's output (`lab.RunButton(reveal=ask)`).
Answers say what to expect and why; the numbers come from your own run. Code exercises
(`check("entropy", my_entropy)`) compare a student's function with the kit's on random inputs and
hand back the one later cells use. Instructors: notebooks/README.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import ipywidgets as widgets
import torch
from IPython.display import Markdown, display
from torch import Tensor

from rslad_kit import attacks, losses, models
from rslad_kit.errors import UserError

# CI sets this to lock every prediction at its first choice (or 0), so the answers appear in the
# executed notebook and tests/test_notebooks.py can check that each comes after its experiment.
AUTO_PREDICT = "RSLAD_KIT_AUTO_PREDICT"

SOLUTIONS: dict[str, str] = {
    "00.1": """**A natural model under PGD.** Close to 0%. Nothing in natural training asks for a stable
prediction inside the ε-ball, and ε = 0.2 is a fifth of the pixel range: PGD-20 finds a perturbation for
almost every image. FGSM, one step, already removes most of the accuracy.""",
    "00.2": """**Is the student as robust as its teacher?** No: the student is much smaller than the
teacher, and capacity limits robustness. It is far more robust than the natural model, though. Whether it
beats a SAT student of its own size (notebook 04) is another question, and on digits one seed cannot
answer it: `make demo`'s three seeds tied (RSLAD − SAT = −0.8 points, 95% interval [−14.6, +12.9]);
see the caveat below and `docs/classroom_regime.md`. One test image is 0.28 points.""",
    "01.1": """**ε in grey levels.** The digits have 17 grey levels (0–16, divided by 16 to lie in [0, 1]),
so ε = 0.2 lets each pixel move by 0.2 × 16 = 3.2 of those 16 steps: a fifth of the range, on coarse,
high-contrast 8×8 images. CIFAR-10's 8/255 is 8 of 255 levels, about 3% of the range. The classroom
needs the larger ε for the attack to matter on such images; the regime study (`docs/classroom_regime.md`)
chose it.""",
    "01.2": """**Normalising twice.** The model normalises inside, so an input normalised outside is
normalised again: its values no longer look like anything the model was trained on, and accuracy falls,
often to near chance. And ε is measured in the wrong units: normalising divides by σ (about 0.25 on
CIFAR-10), so ε = 8/255 on normalised inputs is σ × 8/255 ≈ 2/255 in pixels, a ball about **4× smaller**
than the one the paper reports. (The kit's students carry no normalisation, nor do the official students
and the TRADES teacher; the models that do, such as the DeepMind RobustBench teachers, carry it inside.)
Keep tensors in [0, 1]; the
kit refuses anything else (`UserError: inputs must lie in [0,1]`).""",
    "02.1": """**Which objective leaves the least accuracy?** FGSM (one step) is the weakest, so it leaves
the most. PGD-20 on cross-entropy is stronger, and PGD-20 on the CW margin usually stronger still on
robust models, because its loss does not saturate (on the digits teacher the gap can be ten points).
PGD-KL ranks with FGSM or between FGSM and PGD-CE: it never reads y and pushes the prediction away from
the model's own clean output, so on images the model already gets wrong it has nothing to do, and it
aims at *any* change of the output rather than at the true class. It is an attack for *training*
(TRADES, RSLAD), not the one to report.""",
    "02.2": """**Sliding ε.** The natural model loses almost every image at small ε; the robust teacher
degrades gradually. Look at the perturbation for the robust model: it tends to look like strokes of
another digit (perceptually aligned gradients), while the natural model's perturbation looks like noise.
Note `max |x' - x|` never exceeds ε: the attack projects onto the ball.""",
    "02.3": """**AutoAttack versus PGD.** Below, and on the digits teacher often well below: AutoAttack takes,
for each image, the worst of four attacks (APGD-CE, APGD-T, FAB-T, Square), while PGD_TRADES' 20 small
steps (about 0.1·ε each) explore little of a ball as large as ε = 0.2 (CW∞ above is already lower). On 40
images one image is 2.5 points. A large gap alone says PGD_TRADES is a weak attack here; the sign of
gradient masking is the black-box Square doing better than the gradient attacks, which `evaluate` warns
about in `warnings`.""",
    "03.1": """**Shuffled labels.** The RSLAD terms do not change at all: RSLAD reads no hard label, neither
in its loss nor in its attack (the attack maximises KL to T(x)). SAT's term changes, because both its
loss and its attack read y.""",
    "03.2": """**The official ×0.1 at classroom scale.** The loss gradient is ten times smaller. With SGD
and weight decay wd, a step is lr·(0.1·∇L + wd·θ) = (0.1·lr)·(∇L + 10·wd·θ): a ten times smaller
learning rate *and* ten times the weight decay, not a learning-rate factor alone. On CIFAR-10 the
official recipe has 300 epochs of 390 steps to make up for it; the classroom has a few hundred steps in
all, so a ×0.1 student moves little, is pulled harder towards zero, and stays less robust than the
batchmean one. That is why the classroom preset uses `kl_scale = 1` (`docs/classroom_regime.md`).""",
    "03.3": """**The error in eq. 3.** Its inner maximisation reads $\\arg\\max \\mathrm{KL}(S(x), T(x))$,
which does not depend on $x'$ at all: there is nothing to maximise. Table 1's last row, the official code
and `losses.METHODS["rslad"].attack == "kl_teacher"` all use $\\mathrm{KL}(S(x'), T(x))$: the student's
prediction on the *adversarial* image, pushed away from the teacher's robust soft label on the clean one.""",
    "04.1": """**RSLAD versus SAT.** On digits, one pair of runs can go either way, and so can three
seeds: `make demo`'s seeds 0–2 tied under PGD_TRADES (−0.8 points, 95% interval [−14.6, +12.9]). Over
the regime study's 12 seeds RSLAD led on average, mostly because SAT training of this small student
collapses on some seeds (clean accuracy below 70% on 7 of 12) and RSLAD's never did; when SAT trains well
it matches RSLAD, and under CW∞ it often wins. Clean accuracy is usually higher for RSLAD. The paper's
claim, RSLAD ahead under every attack, is not what digits show (`docs/classroom_regime.md`).""",
    "04.2": """**RSLAD from the natural teacher (NSL, Table 7).** In the paper, PGD_TRADES accuracy falls
*drastically*, by 8.8 points (55.9% → 47.1%; AutoAttack 51.5% → 42.9%), while clean accuracy rises
slightly (83.4% → 85.0%): a natural teacher's soft labels are confident and non-robust, and the student
learns to match them. The student still trains on adversarial examples, so it is far from a natural
model. On digits the RSL − NSL gap of one seed is no larger than the seed noise: read it with
`make demo`'s Table 7 (3 seeds) and its summary.""",
    "05.1": """**Which soft label is most concentrated?** NSL and SSL put most of their mass on the true
class; RSL the least, and it is the most spread out (highest entropy). A natural teacher is confident on
clean images: its boxes sit near 1 on the true class and near 0 elsewhere, which is the paper's "NSL
probabilities are more concentrated around the ground truth", now a number in the table. SSL gives every
image of a class the *same* label, (1 − s) + s/C on the true class and s/C elsewhere, so its boxes are flat
lines: it says nothing about the image. RSL varies from image to image, and where the robust teacher is
unsure it spreads probability over other digits (look at which ones a 3 and an 8 share theirs with): that
is what a one-hot label cannot teach.""",
    "05.2": """**RSLAD from natural or smoothed labels.** In the paper (CIFAR-10, Table 7) robustness
"drops drastically": NSL loses 8.8 PGD_TRADES points against RSL (47.1% against 55.9%) and SSL 2.8
(53.1%), while clean accuracy rises by 1.6 and 2.3 points. All three students are trained on adversarial
examples (RSLAD's inner attack maximises the KL to the soft label), so none of them is a natural model:
what changes is only the target. On digits, the differences between the three are a few points, the
size of the seed noise: one seed can put NSL ahead. `make demo`'s Table 7 (3 seeds) and its summary say
whether RSL's lead exceeds the noise; notebook 08 reads them.""",
    "06.1": """**Against the teacher, or each model itself.** Against the teacher, every model sees the same
x′, so differences between the maps come from the models alone. Against each model, x′ is that model's own
worst case, and for most images it flips the prediction: at ε = 0.2 even the teacher keeps only about
two thirds of the test images under PGD, and the students less than half. The maps of a model whose
prediction flips change most, since the attack moved what drives its logits; on the images a model
still gets right they change less. The teacher's maps are the same in both settings (its own attack is
the teacher's).""",
    "06.2": """**Which student looks like its teacher?** The paper ranks RSLAD's maps above ARD's and
IAD's, from three pictures; it does not order ARD against IAD. Here you have the mean correlation and
its interval over 200 images. Do not expect a clean ranking on the digits: SAT, which never saw the
teacher, can be as close as RSLAD or closer, because robust models' input gradients look alike whatever
trained them (they follow the digit's strokes). Where two intervals overlap, 200 images of one seed
cannot order the students; `rslad-kit figures` averages over the seeds of `make demo`'s results, and
Grad-CAM and SmoothGrad need not agree.""",
    "07.1": """**The biggest teacher?** Not in the paper: on CIFAR-10 the student's robustness first rises
with the teacher's and then falls. A teacher of the student's own size is less robust than its student
can become (*robust underfitting*: the student ends up above it); past the best teacher, a wider, more
robust teacher is harder for a small student to imitate, and the student's robustness falls (*robust
saturation*). On digits the ladder is short and the models small, so the shape may differ: the figure's
title and the summary say what this run shows.""",
    "07.2": """**Beyond the noise?** Not necessarily. The verdict pairs the students by seed and asks that
the best teacher's student beats both ends of the ladder with a 95% interval that excludes zero; with three
seeds that needs differences of several points. The two regions are tested the same way, with wider
intervals for the several teachers compared, so that with no effect each verdict fires in under 5% of
studies (`tests/test_teacher_study.py` measures it). Whatever the study finds is the result, including "no
clear rise and fall": it is a statement about small CNNs on 8×8 digits, not about the paper.""",
    "08.1": """**Which claims hold on digits?** Read `summary.md`: each claim is checked against the seed
noise. Expect the large effect, robust training against natural training, to hold clearly. The smaller
ones, between distillation methods and between RSL and NSL, are a few points at this scale, the size of
the seed noise on 3 seeds of a small model: the summary says for each whether it holds, and "not beyond
the noise" is a result, not a failure. A difference smaller than the seed-to-seed standard deviation is
not evidence either way. (Notebook 05's single seed is read the same way.)""",
    "08.2": """**Does `rslad+ce` help?** Adding a hard-label term moves RSLAD towards ARD and SAT. Expect
clean accuracy to move slightly and PGD accuracy to change by no more than the seed noise. With
`SEEDS = 1` the table has no standard deviation: one seed cannot tell a small gain from noise. Rerun
with `SEEDS = 3` (or read the classroom tables) to see mean ± sd beside each row.""",
}


# --- predictions that bind --------------------------------------------------------------------------

class Prediction:
    """A recorded prediction for exercise `key`: a choice among `choices`, or a number when there are
    none. "Lock in" freezes it; `reveal` (after the experiment) shows it beside the result and the answer."""

    def __init__(self, key: str, question: str, choices: list[str] | None = None) -> None:
        if key not in SOLUTIONS:
            raise UserError(f"no solution {key!r}; known: {', '.join(SOLUTIONS)}")
        self.key, self.question, self.locked = key, question, None
        self.result: Any = None
        self.revealed = False   # set by `reveal`: the experiment has run
        self.input = (widgets.Dropdown(options=choices, description="I predict")
                      if choices else widgets.FloatText(description="I predict"))
        self.button = widgets.Button(description="Lock in my prediction", layout=widgets.Layout(width="auto"))
        self.output = widgets.Output()   # where a late lock-in shows the answer (below the experiment)
        self.button.on_click(lambda _button: self.lock())
        if os.environ.get(AUTO_PREDICT):
            self.lock()

    def lock(self) -> None:
        self.locked = self.input.value
        self.input.disabled = self.button.disabled = True
        if self.revealed:   # the experiment ran before the lock-in: answer now, under the experiment
            with self.output:
                display(self._answer())

    def reveal(self, result: Any = None) -> None:
        """Call after the experiment: the answer beside the prediction and `result` once a prediction
        is locked in (now, or as soon as it is locked in later)."""
        self.result, self.revealed = result, True
        if self.locked is not None:
            display(self._answer())
        else:
            display(Markdown(f"*Exercise {self.key}: lock in a prediction above; its answer appears here.*"),
                    self.output)

    def _answer(self) -> Markdown:
        return Markdown(f"| exercise {self.key} | |\n|---|---|\n| {self.question}: you predicted | "
                        f"{self.locked} |\n| this run | {_brief(self.result)} |\n\n{SOLUTIONS[self.key]}")

    def _ipython_display_(self) -> None:
        display(widgets.VBox([widgets.HTML(f"<b>Exercise {self.key}</b>: {self.question}"),
                              widgets.HBox([self.input, self.button])]))


def predict(key: str, question: str, choices: list[str] | None = None) -> Prediction:
    """The prediction widget of exercise `key`; show it (last line of a cell) before the experiment."""
    return Prediction(key, question, choices)


def _brief(result: Any) -> str:
    """A result in one table cell: a number, a short text, `{name: number}` pairs, or a pointer to the
    output above for anything else (a table, a figure)."""
    if isinstance(result, dict):
        return "; ".join(f"{k}: {_brief(v)}" for k, v in result.items())
    if isinstance(result, float):
        return f"{result:.1f}"
    if isinstance(result, (int, str)):
        return str(result).replace("\n", " ").replace("|", "/")
    return "see the output above"


# --- code that students write ------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    """A function a student writes, the kit's own version of it, and random inputs to compare them on."""

    reference: Callable[..., Tensor]
    inputs: Callable[[torch.Generator], tuple]
    signature: str


def _reference_pgd_step(model, x, y, eps, step_size):
    return attacks.pgd(model, x, attacks.ce(y), eps=eps, step_size=step_size, steps=1, random_start="none")


def _pgd_inputs(g: torch.Generator) -> tuple:
    with torch.random.fork_rng():   # the model's initialisation, without touching the caller's RNG
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=g)))
        model = models.build("cnn-w4", 10, in_channels=1).eval()
    x = torch.rand(6, 1, 8, 8, generator=g)
    # A step larger than eps in half the trials: the projection onto the ball must matter.
    step = float(torch.rand((), generator=g)) * 0.3 + 0.05
    return model, x, torch.randint(0, 10, (6,), generator=g), 0.1, step


def _reference_rslad_loss(s_nat, s_adv, t_nat, alpha):
    return sum(losses.rslad_loss(s_nat, s_adv, t_nat, alpha=alpha).values())


def _logits(g: torch.Generator) -> Tensor:
    return torch.randn(8, 10, generator=g) * 3


EXERCISES: dict[str, Exercise] = {
    "pgd_step": Exercise(_reference_pgd_step, _pgd_inputs, "pgd_step(model, x, y, eps, step_size) -> x_adv"),
    "rslad_loss": Exercise(_reference_rslad_loss,
                           lambda g: (_logits(g), _logits(g), _logits(g), float(torch.rand((), generator=g))),
                           "rslad_loss(s_nat, s_adv, t_nat, alpha) -> scalar"),
    "entropy": Exercise(losses.entropy, lambda g: (torch.softmax(_logits(g), dim=1),),
                        "entropy(p) -> one entropy in nats per row of p"),
}


def check(name: str, attempt: Callable[..., Tensor], *, trials: int = 5) -> Callable[..., Tensor]:
    """Compare a student's `attempt` with the kit's function on `trials` random inputs and print
    "correct" or where it differs. Returns what later cells should use: the attempt when it is correct,
    else the kit's own function (so a skipped or wrong exercise does not break the notebook)."""
    if name not in EXERCISES:
        raise UserError(f"no code exercise {name!r}; known: {', '.join(EXERCISES)}")
    verdict = compare(EXERCISES[name], attempt, trials)
    print(f"{name}: {verdict}" + ("" if verdict == "correct" else "; later cells use the kit's solution"))
    return attempt if verdict == "correct" else EXERCISES[name].reference


def compare(exercise: Exercise, attempt: Callable[..., Tensor], trials: int = 5) -> str:
    """"correct", or the first difference between `attempt` and `exercise.reference`."""
    g = torch.Generator().manual_seed(0)
    for trial in range(trials):
        args = exercise.inputs(g)
        expected = exercise.reference(*args)
        try:
            got = attempt(*args)
        except NotImplementedError:
            got = None
        except Exception as e:   # a student's bug: say what it was, in one line
            return f"raised {type(e).__name__}: {e}"
        if got is None:
            return f"not attempted (it returned nothing); write {exercise.signature}"
        got = torch.as_tensor(got, dtype=expected.dtype).detach()
        if got.shape != expected.shape:
            return f"differs in shape on input {trial}: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        close = torch.isclose(got, expected.detach(), rtol=1e-4, atol=1e-5)
        if not close.all():
            where = tuple(int(i) for i in (~close).nonzero()[0]) if close.dim() else ()
            return (f"differs at input {trial}, element {where}: expected {expected.detach()[where].item():.5g}, "
                    f"got {got[where].item():.5g}")
    return "correct"
