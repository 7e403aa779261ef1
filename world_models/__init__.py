"""Jacobian-supervised MLP world models trained on collected transitions (see issue 5)."""

__all__: list[str] = []
