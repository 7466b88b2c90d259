"""The views study: held-out split disjoint from pretraining, the report on a tiny real sweep, the
cache, clear errors, and the example notebook executed end to end (so it never rots)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from autossl.experiments import study as st
from autossl.train import compose, pretrain

TINY = ["experiment=views_study", "method=vicreg", "data.batch_size=8", "data.image_size=16", "data.num_workers=0",
        "model.params.proj_hidden_dim=32", "model.params.proj_output_dim=32", "logging.csv=false"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two short real runs: N=2 for 2 steps (equal epochs) and N=4 at the same view budget (1 step)."""
    root = tmp_path_factory.mktemp("views_sweep")
    common = TINY + [f"checkpoint.dir={root / 'ck'}", f"logging.dir={root / 'runs'}"]
    pretrain(compose(common + ["data.num_views=2", "trainer.max_steps=2", "name=sweep/views2"]))
    pretrain(compose(common + ["data.num_views=4", "trainer.view_budget=32", "name=sweep/views4"]))
    return root / "ck"


def _indices(ds) -> set[int]:
    assert isinstance(ds, Subset)
    return set(int(i) for i in ds.indices)


def test_heldout_split_is_disjoint_from_pretraining_and_matches_it(sweep):
    from omegaconf import OmegaConf

    from autossl.train.run import build_loaders

    cfg = OmegaConf.load(sweep / "sweep" / "views2" / "config.yaml")
    train, test, *_ = st.eval_split(cfg)
    assert len(test) == 2500 and len(train) == 2500  # val_split=0.5 of the 5,000 digits
    assert not _indices(train) & _indices(test)
    trained_on = _indices(build_loaders(OmegaConf.merge(cfg, {"data": {"num_workers": 0}}))[0].dataset.base)
    assert trained_on == _indices(train) and not trained_on & _indices(test)


def test_report_on_a_tiny_sweep(sweep, tmp_path, monkeypatch):
    rows, starts = st.study([sweep], max_train=60, max_test=40, probe_epochs=3, verbose=False)
    # N=2 is in both curves: its 2 steps x 8 images x 2 views equal the N=4 run's budget of 32 views
    assert sorted(zip(rows.regime, rows.num_views)) == [("equal compute", 2), ("equal compute", 4), ("equal epochs", 2)]
    n4 = rows[rows.num_views == 4].iloc[0]
    assert (n4.steps, n4.images_seen, n4.views_seen) == (1, 8, 32)
    for col in ("knn_acc", "linear_acc"):
        assert rows[col].between(0, 1).all() and starts[col].between(0, 1).all()
    assert np.isfinite(rows.heldout_loss).all() and np.isfinite(rows.train_loss).all()
    assert set(rows.start) == {"random"} and list(starts.start) == ["random"]
    assert (rows.n_test == 40).all()

    out = tmp_path / "docs" / "views_study.md"
    out.parent.mkdir()
    out.write_text("old\n<!-- keep -->\nmy findings\n<!-- /keep -->\nold table\n")
    st.write_report(rows, starts, out)
    text = out.read_text()
    assert "my findings" in text and "old table" not in text  # the keep block survives, the rest is regenerated
    assert "| vicreg | random | 4 | 0 | 1 | 8 | 32 |" in text  # method, start, N, seed, steps, images, views
    assert "## Equal epochs" in text and "## Equal compute" in text
    for regime in ("equal_epochs", "equal_compute"):
        png = out.with_name(f"views_study_{regime}.png")
        assert png.read_bytes()[:4] == b"\x89PNG" and f"({png.name})" in text

    # a second study reads the cached scores instead of re-scoring
    cache = json.loads((sweep / "sweep" / "views4" / st.CACHE).read_text())
    assert cache["scores"]["linear_acc"] == pytest.approx(n4.linear_acc)
    monkeypatch.setattr(st, "score_backbone", lambda *a, **k: pytest.fail("scored again despite the cache"))
    again, _ = st.study([sweep], max_train=60, max_test=40, probe_epochs=3, verbose=False, starts=False)
    assert again.linear_acc.tolist() == rows.linear_acc.tolist()


def test_cli_writes_report(sweep, tmp_path):
    out = tmp_path / "r.md"
    rc = st.main([str(sweep), "--out", str(out), "--max-train", "60", "--max-test", "40", "--probe-epochs", "3",
                  "--no-starts"])
    assert rc == 0 and "| vicreg | random | 2 |" in out.read_text()


def test_no_runs_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        st.find_runs([tmp_path])
    with pytest.raises(FileNotFoundError, match="sweep folder not found"):
        st.find_runs([tmp_path / "nope"])


def test_runs_without_heldout_images_are_skipped(sweep, tmp_path):
    """A run that cannot be scored (here: no held-out split, like the SimCLR run that makes a pretrained
    start) is skipped with a note; a study with nothing to score fails in one line."""
    import shutil

    from omegaconf import OmegaConf

    bad = tmp_path / "only_bad" / "nolabels"
    shutil.copytree(sweep / "sweep" / "views2", bad)
    (bad / st.CACHE).unlink(missing_ok=True)
    cfg = OmegaConf.load(bad / "config.yaml")
    cfg.data.val_split = 0
    OmegaConf.save(cfg, bad / "config.yaml")
    with pytest.raises(ValueError, match="no run could be scored: .*val_split"):
        st.study([bad.parent], starts=False, verbose=False)
    shutil.copytree(sweep / "sweep" / "views4", tmp_path / "only_bad" / "good")
    rows, _ = st.study([bad.parent], max_train=60, max_test=40, probe_epochs=3, starts=False, verbose=False)
    assert rows.run.tolist() == [str(tmp_path / "only_bad" / "good")]


def test_run_without_heldout_images_is_refused():
    cfg = compose(TINY + ["data.val_split=0"])
    with pytest.raises(ValueError, match="no held-out images.*val_split"):
        st.eval_split(cfg)


def test_start_labels():
    assert st.start_label(compose(TINY)) == "random"
    assert st.start_label(compose(TINY + ["model.pretrained=/x/simclr_cifar10.safetensors"])) == "pretrained (simclr_cifar10)"


def test_notebook_runs(tmp_path, monkeypatch):
    """examples/views_study.ipynb at its tiny default settings, executed in a fresh kernel."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # the kernel inherits the suite's threads
    path = Path(__file__).resolve().parent.parent / "examples" / "views_study.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    report = tmp_path / "views_study_example" / "views_study.md"
    assert "| vicreg | pretrained (start) | 4 |" in report.read_text()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # one plot per regime
