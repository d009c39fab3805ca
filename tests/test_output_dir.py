"""An output directory that cannot be written is one line from the CLI, before any work (the run lock checks it)."""

from __future__ import annotations

import os

import pytest

from rad.cli import main


def test_an_output_dir_under_a_file_is_one_line_naming_it(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["sft", f"output_dir={blocker}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rad sft: error: output_dir: cannot write to ") and str(blocker) in err
    assert "Not a directory" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_dir_is_one_line_naming_it(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["eval", "--models", "a=x", "b=y", "reward_model=r", "cost_model=c", f"output_dir={ro}"]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rad eval: error: output_dir: cannot write to '{ro}'") and "Permission denied" in err
