"""Tests of lelp_lightning.teachers (a package, so test module names never clash across folders)."""
