"""Tests of lelp_lightning.cache (a package, so test module names never clash across folders)."""
