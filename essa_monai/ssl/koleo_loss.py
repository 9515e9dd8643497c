"""KoLeo regulariser (Kozachenko-Leonenko differential entropy estimator, Sablayrolles et al. 2019).

Spreads features in a batch by pushing each one away from its nearest neighbour:
``-mean_i log(||x_i - x_nn(i)|| + eps)`` on L2-normalised vectors. DINOv2 applies it to the student
backbone CLS tokens of each global view separately (never between two crops of one image) and sums
the views, with weight 0.1 applied by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """KoLeo loss on a batch of feature vectors.

    Args:
        eps: added to distances inside the log, and used by the L2 normalisation.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    @staticmethod
    def nearest_neighbours(x: Tensor) -> Tensor:
        """Index of each row's nearest other row, for L2-normalised ``(B, D)`` ``x`` -> ``(B,)`` long.

        On the unit sphere the largest dot product is the smallest distance; the diagonal is excluded.
        """
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)  # below any cosine similarity
        return dots.argmax(dim=1)

    def forward(self, x: Tensor, n_views: int = 1) -> Tensor:
        """KoLeo loss of ``x``.

        Args:
            x: ``(n_views * B, D)`` features (e.g. backbone CLS tokens), view-major; need ``B >= 2``.
            n_views: number of views stacked in ``x``; the loss is computed within each view and summed.

        Returns:
            Scalar: ``sum over views of -mean_b log(d_b + eps)``, ``d_b`` the Euclidean distance of
            normalised feature ``b`` to its nearest neighbour (in ``[0, 2]``).
        """
        if x.ndim != 2 or x.shape[0] % n_views or x.shape[0] // n_views < 2:
            raise ValueError(f"x must be (n_views * B, D) with B >= 2 and n_views={n_views}, got {tuple(x.shape)}")
        total = x.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            for view in x.float().chunk(n_views):
                view = F.normalize(view, p=2, dim=-1, eps=self.eps)
                with torch.no_grad():
                    neighbours = self.nearest_neighbours(view)
                distances = F.pairwise_distance(view, view[neighbours], p=2, eps=self.eps)
                total = total + (-torch.log(distances + self.eps).mean())
        return total
