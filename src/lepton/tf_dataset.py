"""The articles' ``lepton.tf_dataset``: MNIST from Lepton's own catalog.

An alias kept so the code printed in the articles about Lepton runs as written (with
``lepton`` for ``leptonai``); ``docs/articles.md`` shows each snippet beside the modern
call. New code calls :func:`lepton.data.load` directly::

    import lepton as lp

    train = lp.data.load("mnist", split="train")  # what load_mnist_data() returns
    test = lp.data.load("mnist", split="test")    # what load_mnist_data(test=True) returns
"""

from __future__ import annotations

from lepton.data import Dataset, load

__all__ = ["load_mnist_data"]


def load_mnist_data(test: bool = False) -> Dataset:
    """The real MNIST training set (60,000 images), or the test set (10,000) with ``test``.

    The same as ``lepton.data.load("mnist", split="test" if test else "train")``: images
    ``(N, 1, 28, 28)`` scaled to [0, 1], integer labels 0-9, read from the files a package
    ships and checked against their published SHA-256 (no download).

    Raises:
        DataSourceMissingError: The MNIST files are not on this machine (the message says
            how to install them).

    Example:
        >>> from lepton.tf_dataset import load_mnist_data
        >>> test_dataset = load_mnist_data(test=True)  # doctest: +SKIP
        >>> len(test_dataset)  # doctest: +SKIP
        10000
    """
    return load("mnist", split="test" if test else "train")
