"""SB3 callbacks that log Jacobian sparsity while an agent trains (see issue 3)."""

__all__: list[str] = []
