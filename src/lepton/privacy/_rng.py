"""Where the noise comes from: a generator seeded from the operating system's CSPRNG.

NumPy's PCG64 is fast but not a cryptographic generator; what makes it unpredictable
here is its 128-bit seed, drawn fresh from :mod:`secrets` for every release, so no one
can replay the noise of a release. A ``seed`` makes the noise reproducible for tests,
and a release made with one is marked ``private=False``: anyone who knows the seed can
subtract the noise.
"""

from __future__ import annotations

import secrets

import numpy as np

from lepton.errors import PrivacyError

__all__ = ["SEEDED_NOTE", "generator"]

SEEDED_NOTE = (
    "NOT PRIVATE: the noise was drawn from a fixed seed (for tests); anyone who knows the "
    "seed can remove it. Drop seed= for a private release."
)


def generator(seed: int | None) -> tuple[np.random.Generator, bool]:
    """A noise generator and whether its releases are private.

    Args:
        seed: ``None`` for a fresh 128-bit seed from :func:`secrets.randbits` (private);
            an integer for reproducible noise (tests only, not private).

    Example:
        >>> rng, private = generator(None)
        >>> private
        True
    """
    if seed is None:
        return np.random.Generator(np.random.PCG64(secrets.randbits(128))), True
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PrivacyError(f"seed must be a non-negative integer or None, got {seed!r}")
    return np.random.Generator(np.random.PCG64(seed)), False
