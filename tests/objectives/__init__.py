"""Tests of lelp_lightning.objectives (a package, so test module names never clash across folders)."""
