"""Small meshes the decimation kernels' tests share."""

from __future__ import annotations

import torch


def grid_mesh(n: int) -> torch.Tensor:
    """[F, 3] faces of an n x n vertex grid, two triangles a cell."""
    index = torch.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    first = torch.stack((a, b, d), -1).reshape(-1, 3)
    second = torch.stack((a, d, c), -1).reshape(-1, 3)
    return torch.cat((first, second))
