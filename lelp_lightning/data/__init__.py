"""Data side: sources of labeled text, student featurisers and the DistillDataModule."""
