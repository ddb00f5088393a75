"""Tests of lelp_lightning.encoders (a package, so test module names never clash across folders)."""
