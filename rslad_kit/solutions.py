"""Solutions to the notebooks' exercises, kept out of the notebooks so a student predicts first.

In a notebook, `solutions.show("02.1")` prints the answer to exercise 1 of notebook 02. Answers say
what to expect and why, not numbers: those come from your own run. Instructors: notebooks/README.md.
"""

from __future__ import annotations

from IPython.display import Markdown, display

from rslad_kit.errors import UserError

SOLUTIONS: dict[str, str] = {
    "00.1": """**A natural model under PGD.** Close to 0%. Nothing in natural training asks for a stable
prediction inside the ε-ball, and ε = 0.2 is a fifth of the pixel range: PGD-20 finds a perturbation for
almost every image. FGSM, one step, already removes most of the accuracy.""",
    "00.2": """**Is the student as robust as its teacher?** Usually not: the student is much smaller than
the teacher, and capacity limits robustness. It is far more robust than the natural model, though, and
typically at or above a SAT student of its size (notebook 04 trains one). Remember the noise: one seed,
360 test images (one image is 0.28 points).""",
    "01.1": """**ε in grey levels.** ε = 0.2 on [0, 1] is 0.2 × 255 = 51 grey levels per pixel on the digits,
whose 8×8 images are coarse and high-contrast. CIFAR-10's 8/255 is 8 grey levels. The classroom needs a
larger ε for the attack to matter on such images; the regime study (docs/classroom_regime.md) chose it.""",
    "01.2": """**Normalising twice.** The model normalises inside, so an input normalised outside is
normalised again: its values no longer look like anything the model was trained on, and accuracy falls,
often to near chance. Worse, ε is then measured in the wrong units: an attack on normalised inputs with
ε = 8/255 is a different (usually larger) ball in pixel space. Keep tensors in [0, 1]; the kit refuses
anything else (`UserError: inputs must lie in [0,1]`).""",
    "02.1": """**Which objective finds the most adversarial examples?** FGSM (one step) is the weakest;
PGD-20 on cross-entropy and PGD-20 on the CW margin are close, the CW margin often slightly stronger on
robust models because its loss does not saturate. PGD-KL never reads y: it pushes the prediction away from
the model's own clean output, so on images the model already gets wrong it does nothing useful. It is
an attack for *training* (TRADES, RSLAD), not the one to report.""",
    "02.2": """**Sliding ε.** The natural model loses almost every image at small ε; the robust teacher
degrades gradually. Look at the perturbation for the robust model: it tends to look like strokes of
another digit (perceptually aligned gradients), while the natural model's perturbation looks like noise.
Note `max |x' - x|` never exceeds ε: the attack projects onto the ball.""",
    "02.3": """**AutoAttack versus PGD.** AutoAttack takes, for each image, the worst of four attacks
(APGD-CE, APGD-T, FAB-T, Square), so its accuracy is at most PGD's up to noise from its random starts,
and usually a little lower. A large gap, or Square beating the gradient attacks, is the sign of gradient
masking: `evaluate` warns about it.""",
    "03.1": """**Shuffled labels.** The RSLAD terms do not change at all: RSLAD reads no hard label, neither
in its loss nor in its attack (the attack maximises KL to T(x)). Do the same with `"sat"` or `"trades"`:
their terms change, because they read y.""",
    "03.2": """**The official ×0.1 at classroom scale.** The gradient is ten times smaller, which with SGD is
a ten times smaller learning rate. On CIFAR-10 the official recipe has 300 epochs of 390 steps to make
up for it; the classroom has a few hundred steps in all, so a ×0.1 student barely moves and stays far
less robust than the batchmean one. That is why the classroom preset uses `kl_scale = 1`
(docs/classroom_regime.md).""",
    "04.1": """**RSLAD versus SAT.** On average RSLAD beats SAT under PGD at this scale and keeps a much
higher clean accuracy, but a single pair of runs can go either way. The teacher's soft labels carry more
than a one-hot label (how unsure the teacher is, which classes look alike), and they make training of
this small student stable: in the regime study (docs/classroom_regime.md) SAT's training collapsed on
about half the seeds, RSLAD's never. When SAT trains well, it matches RSLAD, and under CW∞ it often
wins. Whether a difference exceeds the seed noise is a question for `rslad-kit reproduce` (notebook
08).""",
    "04.2": """**RSLAD from the natural teacher (NSL, Table 7).** In the paper, PGD accuracy falls by several
points while clean accuracy barely moves: a natural teacher's soft labels are confident and non-robust,
and the student learns to match them. The student still trains on adversarial examples, though, so it
is far from a natural model. At classroom scale the gap is a few points on one seed, no larger than the
seed noise, and NSL can come out ahead: notebook 05 and `make demo`'s Table 7 (3 seeds) look closer.""",
    "05.1": """**Which soft label is most concentrated?** NSL and SSL put most of their mass on the true
class; RSL the least, and it is the most spread out (highest entropy). A natural teacher is confident on
clean images: its boxes sit near 1 on the true class and near 0 elsewhere, which is the paper's "NSL
probabilities are more concentrated around the ground truth", now a number in the table. SSL gives every
image of a class the *same* label, (1 − s) + s/C on the true class and s/C elsewhere, so its boxes are flat
lines: it says nothing about the image. RSL varies from image to image, and where the robust teacher is
unsure it spreads probability over other digits (look at which ones a 3 and an 8 share theirs with): that
is what a one-hot label cannot teach.""",
    "05.2": """**RSLAD from natural or smoothed labels.** In the paper (CIFAR-10) both fall behind RSL
under attack: NSL is the worst, SSL in between, and clean accuracy barely moves. All three students are
trained on adversarial examples (RSLAD's inner attack maximises the KL to the soft label), so none of them
is a natural model: what changes is only the target, and a natural teacher's confident, non-robust
target transfers less robustness than the robust teacher's. At classroom scale the gaps are a few points
on one seed, the same size as the seed noise: NSL can even come out ahead on a single seed. Read
`make demo`'s Table 7 (3 seeds) and its summary before concluding either way.""",
    "06.1": """**Against the teacher, or each model itself.** Against the teacher, every model sees the same
x′, so differences between the maps come from the models alone. Against each model, x′ is that model's own
worst case: for the robust models (teacher, RSLAD, ARD, IAD, SAT) the perturbation is small in effect and
their maps change little; a less robust model's own attack moves its prediction, and its maps change most.
The teacher's maps are the same in both settings (its own attack is the teacher's).""",
    "06.2": """**Which student looks like its teacher?** The paper says RSLAD, then IAD and ARD, from three
pictures; here you have the mean correlation and its interval over 200 images. Do not expect a clean
ranking on the digits: SAT, which never saw the teacher, can be as close as RSLAD or closer, because
robust models' input gradients look alike whatever trained them (they follow the digit's strokes).
Distillation's effect on the maps is then within what robustness alone explains. Where two intervals
overlap, 200 images of one seed cannot order the students; `rslad-kit figures` averages over the seeds
of `make demo`'s results, and Grad-CAM and SmoothGrad need not agree.""",
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
noise. Expect the large effects (robust versus natural, RSL versus NSL) to hold, and the small ones
between distillation methods to be within the noise on 3 seeds of a small model. A difference smaller
than the seed-to-seed standard deviation is not evidence either way.""",
    "08.2": """**Does `rslad+ce` help?** Adding a hard-label term moves RSLAD towards ARD and SAT. Expect
clean accuracy to move slightly and PGD accuracy to stay within the seed noise of RSLAD's at this scale;
the table tells you, with the seed standard deviations beside each mean.""",
}


def show(key: str) -> None:
    """Display the solution to exercise `key` ("<notebook>.<exercise>", e.g. "02.1")."""
    if key not in SOLUTIONS:
        raise UserError(f"no solution {key!r}; known: {', '.join(SOLUTIONS)}")
    display(Markdown(SOLUTIONS[key]))
