"""Tests of lelp_lightning.sources (a package, so test module names never clash across folders)."""
