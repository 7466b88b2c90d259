"""The earlier autoSSL's module paths (../shared/seeds/001_...: autoSSL/utils/dataloader2array.py,
autoSSL/data/pipe_dataloader.py, autoSSL.models, autoSSL.evaluate) import, and what they give works."""
import importlib

import numpy as np
import pytest


@pytest.mark.parametrize("name", ["data", "backbones", "heads", "losses", "methods", "models", "train", "evaluate",
                                  "cli", "utils", "data.pipe_dataloader", "utils.dataloader2array"])
def test_every_earlier_module_path_imports(name):
    import autoSSL

    module = importlib.import_module(f"autoSSL.{name}")
    assert module is importlib.import_module(f"autossl.{name}")  # the same module object, not a copy
    if "." not in name:
        assert getattr(autoSSL, name) is module


def test_dataloader2array_turns_a_pipe_dataloader_into_arrays(mnist_arrays):
    from autoSSL.data.pipe_dataloader import pipe_dataloader
    from autoSSL.utils.dataloader2array import dataloader2array

    loader = pipe_dataloader(mnist_arrays, num_views=2, batch_size=64, image_size=16, preset="mnist", num_workers=0,
                             shuffle=False, drop_last=False)
    X, y = dataloader2array(loader, max_samples=100)
    assert X.shape == (100, 3, 16, 16) and X.dtype == np.float32
    np.testing.assert_array_equal(y, mnist_arrays[1][:100])  # unshuffled: the labels in order
    with pytest.raises(ValueError, match="no readable images"):
        dataloader2array([])
