"""``lelp tune`` on the accuracy grid's cells, against the grid's own results."""
