"""BatchNorm over the global batch of a data-parallel ``fit``: the statistics every rank's
part would have in one process, with one all-reduce per layer forward and one backward.

:meth:`lepton.train._distributed.Shard.wrap` puts :func:`global_batch_norm` in place of each
BatchNorm layer's ``forward`` when ``fit(..., sync_batchnorm=True)`` (the default); the
layer's parameters, buffers and state-dict names stay as they are.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["global_batch_norm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient is summed over ranks too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    return cast(torch.Tensor, _AllReduceSum.apply(x))  # type: ignore[no-untyped-call]


def global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn``'s training forward with the mean and variance of the global batch (every
    rank's part), and its running statistics updated from them; eval is unchanged.

    One all-reduce forward (and its one backward): the sums of ``x - s`` and ``(x - s)**2``
    and the count, with ``s`` the running mean, the same on every rank. Shifting by a value
    near the mean keeps ``E[(x-s)^2] - E[x-s]^2`` from cancelling (the textbook one-pass
    variance loses digits when the mean is large against the spread)."""
    if not bn.training:
        return type(bn).forward(bn, x)  # type: ignore[no-any-return]
    dims = [0, *range(2, x.dim())]
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    if bn.running_mean is not None:
        shift = bn.running_mean.detach().to(x.dtype).view(shape)
    else:  # no running statistics: the ranks' mean of their means (one more all-reduce)
        shift = _sum_over_ranks(x.detach().mean(dims, keepdim=True)) / dist.get_world_size()
    d = x - shift
    channels = x.shape[1]
    local = torch.cat([d.sum(dims), (d * d).sum(dims), x.new_full((1,), x.numel() / channels)])
    sums = _sum_over_ranks(local)
    count = sums[-1]
    mean_d = sums[:channels] / count
    var = (sums[channels : 2 * channels] / count - mean_d * mean_d).clamp_min(0.0)
    mean = mean_d + shift.view(-1)
    y = (x - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        assert bn.running_mean is not None
        assert bn.running_var is not None
        assert bn.num_batches_tracked is not None
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            f = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            n = float(count)
            bn.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
            bn.running_var.mul_(1 - f).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=f)
    return y  # type: ignore[no-any-return]
