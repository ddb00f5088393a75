"""``lelp active``: student accuracy against teacher queries."""
