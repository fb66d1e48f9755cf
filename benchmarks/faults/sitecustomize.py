"""Imported by Python at start-up when this folder is on ``PYTHONPATH`` (the ``site``
module's hook): registers the fault-injecting model class in every process of a
benchmark's deployments, so a replica can rebuild a registered ``bench-faulty-mlp``.

Only the monitor benchmark and its tests put this folder on ``PYTHONPATH``; nothing in
Lepton itself reads it.
"""

import lepton_faults  # noqa: F401  (its @register_model runs on import)
