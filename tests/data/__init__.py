"""Tests of lelp_lightning.data (a package, so test module names never clash across folders)."""
