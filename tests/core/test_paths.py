"""Defaults come from the checkout, not from the folder a command starts in."""

from __future__ import annotations

import os

from core.catalog import TableCatalog
from core.paths import BASE_MODEL, REPO_ROOT, default_lakehouse, repo_path


def test_the_default_lakehouse_is_the_checkouts_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("LARR_LAKEHOUSE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_lakehouse() == str(REPO_ROOT / "lakehouse")
    assert TableCatalog.resolve().root == str(REPO_ROOT / "lakehouse")
    monkeypatch.setenv("LARR_LAKEHOUSE", str(tmp_path / "mine"))
    assert TableCatalog.resolve().root == str(tmp_path / "mine")


def test_repo_relative_defaults_resolve_from_elsewhere_and_local_paths_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert repo_path("jobs/deepspeed/zero2.json") == REPO_ROOT / "jobs/deepspeed/zero2.json"
    assert repo_path("no/such/thing") == repo_path("no/such/thing")  # unchanged, relative
    assert not repo_path("no/such/thing").is_absolute()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "mine.json").write_text("{}")
    assert repo_path("jobs/mine.json") == repo_path("jobs/mine.json")
    assert os.fspath(repo_path("jobs/mine.json")) == "jobs/mine.json"  # the working folder's own file
    assert BASE_MODEL.startswith(".models/")


def test_the_base_model_resolves_from_any_folder(tmp_path, monkeypatch):
    from training.lm.backbone import resolve_folder

    monkeypatch.chdir(tmp_path)
    assert resolve_folder(BASE_MODEL) == REPO_ROOT / BASE_MODEL  # written by make setup
