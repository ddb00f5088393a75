"""The fine-tuned teacher: trained once on the labeled rows, cached, resumed after an interruption, linear at the
end."""

import numpy as np
import pytest
from helpers import save_tiny_bert, tiny_tweets

from lelp_lightning.cache import CachePlan, TeacherCache
from lelp_lightning.teachers import FineTunedClassifierTeacher, finetuned


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny randomly initialised BERT with MiniLM's tokenizer, saved as a local base checkpoint."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def teacher(base, **kwargs):
    return FineTunedClassifierTeacher(base=base, epochs=6, lr=1e-2, warmup=0.0, train_batch_size=16, max_length=32,
                                      seed=0, **kwargs)


def test_fine_tuned_teacher_learns_is_cached_and_its_embedding_feeds_its_final_layer(tiny_base, tmp_path, monkeypatch):
    source = tiny_tweets()
    plan = CachePlan(TeacherCache(tmp_path), teacher(tiny_base), source)
    plan.build(progress=False)
    entries = plan.open()  # refuses a cache whose W·embedding + b is not its logits
    train = entries["train"]
    majority = np.bincount(np.asarray(train.label)).max() / len(train)
    assert (np.asarray(train.logits).argmax(1) == np.asarray(train.label)).mean() > majority + 0.1  # it learned
    assert len(list(tmp_path.glob("finetuned-*/config.json"))) == 1 and not list(tmp_path.glob("*.partial"))
    monkeypatch.setattr(FineTunedClassifierTeacher, "_fine_tune", lambda *a: pytest.fail("fine-tuned again"))
    again = teacher(tiny_base)
    again.fit(source, TeacherCache(tmp_path))
    np.testing.assert_allclose(again.encode(source.split("test").texts[:8])[1], entries["test"].logits[:8],
                               atol=1e-4)
    assert teacher(tiny_base, representation_layer=0).fingerprint() == again.fingerprint()
    assert FineTunedClassifierTeacher(base=tiny_base, epochs=3).fingerprint() != again.fingerprint()


def test_an_interrupted_fine_tuning_resumes_after_its_last_epoch_and_ends_where_a_straight_run_does(tiny_base,
                                                                                                  tmp_path,
                                                                                                  monkeypatch):
    source = tiny_tweets()
    straight = teacher(tiny_base)
    straight.fit(source, TeacherCache(tmp_path / "straight"))
    original = finetuned.log.info

    def interrupt(message, *args):
        original(message, *args)
        if message.startswith("fine-tuning") and args[1] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(finetuned.log, "info", interrupt)
    with pytest.raises(KeyboardInterrupt):
        teacher(tiny_base).fit(source, TeacherCache(tmp_path / "resumed"))
    assert list((tmp_path / "resumed").glob("*.partial/state.pt")) and not list((tmp_path / "resumed").glob(
        "finetuned-*/config.json"))
    monkeypatch.setattr(finetuned.log, "info", original)
    epochs = []
    monkeypatch.setattr(finetuned.log, "info", lambda message, *args: epochs.append(args[1])
                        if message.startswith("fine-tuning") else None)
    resumed = teacher(tiny_base)
    resumed.fit(source, TeacherCache(tmp_path / "resumed"))
    assert epochs == [4, 5, 6]  # the first three epochs are not trained again
    texts = source.split("test").texts[:16]
    np.testing.assert_allclose(resumed.encode(texts)[1], straight.encode(texts)[1], atol=1e-5)
