"""``lelp search``: LayerNAS against random search and TPE."""
