"""Contracts of the teachers shipped with the kit: retrained bit for bit by their one command, checked by
SHA-256 on every read, used by `reproduce` unless it is asked to retrain them."""

import json

import pytest
import torch

from rslad_kit import config, loading, models, reproduce
from rslad_kit.errors import UserError

TINY = ("smoke", dict(method="trades", model="cnn-w4", epochs=1, milestones=(1,)))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A one-epoch digits teacher registered as shipped, shipped into a temporary folder."""
    monkeypatch.setitem(config.SHIPPED_TEACHERS, "tiny", TINY)
    monkeypatch.setattr(models, "SHIPPED", tmp_path / "teachers")
    file, same = reproduce.retrain_teacher("tiny", tmp_path / "first", ship=True, progress=False)
    assert same is None   # nothing was shipped before
    return tmp_path


def test_a_retrained_teacher_is_bit_for_bit_the_shipped_one(tiny):
    record = json.loads((tiny / "teachers" / "tiny.json").read_text())
    assert record["command"] == "rslad-kit --threads 1 teacher tiny"
    assert config.from_dict(record["config"]) == config.preset("smoke", **TINY[1], seed=0, teacher=None)
    file, same = reproduce.retrain_teacher("tiny", tiny / "second", progress=False)
    assert same is True and file.read_bytes() == (tiny / "teachers" / "tiny.pt").read_bytes()


def test_a_changed_recipe_is_not_the_shipped_teacher(tiny, monkeypatch):
    monkeypatch.setitem(config.SHIPPED_TEACHERS, "tiny", ("smoke", TINY[1] | {"lr": 0.05}))
    assert reproduce.retrain_teacher("tiny", tiny / "other", progress=False)[1] is False


def test_the_shipped_file_is_checked_by_sha256_when_read(tiny):
    cfg = config.preset("smoke", "rslad", teacher="shipped:tiny")
    assert loading.teacher_path(cfg) == tiny / "teachers" / "tiny.pt"
    model = loading.load_model(cfg.teacher)
    assert isinstance(models.unwrap(model), models.SmallCNN)
    path = tiny / "teachers" / "tiny.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="SHA-256 .* but tiny.json records"):
        loading.teacher_path(cfg)
    path.unlink()
    with pytest.raises(UserError, match="is missing; restore it"):
        models.shipped_file("tiny")
    with pytest.raises(UserError, match="no shipped teacher 'nobody'"):
        models.shipped_file("nobody")


def test_reproduce_reads_the_shipped_teacher_unless_asked_to_retrain(tmp_path):
    shipped = reproduce.build_plan("fashion", tmp_path)
    assert "teacher" not in shipped.runs and shipped.teacher_spec == "shipped:fashion14-trades-w16"
    retrained = reproduce.build_plan("fashion", tmp_path, retrain_teachers=True)
    preset, recipe = config.SHIPPED_TEACHERS["fashion14-trades-w16"]
    assert retrained.teacher_spec == "teacher"
    assert retrained.runs["teacher"] == config.preset(preset, **recipe)   # the recipe, with the preset's seed 0
    students = [retrained.runs[f"cnn-w4-rslad-s{seed}"] for seed in retrained.seeds]
    assert all(cfg.teacher == "teacher" for cfg in students)
    assert all(shipped.runs[f"cnn-w4-rslad-s{seed}"].teacher == "shipped:fashion14-trades-w16" for seed in shipped.seeds)


@pytest.mark.parametrize("name", sorted(config.SHIPPED_TEACHERS))
def test_every_shipped_teacher_is_committed_small_and_matches_its_recipe(name):
    record = models.shipped_record(name)
    path = models.shipped_file(name)   # raises if its SHA-256 differs from the record
    assert path.stat().st_size < 5 * 2**20
    preset, recipe = config.SHIPPED_TEACHERS[name]
    assert config.from_dict(record["config"]) == config.preset(preset, **recipe, seed=0, teacher=None)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert config.from_dict(checkpoint["meta"]["config"]) == config.from_dict(record["config"])
