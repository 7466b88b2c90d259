"""`recipe=auto` (train/recipe.py) and the levers it picks: smaller training views (`data.view_size`), progressive
resolution (`data.final_view_size`) and decoded images kept in memory (`data.cache_images`)."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from autossl.cli.main import main as cli
from autossl.data.cache import DecodedCache
from autossl.data import ArrayDataset
from autossl.train import ConfigError, compose, pretrain
from autossl.train.recipe import Hardware, apply_recipe, pick_recipe

CPU = Hardware("cpu", bf16=True, cores=2)
BUDGET = ["trainer.budget_minutes=20", "data.dataset=cifar10"]


def test_a_budget_gets_the_measured_cpu_recipe_and_the_command_line_keeps_its_keys():
    notes: list[str] = []
    cfg = compose(BUDGET + ["optimizer.lr=0.01", "data.num_workers=1"], notes=notes)
    assert cfg.recipe == "auto"
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.data.view_size) == ("adamw", 0.01, 16)  # lr: the user's
    assert cfg.data.batched_views and cfg.data.cache_images and cfg.data.num_workers == 1
    assert notes[0].startswith("recipe=auto for simclr, a 20-minute budget")
    assert any("optimizer.lr: kept yours (0.01)" in n for n in notes)
    assert any(n.strip().startswith("data.view_size=16:") and "docs/budget.md" in n for n in notes)


def test_keys_the_recipe_makes_valid_are_accepted_with_it():
    # progressive resolution needs batched views in the training process, which the CPU recipe sets
    cfg = compose(BUDGET + ["data.final_view_size=32"])
    assert (cfg.data.view_size, cfg.data.final_view_size, cfg.data.num_workers) == (16, 32, 0)


def test_no_budget_or_recipe_none_leaves_the_config_as_composed():
    plain = compose(["data.dataset=cifar10"])
    for cfg in (plain, compose(BUDGET + ["recipe=none"])):
        assert cfg.optimizer.name is None and cfg.data.view_size is None and not cfg.data.batched_views
    assert plain.recipe is None
    assert compose(["data.dataset=cifar10", "recipe=auto"]).data.batched_views  # asked for without a budget


def test_the_recipe_follows_the_hardware_the_backbone_and_the_method():
    cfg = compose(["data.dataset=cifar10"])
    gpu = {p.key for p in pick_recipe(cfg, Hardware("cuda", bf16=True, cores=16))}
    assert gpu == {"trainer.precision", "trainer.channels_last"}  # nothing measured on a GPU beyond these
    no_bf16 = {p.key: p.value for p in pick_recipe(cfg, Hardware("cpu", bf16=False, cores=2))}
    assert no_bf16["trainer.precision"] == "32"
    many = {p.key for p in pick_recipe(cfg, Hardware("cpu", bf16=True, cores=32))}
    assert "data.num_workers" not in many and "data.cache_images" not in many  # workers would each fill a cache
    vit = compose(["data.dataset=cifar10", "model.backbone=vit_tiny", "method=mae", "data.num_views=1"])
    assert "data.view_size" not in {p.key for p in pick_recipe(vit, CPU)}  # a ViT takes one size only
    assert "optimizer.name" not in {p.key for p in pick_recipe(vit, CPU)}  # MAE's optimiser was not measured
    for other in (["data.dataset=stl10"], ["data.dataset=mnist"], ["data.dataset=cifar10", "data.image_size=64"]):
        assert "data.view_size" not in {p.key for p in pick_recipe(compose(other), CPU)}, other  # not measured


def test_the_narrow_network_replaces_only_a_backbone_nobody_chose(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./experiments: the user's own experiments
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.yaml").write_text("# @package _global_\nmodel: {backbone: resnet18}\n")
    for measured in (["method=simclr"], ["method=moco"]):  # at 32 px on a CPU: WRN-28-2 won for these
        assert compose(BUDGET + measured).model.backbone == "wide_resnet28_2", measured
    assert compose(BUDGET + ["experiment=cifar10_simclr"]).model.backbone == "wide_resnet28_2"  # it sets no backbone
    notes: list[str] = []
    for chosen in (["model.backbone=resnet18"], ["experiment=mine"]):
        assert compose(BUDGET + chosen, notes=notes).model.backbone == "resnet18", chosen
    assert any("model.backbone: kept yours (resnet18); auto would pick wide_resnet28_2" in n for n in notes)
    for other in (["method=byol"], ["method=vicreg"], ["data.dataset=mnist"], ["data.image_size=64"]):
        assert compose(BUDGET + other).model.backbone == "resnet18", other  # not measured there
    # the experiment's optimiser is replaced: it says how to train, not what network the user gets
    assert compose(BUDGET + ["experiment=mine", "optimizer.name=lars"]).optimizer.lr == 2e-3


def test_a_pretrained_start_of_vicreg_warms_its_lr_up():
    start = ["model.pretrained=start.safetensors"]  # composing takes the path as given; pretrain loads it
    assert compose(BUDGET + ["method=vicreg"] + start).optimizer.warmup_epochs == 0.05
    assert compose(BUDGET + ["method=vicreg"]).optimizer.warmup_epochs == 0  # a random start: not measured
    for other in (["method=barlowtwins"], ["method=simclr"], ["method=vicreg", "data.dataset=mnist"]):
        assert compose(BUDGET + other + start).optimizer.warmup_epochs == 0, other  # held their start / not measured
    notes: list[str] = []
    cfg = compose(BUDGET + ["method=vicreg", "optimizer.warmup_epochs=0"] + start, notes=notes)
    assert cfg.optimizer.warmup_epochs == 0
    assert any("optimizer.warmup_epochs: kept yours (0); auto would pick 0.05" in n for n in notes)


def test_a_folder_gets_small_views_only_when_its_images_are_32_px(class_folder, tmp_path):
    from conftest import write_image

    small = tmp_path / "small"
    for i in range(3):
        write_image(small / "a" / f"{i}.png", size=(32, 32), seed=i)
    picks = {str(path): {p.key: p.value for p in pick_recipe(compose(["data.dataset=folder", f"data.path={path}"]), CPU)}
             for path in (small, class_folder)}
    assert picks[str(small)]["data.view_size"] == 16
    assert "data.view_size" not in picks[str(class_folder)]  # 20 px images


def test_pretrain_cfg_prints_the_picks_and_why(capsys):
    assert cli(["pretrain", "--cfg", "trainer.budget_minutes=5", "data.dataset=cifar10", "recipe=auto"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# recipe=auto for simclr")
    assert "(recipe=none turns these off" in out and "\nrecipe: auto\n" in out


@pytest.mark.parametrize("override, problem", [
    (["data.final_view_size=32"], "needs data.batched_views=true and data.num_workers=0"),
    (["model.backbone=vit_tiny", "data.view_size=16"], "vit_tiny cannot take"),
    (["recipe=fast"], "recipe must be one of auto, none"),
])
def test_view_size_and_recipe_mistakes_are_one_line(override, problem):
    with pytest.raises(ConfigError, match=problem):
        compose(["data.dataset=cifar10"] + override)


class CountingDataset(ArrayDataset):
    def __init__(self, X, y):
        super().__init__(X, y)
        self.reads = 0

    def __getitem__(self, i):
        self.reads += 1
        return super().__getitem__(i) if i != 3 else (None, int(self.targets[i]))  # image 3 is unreadable


def test_the_cache_decodes_each_image_once_and_returns_what_the_dataset_does(mnist_arrays):
    X, y = mnist_arrays
    base = CountingDataset(X[:20], y[:20])
    cache = DecodedCache(base)
    first = [cache[i] for i in range(20)]
    again = [cache[i] for i in range(20)]
    assert base.reads == 20  # the second pass read nothing
    for i, ((a, la), (b, lb)) in enumerate(zip(first, again)):
        expected = base.images[i] if i != 3 else None
        assert la == lb == int(y[i])
        assert (a is None and b is None and expected is None) or (torch.equal(a, b) and torch.equal(a, expected))


def test_a_cache_larger_than_half_the_free_memory_is_refused_before_decoding(monkeypatch, mnist_arrays):
    monkeypatch.setattr("autossl.data.cache.available_memory", lambda: 1_000_000)  # 1 MB free
    X, y = mnist_arrays
    base = CountingDataset(X, y)  # 5,000 x 3 x 28 x 28 bytes = 11.8 MB
    with pytest.raises(ValueError, match=r"cache_images=true would keep ~0\.0 GB .* set data.cache_images=false"):
        DecodedCache(base)
    assert base.reads == 0


class ViewSizes(pl.Callback):
    def __init__(self):
        self.sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sizes.append(int(batch["views"][0].shape[-1]))


def test_progressive_resolution_trains_small_views_then_full_size_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = ViewSizes()
    cfg = compose(["data.dataset=mnist", "data.image_size=32", "data.view_size=16", "data.final_view_size=32",
                   "data.final_view_share=0.5", "data.batched_views=true", "data.num_workers=0",
                   "data.cache_images=true", "data.batch_size=16", "data.val_split=0", "trainer.max_steps=12",
                   "trainer.progress_bar=false", "logging.csv=false", "logging.tensorboard=false",
                   "model.params.proj_hidden_dim=32", "model.params.proj_output_dim=16"])
    summary = pretrain(cfg, callbacks=[seen])
    assert summary["steps"] == 12 and len(seen.sizes) == 12
    # the switch is planned at step 6; Lightning fetches a batch ahead, so it reaches the model a step or two later
    assert seen.sizes[:6] == [16] * 6 and seen.sizes[-4:] == [32] * 4, seen.sizes
    assert sorted(seen.sizes) == seen.sizes
