"""Tests of the pseudo-subclass strategies (a package, so their module names never clash with other test folders)."""
