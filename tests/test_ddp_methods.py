"""Real 2-process DDP (gloo, CPU) for the method losses and states that reach across processes: what 2 processes
compute with half the batch each equals what one process computes on the whole batch.

tests/test_ddp.py covers NT-Xent (SimCLR), Barlow Twins and VICReg; here, everything else that gathers or
all-reduces (`grep -n "gather\\|all_reduce" autossl/losses autossl/heads autossl/methods`):

- SwAV: Sinkhorn-Knopp with all-reduced marginals (2 global + 2 local crops), and with each process's queue
  joining the transport (the processes' queues together play the single process's queue);
- DINO: the loss and the center (all-reduced mean of the teacher outputs); iBOT/DINOv2: the patch loss and the
  patch center;
- MoCo v3 / MoCo without a queue: InfoNCE against the gathered keys; MoCo v2: the queue (FeatureQueue.push gathers
  the keys) and the loss against it; ReSSL: its gathered queue;
- NNCLR / NNBYOL / NNSiam: the support set (gathered push, then the same nearest neighbours on every process);
- MSN / PMSN: Sinkhorn over the global batch and the mean anchor prediction gathered (me-max / power-law prior),
  with the prototypes' gradient;
- DCL / DCLW (its vMF weights are a softmax over each process's batch, as lightly and the reference), SupCon
  (labels gathered too), TiCo (and its running covariance), MMCR (gathered centroids), VIbCReg;
- DeepCluster-v2: spherical k-means with rank 0's initial centroids broadcast and the M-step sums all-reduced;
- SMoG: the groups' momentum step from the gathered online projections (and the loss against the moved groups);
- SwAV's queue and DeepCluster-v2's memory bank inside the methods: the global batch's rows, the same on every
  process (a per-process buffer is overwritten by DDP's broadcast_buffers and cannot be restored from rank 0's
  checkpoint); DeepCluster-v2's k-means from the whole bank gives the single process's prototypes;
- random masks (MAE, SimMIM, FCMAE, MSN; iBOT, DINOv2): each process masks its rows as one process masks the global
  batch, and the global generator stays the same on every process;
- `trainer.sync_batchnorm` on CPU (GatheredBatchNorm): the global batch's statistics, running statistics and
  gradient;
- EMP-SSL: the coding rate of the global batch (the reference's DataParallel computes it on the gathered outputs);
- W-MSE: nothing is gathered by design (as the reference and solo-learn: each process whitens its own
  sub-batches), so 2 processes equal 1 process whose sub-batches are the processes' halves.

Per case: the mean of the per-process losses equals the single-process loss; each process's input gradient,
divided by the world size (what DDP's averaging does), equals the single-process gradient of its rows; the
gradient of a shared parameter (prototypes), averaged over the processes, equals the single-process one; a
gathered state (center, queue, covariance, centroids) is the single-process state on every process, a per-row
output (Sinkhorn codes, k-means assignments) is the single-process rows of that process. One spawn runs every
case (process start-up dominates the cost). Not here: LeJEPA (tests/test_zoo_lejepa.py runs its own 2-process
test); per process by design (as their references): DINOv2's KoLeo, All4One's feature term
(its InfoNCE terms and support set are those of MoCo v3 and NNCLR above); see benchmarks/ddp_equivalence.py.
"""
from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from autossl.backbones.masking import random_token_mask
from autossl.core.distributed import world_size
from autossl.core.sync_batchnorm import GatheredBatchNorm
from autossl.heads import FeatureQueue, SupportSet
from autossl.heads.smog import SMoGGroups
from autossl.losses import (dcl_loss, dclw_loss, dino_loss, emp_ssl_loss, ibot_patch_loss, infonce_loss,
                            mean_over_cross_views, mmcr_loss, msn_loss, negative_cosine_loss, nt_xent_loss, pmsn_loss,
                            ressl_loss, sinkhorn, smog_loss, supcon_loss, swav_loss, tico_loss, update_center,
                            vibcreg_loss, wmse_loss)
from autossl.methods import get_method
from autossl.methods.deepclusterv2 import spherical_kmeans
from autossl.methods.ibot import sample_masks

from conftest import run_on_processes, save_rank_result

WORLD, PER_RANK, D, K, L = 2, 8, 8, 16, 9  # L: patch tokens per image (iBOT)
N = WORLD * PER_RANK


def _randn(g, *shape):
    return torch.randn(*shape, generator=g)


def _unit(g, *shape):
    return F.normalize(_randn(g, *shape), dim=-1)


def _inputs(name: str) -> tuple[dict, dict]:
    """(batch tensors [N, ...], split by rows across processes; shared tensors, the same on every process).
    Names starting with 'z' (and the shared 'prototypes' of MSN) are differentiated."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    if name in ("swav", "sinkhorn"):
        return {f"z{i}": _randn(g, N, K) for i in range(4)}, {}
    if name == "swav_queue":
        return {"z0": _randn(g, N, K), "z1": _randn(g, N, K), "queue0": _randn(g, N, K),  # PER_RANK rows a process
                "queue1": _randn(g, N, K)}, {}
    if name == "dino":
        return ({**{f"z{i}": _randn(g, N, K) for i in range(4)}, "t0": _randn(g, N, K), "t1": _randn(g, N, K)},
                {"center": 0.1 * _randn(g, 1, K)})
    if name == "ibot_patch":
        mask = _randn(g, N, L) > 0.3
        mask[3] = False  # an image without masked patches
        return {"z": _randn(g, N, L, K), "t": _randn(g, N, L, K), "mask": mask}, {"center": 0.1 * _randn(g, 1, K)}
    if name in ("mocov3", "nnclr", "nnbyol"):
        return {"z0": _randn(g, N, D), "z1": _randn(g, N, D), "k0": _randn(g, N, D), "k1": _randn(g, N, D)}, {}
    if name in ("moco_queue", "ressl"):  # prev: the keys of the step before, already in the queue
        return {"z": _randn(g, N, D), "k": _randn(g, N, D), "prev": _randn(g, N, D)}, {}
    if name in ("msn", "pmsn"):
        return ({"z0": _randn(g, N, D), "z1": _randn(g, N, D), "t": _randn(g, N, D)},
                {"prototypes": _randn(g, K, D)})
    if name == "supcon":
        labels = torch.randint(0, 4, (N,), generator=g)
        labels[::5] = -1  # some images unlabelled
        return {"z0": _randn(g, N, D), "z1": _randn(g, N, D), "labels": labels}, {}
    if name == "tico":
        return {"z0": _randn(g, N, D), "k": _randn(g, N, D)}, {"cov": 0.01 * _randn(g, D, D)}
    if name == "mmcr":
        return {f"z{i}": _randn(g, N, D) for i in range(4)}, {}
    if name == "kmeans":
        return {"x": _unit(g, N, D)}, {}
    if name == "smog":
        return {"z": _randn(g, N, D), "zp": _randn(g, N, D), "t": _randn(g, N, D)}, {}
    if name == "wmse":
        return {"z0": _randn(g, N, 4), "z1": _randn(g, N, 4), "z2": _randn(g, N, 4)}, {}
    if name == "empssl":  # 4 views
        return {f"z{i}": _unit(g, N, D) for i in range(4)}, {}
    if name == "masks":  # nothing but the row count: the masks come from the global generator
        return {"rows": torch.zeros(N, 1)}, {}
    if name == "gathered_bn":  # [N, D, 3] activations, per-row loss weights
        return {"z0": _randn(g, N, D, 3), "c": _randn(g, N, D, 3)}, {}
    if name in ("swav_state", "deepcluster_state"):  # two steps' projections of 2 global crops
        return {f"z{i}": _unit(g, N, D) for i in range(4)}, {}
    return {"z0": _randn(g, N, D), "z1": _randn(g, N, D)}, {}  # dcl, dclw, vibcreg


def _case(name: str, b: dict, s: dict) -> tuple[torch.Tensor | None, dict]:
    """(loss, {state name: (kind, tensor)}) of one case on this process's rows `b`; kind 'global' (the same on every
    process) or 'rows' (this process's rows of a per-sample output)."""
    if name == "sinkhorn":
        return None, {"codes": ("rows", sinkhorn(b["z0"], 3, 0.05))}
    if name == "swav":  # 2 global crops (codes) + 2 local crops
        return swav_loss([b["z0"], b["z1"]], [b["z2"], b["z3"]], 0.1, 3, 0.05), {}
    if name == "swav_queue":
        return swav_loss([b["z0"], b["z1"]], [], 0.1, 3, 0.05, queue_outputs=[b["queue0"], b["queue1"]]), {}
    if name == "dino":
        student, teacher = [b[f"z{i}"] for i in range(4)], [b["t0"], b["t1"]]
        loss = dino_loss(student, teacher, s["center"], 0.1, 0.04)
        return loss, {"center": ("global", update_center(s["center"], teacher, 0.9))}
    if name == "ibot_patch":
        mask = b["mask"]
        loss = ibot_patch_loss(b["t"][mask], b["z"][mask], mask, s["center"], 0.1, 0.04)
        return loss, {"patch_center": ("global", update_center(s["center"], [b["t"].flatten(0, 1)], 0.9))}
    if name == "mocov3":  # the method's symmetrised, 2 tau-scaled InfoNCE against the gathered keys
        return 2 * mean_over_cross_views(lambda q, k: infonce_loss(q, k, 0.2) * 0.4, [b["z0"], b["z1"]],
                                         [b["k0"], b["k1"]]), {}
    if name in ("moco_queue", "ressl"):
        torch.manual_seed(0)
        queue = FeatureQueue(3 * N, D)  # random rows, the same on every process; filled by the pushes below
        queue.push(b["prev"])
        if name == "moco_queue":
            loss = nt_xent_loss(b["z"], b["k"], 0.2, queue=queue.negatives())
        else:
            q = F.normalize(b["z"], dim=1)
            loss = ressl_loss(q, F.normalize(b["k"], dim=1), queue.negatives().clone())
        queue.push(b["k"])
        return loss, {"queue": ("global", queue.items.clone()), "filled": ("global", queue.filled.clone()),
                      "ptr": ("global", queue.ptr.clone())}
    if name in ("nnclr", "nnbyol"):
        torch.manual_seed(0)
        support = SupportSet(N + N // 2, D)  # wraps around within the two pushes
        support.push(b["k1"])
        zs, ps = [b["z0"], b["z1"]], [b["k0"] + b["z0"], b["k1"] - b["z1"]]  # 'predictions' depending on z
        nns = [support.nearest(z) for z in zs]
        if name == "nnclr":
            loss = mean_over_cross_views(lambda nn_, p: nt_xent_loss(nn_, p, 0.2), nns, ps)
        else:
            loss = mean_over_cross_views(negative_cosine_loss, ps, nns)
        support.push(b["z0"])
        return loss, {"support_set": ("global", support.items.clone()), "ptr": ("global", support.ptr.clone()),
                      "neighbours": ("rows", torch.stack([support.nearest_index(z) for z in zs], 1))}
    if name in ("msn", "pmsn"):
        fn = msn_loss if name == "msn" else pmsn_loss
        return fn(torch.cat([b["z0"], b["z1"]]), b["t"], s["prototypes"]), {}
    if name == "dcl":
        return dcl_loss(b["z0"], b["z1"], 0.1), {}
    if name == "dclw":
        return dclw_loss(b["z0"], b["z1"], 0.1, 0.5), {}
    if name == "supcon":
        return supcon_loss([b["z0"], b["z1"]], b["labels"], 0.2), {}
    if name == "tico":
        loss, cov = tico_loss(b["z0"], b["k"], s["cov"], 0.9, 8.0)
        return loss, {"cov": ("global", cov)}
    if name == "mmcr":
        return mmcr_loss([b[f"z{i}"] for i in range(4)], lmda=5e-3), {}
    if name == "vibcreg":
        return vibcreg_loss(b["z0"], b["z1"]), {}
    if name == "kmeans":
        centroids, assign = spherical_kmeans(b["x"], 4, iters=3, generator=torch.Generator().manual_seed(0))
        return None, {"centroids": ("global", centroids), "assignments": ("rows", assign)}
    if name == "smog":  # the groups' momentum step from the gathered online projections, then the loss against them
        torch.manual_seed(0)
        groups = SMoGGroups(4, D, beta=0.9)
        assignments = groups.assign(b["t"])
        updated = groups.updated(b["z"])
        loss = smog_loss(b["zp"] + b["z"], updated, assignments, 0.1)
        groups.set(updated)
        return loss, {"groups": ("global", groups.features.clone())}
    if name == "wmse":  # sub-batches of PER_RANK: on 2 processes, each process's whole batch
        return wmse_loss([b["z0"], b["z1"], b["z2"]], w_size=PER_RANK), {}
    if name == "empssl":  # the coding rate of the global batch, as the reference's DataParallel computes it
        return emp_ssl_loss([b[f"z{i}"] for i in range(4)]), {}
    if name == "masks":  # MAE/SimMIM/FCMAE/MSN and iBOT/DINOv2 masks: each process its rows of the global batch's
        torch.manual_seed(0)
        n = len(b["rows"])
        token_mask = random_token_mask(n, L, 0.5)[2]
        ibot_mask = sample_masks(n, L, probability=0.7)
        return None, {"token_mask": ("rows", token_mask), "ibot_mask": ("rows", ibot_mask),
                      "rng": ("global", torch.get_rng_state())}  # the generators stay in step (one resumes all)
    if name == "gathered_bn":  # trainer.sync_batchnorm on CPU: the statistics and gradient of the global batch
        bn = GatheredBatchNorm(D, momentum=0.5)
        loss = (bn(b["z0"]) * b["c"]).mean()
        return loss, {"running_mean": ("global", bn.running_mean), "running_var": ("global", bn.running_var)}
    if name in ("swav_state", "deepcluster_state"):  # the methods' own queue / memory bank: the global batch's
        torch.manual_seed(0)
        if name == "swav_state":
            m = get_method("swav")(proj_hidden_dim=8, proj_output_dim=D, num_prototypes=4, queue_size=3 * N)
            for step in (0, 2):
                m._enqueue([b[f"z{step}"], b[f"z{step + 1}"]])
            return None, {"queue": ("global", m.queue.clone()), "filled": ("global", m.queue_filled.clone())}
        m = get_method("deepclusterv2")(proj_hidden_dim=8, proj_output_dim=D, num_prototypes=4, prototype_heads=2,
                                        memory_size=N + N // 2, kmeans_iters=3)
        for step in (0, 2):  # the bank wraps around
            m.push_memory([b[f"z{step}"], b[f"z{step + 1}"]])
        m.cluster_memory()
        return None, {"memory": ("global", m.memory.clone()), "ptr": ("global", m.memory_ptr.clone()),
                      **{f"prototypes_{h}": ("global", m.prototypes(h).clone()) for h in range(2)}}
    raise KeyError(name)


CASES = ["sinkhorn", "swav", "swav_queue", "dino", "ibot_patch", "mocov3", "moco_queue", "ressl", "nnclr", "nnbyol",
         "msn", "pmsn", "dcl", "dclw", "supcon", "tico", "mmcr", "vibcreg", "kmeans", "smog", "wmse", "gathered_bn",
         "swav_state", "deepcluster_state", "masks", "empssl"]


@contextlib.contextmanager
def _as_one_process(name: str):
    """What makes one process see what the processes see together, where a case draws at random or is per process
    by design: DeepCluster-v2's k-means starts from rank 0's picks (rows of rank 0's half); W-MSE's slicing and
    DCLW's vMF weights are the processes' halves."""
    randperm = torch.randperm
    if name == "kmeans":
        def first_half(n, generator=None, **kw):
            return torch.cat([randperm(PER_RANK, generator=generator, **kw), torch.arange(PER_RANK, n)])
        with mock.patch("torch.randperm", first_half):
            yield
    elif name == "wmse":
        with mock.patch("torch.randperm", lambda n, **kw: torch.arange(n)):
            yield
    elif name == "dclw":  # the vMF weights: a softmax over each process's batch (as lightly and the reference)
        import autossl.losses.dcl as dcl

        vmf = dcl.vmf_weights

        def per_process(a, b, sigma=0.5):
            return torch.cat([vmf(x, y, sigma) for x, y in zip(a.split(PER_RANK), b.split(PER_RANK))])
        with mock.patch.object(dcl, "vmf_weights", per_process):
            yield
    else:
        yield


def _run(name: str, rows: slice | None = None) -> dict:
    """Loss, gradients of the differentiated inputs and states, on `rows` of the batch (None: all of it)."""
    batch, shared = _inputs(name)
    b = {k: (v[rows] if rows is not None else v).clone() for k, v in batch.items()}
    s = {k: v.clone() for k, v in shared.items()}
    for k, v in {**b, **s}.items():
        if k.startswith("z") or k == "prototypes":
            v.requires_grad_()
    with (_as_one_process(name) if rows is None else contextlib.nullcontext()):
        loss, state = _case(name, b, s)
    if loss is not None:
        loss.backward()
    grads = {k: v.grad for k, v in {**b, **s}.items() if v.requires_grad and v.grad is not None}
    return {"loss": None if loss is None else loss.detach(), "grads": grads,
            "state": {k: (kind, t.detach()) for k, (kind, t) in state.items()}}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        out = {"world_size": world_size()}
        for name in CASES:
            out[name] = _run(name, slice(rank * PER_RANK, (rank + 1) * PER_RANK))
        save_rank_result(out, out_dir, rank)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    # fork, not spawn (as tests/test_zoo_lejepa.py): a spawned worker re-imports this module and Lightning,
    # seconds of CPU each on a loaded machine; the workers only run losses
    return run_on_processes(_worker, tmp_path_factory.mktemp("ddp_methods"), WORLD, start_method="fork")


TOL = dict(rtol=2e-5, atol=2e-6)  # float32: Sinkhorn, DINO and the whitening compute in float32 whatever comes in


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", CASES)
def test_two_processes_equal_one_on_the_whole_batch(ranks, name):
    assert all(r["world_size"] == WORLD for r in ranks)
    single = _run(name)
    assert single["loss"] is not None or single["state"]
    if single["loss"] is not None:
        torch.testing.assert_close(sum(r[name]["loss"] for r in ranks) / WORLD, single["loss"], **TOL)
    for key, want in single["grads"].items():
        if key in _inputs(name)[0]:  # a batch input: each process holds the gradient of its rows, x world size
            for rank, r in enumerate(ranks):
                mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
                torch.testing.assert_close(r[name]["grads"][key] / WORLD, want[mine], **TOL, msg=f"{name} d/d{key}")
        else:  # a shared parameter: DDP averages its gradient over the processes
            got = sum(r[name]["grads"][key] for r in ranks) / WORLD
            torch.testing.assert_close(got, want, **TOL, msg=f"{name} d/d{key}")
    for key, (kind, want) in single["state"].items():
        for rank, r in enumerate(ranks):
            got = r[name]["state"][key][1]
            if kind == "rows":
                want_here = want[rank * PER_RANK:(rank + 1) * PER_RANK]
            else:
                want_here = want
            if want.is_floating_point():
                torch.testing.assert_close(got, want_here, **TOL, msg=f"{name} {key} on rank {rank}")
            else:
                assert torch.equal(got, want_here), f"{name} {key} on rank {rank}"


@pytest.mark.timeout(180)
def test_the_gathering_matters(ranks):
    """Guards against a gather that silently does nothing: each case's loss on one process's rows alone differs
    from the same rows' share in the 2-process run (for the gathering cases), and W-MSE whitening the whole global
    batch at once differs from its per-process whitening (what 2 processes do by design)."""
    for name in ("swav", "mocov3", "msn", "dcl", "supcon", "tico", "mmcr", "vibcreg", "empssl"):  # DINO: the center below
        alone = _run(name, slice(0, PER_RANK))["loss"]  # one process, no process group: nothing gathered
        assert abs(alone.item() - ranks[0][name]["loss"].item()) > 1e-4, name
    dino_alone = _run("dino", slice(0, PER_RANK))["state"]["center"][1]
    assert not torch.allclose(dino_alone, ranks[0]["dino"]["state"]["center"][1])
    batch, _ = _inputs("wmse")
    whole = wmse_loss([batch["z0"], batch["z1"], batch["z2"]], w_size=N)
    assert abs(whole.item() - sum(r["wmse"]["loss"] for r in ranks).item() / WORLD) > 1e-3
