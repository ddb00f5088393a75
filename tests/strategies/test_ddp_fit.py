"""Under DDP every rank ends with the state a single-process fit on all rows gives (2 CPU processes, gloo).

Shardable strategies fit on each rank's contiguous shard with their statistics all-reduced; the others are
fitted on rank 0 and broadcast. Both go through ``fit_strategy``, the function the DataModule calls.
"""

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import gaussian_classes
from threadpoolctl import threadpool_limits

from lelp_lightning.strategies import RowInfo, fit_strategy, strategies

# Small samples, so k-means and the GMM really make their chunked, all-reduced passes.
OPTIONS = {"kmeans": {"sample_size": 40, "n_init": 2}, "gmm": {"sample_size": 40},
           "gmm_full": {"sample_size": 40, "covariance_type": "full"}, "tsne_kmeans": {"max_rows": 50},
           "subclass_distillation": {"min_steps": 50}, "random_projection_ensemble": {"num_subclasses": 4,
                                                                                      "num_projections": 2}}


def configured():
    out = {}
    for entry in strategies.entries():
        if entry.cls.__module__.startswith("lelp_lightning."):
            out[entry.name] = (entry.cls, OPTIONS.get(entry.name, {}))
    out["gmm_full"] = (strategies.get("gmm"), OPTIONS["gmm_full"])
    return out


def data():
    x, y, W, b = gaussian_classes(n_per_class=90, dim=8, num_classes=3, seed=5)
    order = np.random.default_rng(0).permutation(len(y))  # classes mixed over the shards
    x, y = x[order], y[order]
    return x, y, W, b, RowInfo(row_ids=np.arange(len(y)) * 3 + 11, fine_labels=y * 2 + order % 2)


def make(cls, options, name):
    return cls(**{"num_subclasses": 1 if name == "none" else 3, **options})


def worker(rank: int, world_size: int, folder: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    x, y, W, b, rows = data()
    states = {}
    with threadpool_limits(1):
        for name, (cls, options) in configured().items():
            strategy = make(cls, options, name)
            fit_strategy(strategy, x, y, (W, b), rows)
            states[name] = strategy.state_dict()
    torch.save(states, f"{folder}/rank{rank}.pt")
    # Both ranks finish their last collective before either closes its connections: a rank that tore them down
    # while the other's final all-reduce was still in flight aborted in gloo (SIGABRT, once in a CI run).
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_end_with_the_single_process_state(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    x, y, W, b, rows = data()
    with threadpool_limits(1):
        for name, (cls, options) in configured().items():
            single = make(cls, options, name).fit(x, y, (W, b), rows=rows).state_dict()
            for key, value in single["tensors"].items():
                torch.testing.assert_close(ranks[0][name]["tensors"][key], ranks[1][name]["tensors"][key],
                                           rtol=0, atol=0, msg=f"{name}.{key} differs between ranks")
                torch.testing.assert_close(ranks[0][name]["tensors"][key], value, rtol=1e-9, atol=1e-9,
                                           msg=f"{name}.{key} differs from the single-process fit")
            torch.testing.assert_close(ranks[0][name]["scale"], single["scale"], rtol=1e-9, atol=1e-12)
