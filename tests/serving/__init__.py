"""Tests of lelp_lightning.serving (a package, so test module names never clash across folders)."""
