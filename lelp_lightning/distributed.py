"""FSDP2 for students through Lightning's ``ModelParallelStrategy``.

``FSDP2Strategy`` is ``ModelParallelStrategy`` with every process in one data-parallel group (no tensor
parallelism: students are small) and single-file checkpoints, so ``lelp validate/test/predict`` read them in
one process. :func:`shard_modules` is what ``DistillModule.configure_model`` applies: FSDP2 ``fully_shard``
of every trainable part (student layers, objectives with parameters) over the data-parallel mesh.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from lelp_lightning.errors import LelpError

try:
    from torch.distributed.fsdp import FSDPModule, fully_shard
except ImportError:  # torch < 2.6
    from torch.distributed._composable.fsdp import FSDPModule, fully_shard


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 over all processes (``num_nodes × devices``), parameters sharded on dim 0, full-state checkpoints."""

    def __init__(self, save_distributed_checkpoint: bool = False, process_group_backend: str | None = None,
                 timeout: timedelta | None = timedelta(minutes=30)):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def shard_modules(parts: list[nn.Module], device_mesh) -> None:
    """``fully_shard`` each parameter-holding child of ``parts`` over the data-parallel mesh (once).

    Children are the FSDP units (not the student as a whole), so a forward through ``student.embed`` and
    ``student.head`` separately still gathers every weight it uses.
    """
    if "tensor_parallel" in (device_mesh.mesh_dim_names or ()) and device_mesh["tensor_parallel"].size() > 1:
        raise LelpError("students are not tensor-parallel: use tensor_parallel_size=1 "
                        "(lelp_lightning.distributed.FSDP2Strategy, configs/trainer/fsdp.yaml).")
    mesh = device_mesh["data_parallel"] if "data_parallel" in (device_mesh.mesh_dim_names or ()) else device_mesh
    for part in parts:
        if any(isinstance(m, FSDPModule) for m in part.modules()):
            continue  # already sharded (configure_model runs again for test after fit)
        for child in part.children():
            if _has_parameters(child):
                fully_shard(child, mesh=mesh)
        if next(part.parameters(recurse=False), None) is not None:
            fully_shard(part, mesh=mesh)  # parameters held by the part itself
