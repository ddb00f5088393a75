"""LayerNAS over student architectures under a size or latency budget (``lelp search``)."""
