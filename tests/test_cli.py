"""The `rslad-kit` command: evaluate end to end, presets, and one-line errors."""

import argparse
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import rslad_kit
from rslad_kit import cli as cli_module
from rslad_kit import config, models, train
from rslad_kit.losses import METHODS


def cli(*args):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rslad_kit.cli", "--threads", "1", *args],
                          capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sat"
    train.train(config.preset("smoke", "sat"), out, progress=False)
    return out / "best.pt"


def test_evaluate_prints_the_table_and_writes_json(checkpoint, tmp_path):
    result = cli("evaluate", "--model", "cnn-w4", "--checkpoint", str(checkpoint), "--dataset", "digits",
                 "--eps", "0.2", "--attacks", "clean,fgsm,pgd_trades", "--n", "50", "--json",
                 str(tmp_path / "row.json"))
    assert result.returncode == 0, result.stderr
    assert "pgd_trades" in result.stdout
    row = json.loads((tmp_path / "row.json").read_text())
    assert row["n"] == 50 and row["pgd_trades"] <= row["clean"] and row["model"] == "cnn-w4"


def test_evaluate_keeps_autoattack_progress_beside_its_json_and_clears_it_when_done(checkpoint, tmp_path,
                                                                                   monkeypatch):
    """The state file is per checkpoint and eps; evaluate.evaluate resumes from it (test_reliability
    kills an AutoAttack run and resumes it)."""
    from rslad_kit import cli as cli_lib
    from rslad_kit import evaluate

    seen = []

    def fake_evaluate(model, data, attacks, *, autoattack_state=None, **kwargs):
        seen.append(autoattack_state)
        autoattack_state.write_bytes(b"progress")
        return {"n": 8, "eps": kwargs["eps"], "seconds": {}, **{a: 50.0 for a in attacks}}

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    args = ["--threads", "1", "evaluate", "--model", "cnn-w4", "--checkpoint", str(checkpoint), "--dataset",
            "digits", "--eps", "0.2", "--attacks", "clean,autoattack", "--n", "8", "--json", str(tmp_path / "r.json")]
    assert cli_lib.main(args) == 0
    state = seen[0]
    assert state.parent == tmp_path and state.name.startswith(".r.json.autoattack-") and "eps0.2" in state.name
    assert not state.exists() and (tmp_path / "r.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--attacks", "clean,pgd50"], "unknown attack 'pgd50'"),
    (["--eps", "8"], "eps must lie in (0, 1]"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--model", "resnet18"], "does not fit ResNet"),
    (["--checkpoint", "nowhere.pt"], "checkpoint nowhere.pt not found"),
])
def test_evaluate_bad_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, args, message):
    base = {"--model": "cnn-w4", "--checkpoint": str(checkpoint), "--dataset": "digits", "--eps": "0.2",
            "--attacks": "clean", "--json": str(tmp_path / "row.json")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = cli("evaluate", *[x for pair in base.items() for x in pair])
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "row.json").exists()


def test_a_checkpoint_carrying_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": models.build("cnn-w4", 10, in_channels=1).state_dict(), "extra": Payload()},
               tmp_path / "evil.pt")
    result = cli("evaluate", "--model", "cnn-w4", "--checkpoint", str(tmp_path / "evil.pt"), "--dataset", "digits",
                 "--eps", "0.2", "--attacks", "clean")
    assert result.returncode == 2 and "refused" in result.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", list(config.PRESETS))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_preset_builds_a_valid_config_for_every_method(name, method):
    cfg = config.preset(name, method, teacher="t" if METHODS[method].needs_teacher else None)
    train.check_config(cfg)
    assert config.from_dict(config.to_dict(cfg)) == cfg


# --- a command line that explains itself ---------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_a_help_text():
    parser = cli_module.build_parser()
    commands = {"rslad-kit": parser, **_subparsers(parser)}
    bare = [f"{name} {'/'.join(a.option_strings)}" for name, p in commands.items() for a in p._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction) and not a.help]
    assert not bare, f"options without help: {bare}"


def test_train_help_lists_the_presets_and_methods(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_module.main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(name in out for name in config.PRESETS) and all(name in out for name in METHODS)


def test_evaluate_help_says_what_each_attack_is(capsys):
    from rslad_kit import evaluate

    with pytest.raises(SystemExit):
        cli_module.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert all(f"  {name} " in out and attack.about in out for name, attack in evaluate.ATTACKS.items())


@pytest.mark.parametrize("argv, hint", [
    (["train", "--preset", "clasroom", "--method", "rslad"], "unknown preset 'clasroom'; did you mean 'classroom'?"),
    (["train", "--preset", "smoke", "--method", "rsald"], "unknown method 'rsald'; did you mean 'rslad'?"),
    (["train", "--preset", "smoke", "--method", "sat", "--set", "model=resnet-18"],
     "unknown model 'resnet-18'; did you mean 'resnet18'?"),
    (["evaluate", "--model", "cnn-w4", "--checkpoint", "x.pt", "--dataset", "digits", "--attacks", "pgd_trade"],
     "unknown attack 'pgd_trade'; did you mean 'pgd_trades'?"),
    (["evaluate", "--model", "cnn-w4", "--checkpoint", "x.pt", "--dataset", "digit"],
     "unknown dataset 'digit'; did you mean 'digits'?"),
    (["reproduce", "--preset", "smok", "--dry-run"], "unknown preset 'smok' for reproduce; did you mean 'smoke'?"),
])
def test_a_mistyped_name_gets_a_did_you_mean(argv, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / "run")] if argv[0] == "train" else []
    assert cli_module.main(argv + out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rslad-kit: error: {hint} ") and len(err.splitlines()) == 1


def test_a_name_like_no_known_one_gets_no_guess():
    with pytest.raises(rslad_kit.UserError) as err:
        config.preset("imagenet")
    assert "did you mean" not in str(err.value)


def test_version_and_what_the_tool_is_for(capsys):
    with pytest.raises(SystemExit):
        cli_module.main(["--version"])
    assert capsys.readouterr().out.strip() == f"rslad-kit {rslad_kit.__version__}"
    with pytest.raises(SystemExit):
        cli_module.main(["--help"])
    out = capsys.readouterr().out
    assert "No logic lives here" not in out and "Table 1" in out


def test_a_warning_is_one_line_above_the_progress_bar(capsys, monkeypatch, tmp_path):
    from tqdm import tqdm

    def warn(args):
        warnings.warn("the CIFAR copy differs from the official release", UserWarning)
    written = []
    monkeypatch.setattr(cli_module, "cmd_figures", warn)
    monkeypatch.setattr(tqdm, "write", classmethod(lambda cls, s, file=None, **kw: written.append(s) or print(s, file=file)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli_module.main(["figures", "--out", str(tmp_path)]) == 0
    assert written == ["rslad-kit: warning: the CIFAR copy differs from the official release"]   # tqdm clears its bar first
    assert capsys.readouterr().err == written[0] + "\n"


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_a_dry_run_reads_no_data_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    from rslad_kit import data

    def untouchable(*args, **kwargs):
        raise AssertionError("a dry run read or downloaded a dataset")
    for dataset in data.SIZES:   # everything but digits, which ships with scikit-learn
        monkeypatch.setitem(data.DATASETS, dataset, untouchable)
    if config.PRESETS[name].plan is None:
        pytest.skip(f"{name} has no plan")
    assert cli_module.main(["--threads", "1", "reproduce", "--preset", name, "--dry-run",
                            "--data-root", str(tmp_path / "nodata"), "--out", str(tmp_path / "out")]) == 0
    assert "estimated training" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
