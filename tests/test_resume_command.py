"""The command a SIGTERM message prints to resume: the way this process was started, or
``asd-train`` when ``train()`` ran inside another program."""

from __future__ import annotations

import sys

from asd_lightning.utils.resume import program, resume_command


def test_resume_command_names_asd_train_inside_another_program(monkeypatch, tmp_path) -> None:
    """Catches (tried once): the hosting script's own path as the program (a benchmark script or
    pytest then appears as the command that would take the Hydra overrides)."""
    monkeypatch.setattr(sys, "argv", ["/opt/bench/gpu_check.py", "--quick"])
    assert program() == ["asd-train"]
    command = resume_command(["experiment=ae_baseline", "ckpt_path=x"], tmp_path / "run")
    assert command == f"asd-train experiment=ae_baseline hydra.run.dir={(tmp_path / 'run').resolve()} ckpt_path=last"


def test_resume_command_keeps_the_console_script_path(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/asd-train", "experiment=ae_baseline"])
    assert program() == ["/venv/bin/asd-train"]
