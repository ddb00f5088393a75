"""Tests of lelp_lightning.tune (a package, so test module names never clash across folders)."""
