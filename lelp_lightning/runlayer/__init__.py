"""The run layer: how the outer loops (``lelp tune``, ``lelp search``, ``lelp active``) drive fits and studies.

:mod:`~lelp_lightning.runlayer.fits` names a run's folder, fits a trial and refits a configuration on several
seeds; :mod:`~lelp_lightning.runlayer.studies` opens, guards and resumes the Optuna study tune and search share
between processes. The outer loops reach the core (``lelp fit`` in this process, :mod:`lelp_lightning.runs`)
through these two modules.
"""
