"""`strategy=local`: the model on one device, no wrapper (one worker; also the pure tests' strategy).

Everything is inherited from `base.Strategy`, which is plain torch: forward, backward scaled
by 1/accumulation, row freezing, clipping, AdamW. The other strategies change only how the
model is wrapped, how gradients are synchronised and how state is saved.
"""

from __future__ import annotations

from kopretrain.train.strategies.base import Strategy


class LocalStrategy(Strategy):
    """One process, one device."""

    name = "local"
