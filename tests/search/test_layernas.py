"""LayerNAS's bookkeeping against brute force on synthetic rewards with a known optimum; the space's parsing."""

import itertools
import math

import pytest

from lelp_lightning.errors import LelpError
from lelp_lightning.search.layernas import bucket_edges, bucket_of, keep_best, layer_candidates, layernas, pareto_front
from lelp_lightning.search.space import ArchSpace
from lelp_lightning.students import CNNStudent, HashedBagStudent, MLPStudent

WIDTHS = [(64, 32, 16, 8), (4, 2, 1), (32, 16, 8, 4)]  # option values of three layers, the default first


def cost(arch):
    return math.prod(WIDTHS[i][o] for i, o in enumerate(arch))


def reward(arch):  # separable: each layer adds its own share, larger widths more (with diminishing returns)
    return sum(math.log1p(WIDTHS[i][o]) * (i + 1) for i, o in enumerate(arch))


def test_layernas_visits_at_most_h_options_l_candidates_and_keeps_the_best_of_each_bucket():
    H = 4
    edges = bucket_edges(cost((3, 2, 3)), cost((0, 0, 0)), H)
    evaluated = []

    def evaluate(archs):
        evaluated.extend(archs)
        return {a: (cost(a), reward(a)) for a in archs}

    scores, history = layernas([len(w) for w in WIDTHS], H, edges, evaluate)
    assert len(evaluated) == len(set(evaluated)) <= H * max(map(len, WIDTHS)) * len(WIDTHS)
    kept = [(0, 0, 0)]
    for layer, kept_after in enumerate(history):  # brute force per layer: the best of every bucket of its candidates
        candidates = layer_candidates(kept, layer, len(WIDTHS[layer]))
        best = {}
        for a in candidates:
            b = bucket_of(cost(a), edges)
            if b not in best or (reward(a), -cost(a)) > (reward(best[b]), -cost(best[b])):
                best[b] = a
        assert kept_after == [best[b] for b in sorted(best)] and len(kept_after) <= H
        kept = kept_after
    # a separable reward: the layer-wise search finds the global optimum of every bucket's best overall
    everything = list(itertools.product(*(range(len(w)) for w in WIDTHS)))
    assert max(scores, key=lambda a: scores[a][1]) == max(everything, key=reward) == (0, 0, 0)
    cheapest_bucket = [a for a in everything if bucket_of(cost(a), edges) == 0]
    assert bucket_of(cost(history[-1][0]), edges) == 0
    assert scores[history[-1][0]][1] == max(reward(a) for a in cheapest_bucket)


def test_buckets_are_log_spaced_and_unscored_candidates_are_never_kept():
    edges = bucket_edges(10.0, 1000.0, 2)
    assert edges == pytest.approx([100.0]) and bucket_of(99, edges) == 0 and bucket_of(100, edges) == 1
    assert bucket_edges(5.0, 5.0, 10) == []
    scores = {(0,): (50.0, 0.9), (1,): (20.0, -math.inf), (2,): (30.0, 0.95)}
    assert keep_best(scores, [(0,), (1,), (2,)], edges) == [(2,)]


def test_the_pareto_front_is_what_no_other_point_dominates():
    points = {(0,): (1.0, 0.5), (1,): (2.0, 0.7), (2,): (3.0, 0.6), (3,): (2.0, 0.4), (4,): (4.0, 0.9)}
    assert pareto_front(points) == [(0,), (1,), (4,)]


def test_the_space_assembles_list_options_and_skips_zero_entries():
    space = ArchSpace.from_dict({"layers": [
        {"name": "h1", "option": "model.student.init_args.hidden_dims[0]", "values": [128, 64]},
        {"name": "h2", "option": "model.student.init_args.hidden_dims[1]", "values": [0, 32]},
        {"name": "dim", "option": "data.featurizer.init_args.num_buckets", "values": [4096, 1024]}]})
    defaults = {"model.student": {"hidden_dims": [128]}}
    assert space.overrides((1, 0, 1), defaults) == ["--model.student.init_args.hidden_dims", "[64]",
                                                    "--data.featurizer.init_args.num_buckets", "1024"]
    assert space.overrides((0, 1, 0), defaults)[:2] == ["--model.student.init_args.hidden_dims", "[128, 32]"]
    space.check_against({"model.student": MLPStudent, "data.featurizer": __import__(
        "lelp_lightning.data.featurizers", fromlist=["HashedNgramFeaturizer"]).HashedNgramFeaturizer})


@pytest.mark.parametrize(("name", "student"),
                         [("hashed_bag", HashedBagStudent), ("mlp", MLPStudent), ("cnn", CNNStudent)])
def test_every_shipped_space_loads_and_names_its_students_options(name, student):
    from helpers import CONFIGS

    from lelp_lightning.data.featurizers import HashedNgramFeaturizer

    space = ArchSpace.load(CONFIGS / "search" / f"{name}.yaml")
    space.check_against({"model.student": student, "data.featurizer": HashedNgramFeaturizer})
    assert all(len(layer.values) >= 2 for layer in space.layers)


@pytest.mark.parametrize(("spec", "message"), [
    ({"layers": []}, "empty layer list"),
    ({"layers": [{"name": "x", "option": "model.lr", "values": [1]}]}, "is not a student or featuriser option"),
    ({"layers": [{"name": "x", "option": "model.student.init_args.a", "values": []}]}, "non-empty list of values"),
    ({"layerz": []}, "a 'layers' list"),
])
def test_a_bad_space_is_one_sentence(spec, message):
    with pytest.raises(LelpError, match=message):
        ArchSpace.from_dict(spec)


def test_an_option_the_student_does_not_have_is_refused_with_its_options():
    space = ArchSpace.from_dict(
        {"layers": [{"name": "w", "option": "model.student.init_args.width", "values": [1, 2]}]})
    with pytest.raises(LelpError, match="HashedBagStudent has no option 'width'; its options are .*embed_dim"):
        space.check_against({"model.student": HashedBagStudent, "data.featurizer": object})
