"""W&B logging that works with no account: offline unless a key or online mode is configured."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger


def wandb_online_configured() -> bool:
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    netrc = Path.home() / ".netrc"
    return bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` with ``offline=None`` meaning: online if a W&B key is configured, else offline."""

    def __init__(self, save_dir: str = "runs", project: str = "lelp-lightning", name: str | None = None,
                 offline: bool | None = None, **kwargs):
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        super().__init__(save_dir=save_dir, project=project, name=name,
                         offline=(not wandb_online_configured()) if offline is None else offline, **kwargs)
        # Lightning always hands wandb.init ``anonymous`` (None when unset), a setting wandb now ignores and warns
        # about on every run; leave it out unless the user set it.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
