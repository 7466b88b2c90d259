"""Each method's tiny settings in its own view layout, shared by tests/test_method_resume.py (and through it
test_method_export.py) and benchmarks/ddp_equivalence.py (which adds tests/ to sys.path): what a method needs beyond
the tiny ResNet-18 at 16 px with small heads and 2 views -- its backbone, small queues and prototype counts, and its
view layout (`LOADER_KEYS` go to the loader too). No imports: a benchmark can read it without the test set-up."""

VIT = dict(backbone="vit_tiny", backbone_kwargs={"depth": 1}, proj_hidden_dim=32, proj_output_dim=16)
MULTI_CROP = dict(num_views=2, num_local=2, local_size=8)  # 2 global crops at 16 px + 2 local ones at 8 px
SPECIAL: dict[str, dict] = {
    "moco": dict(memory_bank=True, queue_size=24),
    "nnclr": dict(queue_size=32), "nnbyol": dict(queue_size=32), "nnsiam": dict(queue_size=32),
    "ressl": dict(queue_size=32),
    "supcon": dict(),  # labels: the MNIST batches carry them (the class positives are used)
    "wmse": dict(proj_output_dim=4, w_size=8),  # whitening needs more samples than dimensions
    "fastsiam": dict(num_views=4), "mmcr": dict(num_views=4), "empssl": dict(num_views=4),
    "deepclusterv2": dict(num_prototypes=8, prototype_heads=2, memory_size=16, kmeans_iters=2),
    "swav": dict(num_prototypes=32, queue_size=16, queue_start_epoch=0, freeze_prototypes_steps=1, **MULTI_CROP),
    "dino": dict(num_prototypes=32, **MULTI_CROP),
    "ibot": dict(VIT, num_prototypes=32, **MULTI_CROP),
    "dinov2": dict(VIT, num_prototypes=32, **MULTI_CROP),
    "msn": dict(VIT, num_prototypes=32, **MULTI_CROP),
    "pmsn": dict(VIT, num_prototypes=32, **MULTI_CROP),
    "mae": dict(VIT, num_views=1, decoder_dim=32, decoder_depth=1, decoder_heads=2),
    "simmim": dict(VIT, num_views=1),
    "fcmae": dict(backbone="convnextv2_atto", num_views=1, decoder_dim=32),
    "lejepa": dict(num_slices=32, **MULTI_CROP), "all4one": dict(queue_size=32), "smog": dict(num_groups=8),
}
LOADER_KEYS = ("num_views", "num_local", "local_size")


def split_settings(name: str, tiny: dict, special: dict[str, dict] = SPECIAL) -> tuple[dict, dict]:
    """(constructor kwargs, loader kwargs) of a method in its own view layout: `tiny`, then its entry of
    `special`, whose view-layout keys go to the loader (2 views by default)."""
    own = dict(special.get(name, {}))
    layout = {k: own.pop(k) for k in LOADER_KEYS if k in own}
    return {**tiny, **own, "num_views": layout.get("num_views", 2)}, {"num_views": 2, **layout}
