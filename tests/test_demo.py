"""The demo command end to end in its tiny `--quick` setting: it must train, evaluate, and write a
summary.json with sane values and a real PNG."""
import json

import pytest

from autossl.experiments.demo import error_reduction, main, parse_args

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_demo_writes_summary_and_figure(tmp_path):
    assert main(["--quick", "--out", str(tmp_path)]) == 0

    summary = json.loads((tmp_path / "summary.json").read_text())
    for key, kind in [("method", str), ("epochs", int), ("steps", int), ("batch_size", int), ("seconds", float),
                      ("knn_random", float), ("knn_pretrained", float), ("error_reduction", float),
                      ("knn_curve", list)]:
        assert isinstance(summary[key], kind), f"{key} should be {kind.__name__}: {summary[key]!r}"
    assert summary["method"] == "simclr"
    assert summary["steps"] > 0 and summary["epochs"] >= 0 and summary["seconds"] > 0
    assert 0.1 < summary["knn_random"] <= 1.0 and 0.1 < summary["knn_pretrained"] <= 1.0  # 10 classes: chance is 0.1
    assert summary["error_reduction"] == pytest.approx(
        error_reduction(summary["knn_random"], summary["knn_pretrained"]), abs=1e-3)
    # The curve starts with the random backbone and ends with the pretrained one.
    assert summary["knn_curve"][0] == [0, summary["knn_random"]]
    assert summary["knn_curve"][-1] == [summary["steps"], summary["knn_pretrained"]]
    assert summary["embedding_std"] > 1e-4, "features collapsed to a constant"

    png = (tmp_path / "summary.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000  # three panels, not an empty canvas


def test_error_reduction_is_the_fraction_of_errors_removed():
    assert error_reduction(0.90, 0.95) == pytest.approx(0.5)
    assert error_reduction(0.90, 0.90) == pytest.approx(0.0)
    assert error_reduction(0.90, 0.85) < 0


def test_bad_options_fail_with_one_clear_line(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--epochs", "0"])
    assert "--epochs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--method", "simclrr"])


@pytest.mark.slow
def test_full_demo_removes_at_least_30_percent_of_knn_errors(tmp_path):
    """The README's promise, measured: the default recipe (about 5 minutes on 2 CPU cores)."""
    assert main(["--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["error_reduction"] >= 0.30, summary
    assert summary["total_seconds"] < 600, summary
