"""Losses: tiny cases worked out by hand (plain `math`, not the same torch formula again), then
agreement with lightly's reference implementations on random input, and the N-view extension."""
import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss

from autossl.losses import (barlow_twins_loss, infonce_loss, mean_over_view_pairs, negative_cosine_loss,
                            nt_xent_loss, vicreg_loss)

R2 = 1 / math.sqrt(2)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _ce(pos: float, negs: list[float], temperature: float) -> float:
    """-log softmax of the positive among [pos] + negs, all cosines scaled by 1/temperature."""
    e = [math.exp(s / temperature) for s in [pos] + negs]
    return -math.log(e[0] / sum(e))


# ---------------------------------------------------------------- hand-computed values

def test_nt_xent_by_hand():
    # Unnormalised on purpose: b0 = (1, 1) has cosine 1/sqrt2 with a0 = (1, 0); b1 = (0, 2) is a1's direction.
    z_a, z_b = t([[1, 0], [0, 1]]), t([[1, 1], [0, 2]])
    tau = 0.5
    # For each of the 4 anchors: cosine to its positive, then to the 2 negatives (other sample, both views).
    rows = [
        (R2, [0.0, 0.0]),  # a0: pos b0; negs b1, a1
        (1.0, [R2, 0.0]),  # a1: pos b1; negs b0, a0
        (R2, [R2, R2]),  # b0: pos a0; negs a1 (1/sqrt2), b1 (1/sqrt2)
        (1.0, [0.0, R2]),  # b1: pos a1; negs a0, b0
    ]
    expected = sum(_ce(p, n, tau) for p, n in rows) / 4
    assert nt_xent_loss(z_a, z_b, tau).item() == pytest.approx(expected, rel=1e-9)
    # Symmetric in the two views.
    assert nt_xent_loss(z_b, z_a, tau).item() == pytest.approx(expected, rel=1e-9)


def test_nt_xent_with_queue_by_hand():
    # One query: positive cosine 1/sqrt2; queue (unnormalised) has cosines 0 and -1 with the query.
    z_a, z_b, queue = t([[1, 0]]), t([[1, 1]]), t([[0, 3], [-2, 0]])
    tau = 0.2
    expected = _ce(R2, [0.0, -1.0], tau)
    assert nt_xent_loss(z_a, z_b, tau, queue=queue).item() == pytest.approx(expected, rel=1e-9)


def test_infonce_by_hand():
    # MoCo without a queue (v3's form): each query's positive is its own key, the other keys are negatives.
    q, k = t([[1, 0], [0, 1]]), t([[1, 1], [0, 3]])
    tau = 0.5
    expected = (_ce(R2, [0.0], tau) + _ce(1.0, [R2], tau)) / 2  # q0: pos k0, neg k1; q1: pos k1, neg k0
    assert infonce_loss(q, k, tau).item() == pytest.approx(expected, rel=1e-9)


def test_negative_cosine_by_hand():
    p, z = t([[1, 0], [1, 1]]), t([[2, 0], [0, 1]])
    assert negative_cosine_loss(p, z).item() == pytest.approx(-(1 + R2) / 2, rel=1e-12)


def test_barlow_twins_by_hand():
    # Per-dimension standardisation as BatchNorm: biased variance, eps=1e-5 inside the sqrt.
    # z_a columns: (0, 2) mean 1 var 1 and (0, 4) mean 2 var 4;  z_b columns: (1, 3) and (3, 1), var 1.
    z_a, z_b = t([[0, 0], [2, 4]]), t([[1, 3], [3, 1]])
    eps, lam = 1e-5, 0.1
    k1, k4 = 1 / math.sqrt(1 + eps), 2 / math.sqrt(4 + eps)  # standardised magnitudes of z_a's columns
    kb = 1 / math.sqrt(1 + eps)
    # standardised: z_a = [[-k1, -k4], [k1, k4]], z_b = [[-kb, kb], [kb, -kb]]; c = z_a^T z_b / 2
    c00, c01, c10, c11 = k1 * kb, -k1 * kb, k4 * kb, -k4 * kb
    expected = (c00 - 1) ** 2 + (c11 - 1) ** 2 + lam * (c01 ** 2 + c10 ** 2)
    assert barlow_twins_loss(z_a, z_b, lam).item() == pytest.approx(expected, rel=1e-9)


def test_vicreg_by_hand():
    z_a, z_b = t([[0, 0], [1, 0.5]]), t([[0, 1], [2, 1]])
    lam, mu, nu, eps = 25.0, 25.0, 1.0, 1e-4
    invariance = (0 ** 2 + 1 ** 2 + 1 ** 2 + 0.5 ** 2) / 4  # MSE over all 4 entries
    # Unbiased variances: z_a columns 0.5 and 0.125, z_b columns 2 and 0.
    hinge = lambda var: max(0.0, 1 - math.sqrt(var + eps))  # noqa: E731
    variance = 0.5 * ((hinge(0.5) + hinge(0.125)) / 2 + (hinge(2.0) + hinge(0.0)) / 2)
    # z_a centred: [[-.5, -.25], [.5, .25]] -> cov01 = 0.25 (n-1 = 1); two off-diagonal entries, / d=2.
    # z_b's second column is constant, so its covariance is 0.
    covariance = 2 * 0.25 ** 2 / 2 + 0.0
    expected = lam * invariance + mu * variance + nu * covariance
    assert vicreg_loss(z_a, z_b, lam, mu, nu, eps).item() == pytest.approx(expected, rel=1e-9)


def test_mean_over_view_pairs_by_hand():
    zs = [t([1.0]), t([2.0]), t([4.0])]
    # Pairs (0,1), (0,2), (1,2): differences -1, -3, -2 -> mean -2.
    assert mean_over_view_pairs(lambda a, b: (a - b).sum(), zs).item() == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="at least 2 views"):
        mean_over_view_pairs(lambda a, b: (a - b).sum(), zs[:1])


# ---------------------------------------------------------------- agreement with lightly

def _pair(seed: int, n: int = 12, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


@pytest.mark.parametrize("seed,temperature", [(0, 0.5), (1, 0.1), (2, 0.2)])
def test_nt_xent_equals_lightly(seed, temperature):
    a, b = _pair(seed)
    # Both default to gathering across processes only when distributed; on one process they must agree.
    ours = nt_xent_loss(a, b, temperature)
    assert ours.item() == pytest.approx(NTXentLoss(temperature).forward(a, b).item(), rel=1e-5)
    # Gradients too: both are differentiable functions of the same inputs.
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    nt_xent_loss(a1, b1, temperature).backward()
    NTXentLoss(temperature)(a2, b2).backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-4, atol=1e-6)


def test_nt_xent_queue_equals_lightly_memory_bank():
    """Our `queue` = lightly's memory bank holding the same entries (queue-only negatives, z_a as
    queries, bank as before this batch). lightly enqueues z_b itself afterwards; we leave that to the caller."""
    a, b = _pair(3)
    queue = torch.randn(40, 16, generator=torch.Generator().manual_seed(4))
    for temperature in (0.07, 0.5):
        lightly_loss = NTXentLoss(temperature, memory_bank_size=(40, 16))
        lightly_loss.memory_bank.bank = F.normalize(queue, dim=1).clone()
        expected = lightly_loss(a.requires_grad_(), b).item()
        assert nt_xent_loss(a, b, temperature, queue=queue).item() == pytest.approx(expected, rel=1e-5)
    # A different queue gives a different loss (the queue really is the negatives).
    assert nt_xent_loss(a, b, 0.5, queue=queue[:5]).item() != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_negative_cosine_equals_lightly(seed):
    p, z = _pair(seed)
    assert negative_cosine_loss(p, z).item() == pytest.approx(NegativeCosineSimilarity()(p, z).item(), rel=1e-6)


@pytest.mark.parametrize("seed,lam", [(0, 5e-3), (1, 0.0051), (2, 0.1)])
def test_barlow_twins_equals_lightly(seed, lam):
    # Shifted and scaled so the standardisation (mean, biased variance) matters.
    a, b = _pair(seed, n=16, d=24)
    a, b = 3 * a + 1, 0.5 * b - 2
    ours = barlow_twins_loss(a, b, lam).item()
    assert ours == pytest.approx(BarlowTwinsLoss(lam)(a, b).item(), rel=1e-5)


@pytest.mark.parametrize("seed,weights", [(0, (25.0, 25.0, 1.0)), (1, (5.0, 10.0, 2.0))])
def test_vicreg_equals_lightly(seed, weights):
    a, b = _pair(seed)
    a = 0.3 * a  # std below 1 so the variance hinge is active
    lam, mu, nu = weights
    expected = VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu)(a, b).item()
    assert vicreg_loss(a, b, lam, mu, nu).item() == pytest.approx(expected, rel=1e-5)


LOSS_PAIRS = [
    (lambda a, b: nt_xent_loss(a, b, 0.3), NTXentLoss(0.3)),
    (negative_cosine_loss, NegativeCosineSimilarity()),
    (barlow_twins_loss, BarlowTwinsLoss()),
    (vicreg_loss, VICRegLoss()),
]


@pytest.mark.parametrize("ours,theirs", LOSS_PAIRS, ids=["nt_xent", "cosine", "barlow", "vicreg"])
def test_multiview_is_mean_of_lightly_over_pairs(ours, theirs):
    g = torch.Generator().manual_seed(5)
    zs = [torch.randn(10, 8, generator=g) for _ in range(4)]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    expected = sum(theirs(zs[i], zs[j]).item() for i, j in pairs) / len(pairs)
    assert mean_over_view_pairs(ours, zs).item() == pytest.approx(expected, rel=1e-5)
    # Two views: exactly the two-view loss, so loss values stay comparable across num_views.
    assert mean_over_view_pairs(ours, zs[:2]).item() == ours(zs[0], zs[1]).item()


@pytest.mark.parametrize("loss", [barlow_twins_loss, vicreg_loss])
def test_statistics_losses_reject_a_single_sample(loss):
    # One sample has no variance: VICReg would silently return NaN, Barlow Twins a meaningless constant.
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss(torch.randn(1, 4), torch.randn(1, 4))
