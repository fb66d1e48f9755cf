"""Jobs: typed specs, the scheduler (CPU, GPU and memory slots, priorities, retries,
resume), the executor contract and its local executor, and the worker of one attempt
(``python -m lepton.platform.jobs._worker``). Never imports the API or the dashboard.
"""

from __future__ import annotations

from lepton.platform.jobs._scheduler import JobManager

__all__ = ["JobManager"]
