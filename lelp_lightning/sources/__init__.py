"""Sources of labeled rows (texts or images) split into train / val / test, one module per dataset.

Every source is deterministic under its ``seed`` and has a ``fingerprint()`` that changes whenever the rows
it yields change (file, options, seed), so the teacher cache keyed on it is invalidated with the data.
The bundled datasets are read from installed registry packages (README "Data"); nothing is downloaded.
"""

from lelp_lightning.core import SPLITS, Source, SplitData
from lelp_lightning.sources.digits import Digits
from lelp_lightning.sources.fashion_mnist import FashionMNIST
from lelp_lightning.sources.newsgroups import Newsgroups20
from lelp_lightning.sources.rotten_tomatoes import RottenTomatoes
from lelp_lightning.sources.text_file import TextFile, read_table
from lelp_lightning.sources.tweets import Tweets

__all__ = ["SPLITS", "Digits", "FashionMNIST", "Newsgroups20", "RottenTomatoes", "Source", "SplitData", "TextFile",
           "Tweets", "read_table"]
