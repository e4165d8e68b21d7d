"""`-e predict`'s bad input is one line naming the parameter or file, exit status 2, and no
output folder (issue 29); the full path through a champion is tests/e2e/test_use_the_champion.py."""
from __future__ import annotations

from pipeline import predict


def test_missing_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert predict.main(["--model", "models:/nothing@champion", "--input", str(tmp_path / "nope"),
                         "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'nope'}: no such file or folder"]
    assert not out.exists()


def test_unknown_model_is_one_line(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"x")
    assert predict.main(["--model", "models:/nothing@champion", "--input", str(tmp_path / "a.png"),
                         "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "mlflow.store.db" not in line]  # a new store's log
    assert len(err) == 1 and err[0].startswith("error: model: cannot load models:/nothing@champion"), err
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    try:
        predict.input_files(tmp_path / "in")
    except predict.InputError as exc:
        assert "no files" in str(exc)
    else:
        raise AssertionError("an empty folder was accepted")
