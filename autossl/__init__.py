"""autossl: self-supervised visual representation learning, from a laptop CPU to a GPU cluster.

    from autossl.methods import BarlowTwins
    from autossl.data import make_dataloader
    import pytorch_lightning as pl

    model = BarlowTwins(backbone='ResNet', memory_bank=False, projectionhead='linear')
    pl.Trainer(max_epochs=1).fit(model, make_dataloader('mnist'))
"""
__version__ = "0.1.0"
