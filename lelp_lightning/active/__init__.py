"""Robust active distillation: spend a budget of teacher queries on the pool rows a selector picks (``lelp active``)."""

from lelp_lightning.active.selectors import Selector, selectors

__all__ = ["Selector", "selectors"]
