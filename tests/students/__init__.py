"""Tests of lelp_lightning.students (a package, so test module names never clash across folders)."""
