"""The export contract: every registered student × every featuriser either exports, its predictor's probabilities
equal eager PyTorch's within 1e-5 with the same predictions, or is refused with one sentence; a student registered
here, outside the library, exports without anything in serving/ knowing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import save_tiny_bert, tiny_tweets
from torch import nn

from lelp_lightning.cache import TeacherCache
from lelp_lightning.data import (
    EncoderTokenFeaturizer,
    Featurizer,
    HashedNgramFeaturizer,
    PixelFeaturizer,
    SentenceEncoderFeaturizer,
    StaticTokenFeaturizer,
)
from lelp_lightning.errors import LelpError
from lelp_lightning.objectives.base import class_logits
from lelp_lightning.serving import Predictor
from lelp_lightning.serving.export import export_graph, write_graph
from lelp_lightning.serving.predictor import input_builders
from lelp_lightning.sources import Digits
from lelp_lightning.students import Student, students

NUM_CLASSES, NUM_SUBCLASSES = 2, 2
NORMALIZE = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
             {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
# the pairs a run trains with today: these must export, whatever else the registries hold
MUST_EXPORT = {("hashed_bag", "hashed"), ("mlp", "encoder"), ("mlp", "pixels"), ("cnn", "pixels"),
               ("cnn", "pixels_2d"), ("contract_mlp2", "encoder"), ("contract_mlp2", "pixels"),
               ("transformer", "tokens"), ("static", "static"), ("hashed_bag", "static")}
# a bag student on dense features and a dense student on bags: refused in one sentence
MUST_REFUSE = {("hashed_bag", "encoder"), ("hashed_bag", "pixels"), ("hashed_bag", "pixels_2d"), ("mlp", "hashed"),
               ("cnn", "hashed"), ("contract_mlp2", "hashed"), ("hashed_bag", "tokens"), ("mlp", "tokens"),
               ("transformer", "hashed"), ("transformer", "encoder"), ("transformer", "pixels"), ("static", "encoder"),
               ("static", "pixels"), ("static", "pixels_2d"), ("mlp", "static"), ("cnn", "static"),
               ("contract_mlp2", "static")}
# a student that starts from a pretrained encoder starts from the tiny one (all its layers)
STUDENT_OPTIONS = {"transformer": lambda encoder: {"encoder": encoder, "num_layers": None}}


class TwoLayerStudent(Student, name="contract_mlp2",
                      description="A test-only two-layer tanh MLP: registered outside the library, exported as is."):
    """Dense features → tanh → tanh → C·S; nothing in serving/ names it."""

    def __init__(self, input_dim: int = 16, num_outputs: int = 2, width: int = 24):
        super().__init__(input_dim, num_outputs)
        self.body = nn.Sequential(nn.Linear(input_dim, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.embedding_dim = width
        self.head = nn.Linear(width, num_outputs)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs.flatten(1))  # not reshape(len(inputs), -1): the trace would fix the batch size


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny randomly initialised BERT with MiniLM's tokenizer and an L2 normalisation, as a local encoder."""
    folder = tmp_path_factory.mktemp("tiny-encoder")
    save_tiny_bert(folder)
    (folder / "modules.json").write_text(json.dumps(NORMALIZE))
    return str(folder)


@pytest.fixture(scope="module")
def featurizers(tiny_encoder, tmp_path_factory) -> dict:
    """Each featuriser with a few raw rows of real data: tweets (and the edge cases) or digit images; the static
    featuriser's table distilled from the tiny encoder into a cache of its own."""
    static = StaticTokenFeaturizer(tiny_encoder, pca_dims=8, max_length=32)
    static.use_cache(TeacherCache(tmp_path_factory.mktemp("static-cache")))
    texts = tiny_tweets().split("test").texts[:40] + ["", "☃ ünïcödé", "the end " * 80]
    images = Digits().split("test").texts[:40]
    return {"hashed": (HashedNgramFeaturizer(num_buckets=256, max_ngram=2), texts),
            "encoder": (SentenceEncoderFeaturizer(tiny_encoder, max_length=32, batch_size=8), texts),
            "tokens": (EncoderTokenFeaturizer(tiny_encoder, max_length=32), texts),
            "pixels": (PixelFeaturizer((8, 8), flatten=True, mean=0.2, std=0.3), images),
            "pixels_2d": (PixelFeaturizer((8, 8)), images), "static": (static, texts)}


def export_folder(student: Student, featurizer, rows, folder) -> Predictor:
    """``student`` fed by ``featurizer`` exported to ``folder`` as ``lelp export`` writes it, loaded back."""
    graph, spec = export_graph(student, NUM_CLASSES, featurizer)
    folder.mkdir()
    write_graph(graph, spec, rows[:2], folder)
    (folder / "labels.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
    (folder / "model_card.json").write_text("{}")
    return Predictor.load(folder)


def eager_probabilities(student: Student, featurizer, rows) -> np.ndarray:
    inputs = featurizer.transform(rows).gather(np.arange(len(rows)))
    with torch.no_grad():
        return torch.softmax(class_logits(student(inputs), NUM_CLASSES), dim=-1).numpy()


@pytest.mark.parametrize("feature", ["hashed", "encoder", "tokens", "pixels", "pixels_2d", "static"])
@pytest.mark.parametrize("name", students.names())
def test_every_student_exports_with_every_featuriser_it_reads_or_is_refused_in_one_sentence(
        name, feature, featurizers, tiny_encoder, tmp_path):
    featurizer, rows = featurizers[feature]
    torch.manual_seed(0)
    refusal = None
    options = STUDENT_OPTIONS.get(name, lambda encoder: {})(tiny_encoder)
    try:
        student = students.get(name)(input_dim=featurizer.input_dim, num_outputs=NUM_CLASSES * NUM_SUBCLASSES,
                                     **options).eval()
        predictor = export_folder(student, featurizer, rows, tmp_path / "export")
    except LelpError as err:  # refused: checked below, outside the handler
        refusal = err
    except RuntimeError:  # the trace failed: only for a pair that PyTorch cannot run either, so no run trains it
        assert (name, feature) not in MUST_EXPORT
        with pytest.raises(RuntimeError):
            eager_probabilities(student, featurizer, rows)
        pytest.skip(f"{name} does not read the {feature} featuriser's inputs in PyTorch either")
    if refusal is not None:
        assert (name, feature) not in MUST_EXPORT, f"{name} × {feature} must export: {refusal}"
        message = str(refusal)
        assert message.endswith(".") and "\n" not in message, message
        return
    assert (name, feature) not in MUST_REFUSE, f"{name} × {feature} exported, but should be refused"
    eager = eager_probabilities(student, featurizer, rows)
    served = predictor.predict_proba(rows, batch_size=16)
    assert served.shape == eager.shape == (len(rows), NUM_CLASSES)
    np.testing.assert_allclose(served, eager, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(served.argmax(1), eager.argmax(1))
    assert predictor.predict(rows[:3]) == [predictor.labels[i] for i in eager[:3].argmax(1)]


def test_the_contract_covers_the_library_students_and_the_one_registered_here(featurizers):
    assert {featurizer.kind for featurizer, _ in featurizers.values()} == set(input_builders.names())
    assert {"hashed_bag", "mlp", "cnn", "contract_mlp2", "transformer", "static"} <= set(students.names())
    assert {name for name, _ in MUST_EXPORT | MUST_REFUSE} <= set(students.names())


def test_a_featuriser_without_an_export_spec_or_builder_is_one_sentence(featurizers):
    class Unexportable(HashedNgramFeaturizer):
        def export_spec(self):
            spec = super().export_spec()
            spec.config = {**spec.config, "kind": "no_such_kind"}
            return spec

    student = students.get("hashed_bag")(input_dim=256, num_outputs=4)
    with pytest.raises(LelpError, match="no predictor-side input builder"):
        export_graph(student, NUM_CLASSES, Unexportable(num_buckets=256))

    class Plain(PixelFeaturizer):
        export_spec = Featurizer.export_spec  # the base's: none

    with pytest.raises(LelpError, match="has no export spec"):
        export_graph(student, NUM_CLASSES, Plain())
