"""Property-based tests (hypothesis): the user-file loaders and the featuriser on arbitrary strings."""

import json

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import HashingVectorizer

from lelp_lightning.data.featurizers import HashedNgramFeaturizer
from lelp_lightning.sources import TextFile, read_table

# any Unicode text a file can hold (no lone surrogates: UTF-8 cannot encode them), with the characters
# that break naive CSV handling drawn often
TRICKY = st.sampled_from(list(',"\'\n\r\t;\\ \x00\ufeff\u2028\ufffd')
                         + ["\r\n", '""', "NA", "null", "1e5", "é", "☃", "🙂"])
TEXT = st.lists(st.one_of(st.characters(codec="utf-8"), TRICKY), max_size=30).map("".join)
LABEL = st.one_of(st.sampled_from(["pos", "neg", "0", "1", "a b", "x,y", 'q"uote', "ünï"]),
                  st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1, max_size=8)
                  .filter(lambda s: s.strip() == s and s != ""))
ROWS = st.lists(st.tuples(TEXT, LABEL), min_size=1, max_size=25)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_csv(path, rows, text_last: bool, newline: str, quote_all: bool) -> None:
    """A well-formed (RFC 4180) file: fields with a comma, quote, CR or LF quoted, quotes doubled."""
    def field(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if quote_all or any(c in value for c in ',"\r\n') else value

    lines = [["label", "text"] if text_last else ["text", "label"]]
    lines += [[label, text] if text_last else [text, label] for text, label in rows]
    path.write_bytes("".join(",".join(map(field, line)) + newline for line in lines).encode("utf-8"))


@SETTINGS
@given(rows=ROWS, text_last=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]), quote_all=st.booleans())
def test_csv_round_trips_any_text_and_label(tmp_path, rows, text_last, newline, quote_all):
    path = tmp_path / "d.csv"
    write_csv(path, rows, text_last, newline, quote_all)
    frame = read_table(str(path), ["text", "label"])
    assert frame["text"].tolist() == [t for t, _ in rows]
    assert frame["label"].tolist() == [l for _, l in rows]


@SETTINGS
@given(rows=ROWS)
def test_jsonl_round_trips_any_text_and_label(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) for t, l in rows) + "\n",
                    encoding="utf-8")
    frame = read_table(str(path), ["text", "label"])
    assert frame["text"].tolist() == [t for t, _ in rows]
    assert frame["label"].tolist() == [l for _, l in rows]


@SETTINGS
@given(rows=st.lists(st.tuples(TEXT, st.sampled_from(["pos", "neg", "mid"])), min_size=1, max_size=20))
def test_split_column_rows_keep_their_text_and_label(tmp_path, rows):
    """With ``split_column`` every row lands in its split with its own text and class index."""
    parts = ["train", "val", "test"]
    frame = pd.DataFrame({"text": [t for t, _ in rows] + ["a", "b", "c", "d"],
                          "label": [l for _, l in rows] + ["pos", "neg", "pos", "pos"],
                          "part": [parts[i % 3] for i in range(len(rows))] + ["train", "train", "val", "test"]})
    if set(frame.loc[frame.part != "train", "label"]) - set(frame.loc[frame.part == "train", "label"]):
        frame.loc[len(frame)] = ["e", "mid", "train"]  # every class needs training rows (an error otherwise)
        frame.loc[len(frame)] = ["f", "neg", "train"]
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    source = TextFile(str(path), split_column="part")
    for part in parts:
        split, expected = source.split(part), frame[frame.part == part]
        assert split.texts == expected["text"].tolist()
        assert [source.class_names[c] for c in split.labels] == expected["label"].tolist()


@SETTINGS
@given(texts=st.lists(st.one_of(TEXT, st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])))),
                      min_size=1, max_size=12), max_ngram=st.integers(1, 3), data=st.data())
def test_featuriser_accepts_any_string_and_means_each_bag(texts, max_ngram, data):
    """Any str (lone surrogates too, as a custom source may produce them) gives a bag; never an exception.
    A batch gathers rows in any order, repeats included."""
    feats = HashedNgramFeaturizer(num_buckets=512, max_ngram=max_ngram)
    order = data.draw(st.lists(st.integers(0, len(texts) - 1), min_size=1, max_size=16))
    batch = feats.transform(texts).gather(np.array(order))
    ids, weights = batch["ids"].numpy(), batch["weights"].numpy()
    bounds = batch["offsets"].tolist() + [len(ids)]
    reference = HashingVectorizer(n_features=512, ngram_range=(1, max_ngram), alternate_sign=False, norm=None,
                                  token_pattern=r"(?u)\b\w+\b")
    assert ((ids >= 0) & (ids < 512)).all() and (weights > 0).all()
    for row, text in enumerate(texts[i] for i in order):
        w = weights[bounds[row]:bounds[row + 1]]
        tokens = reference.build_analyzer()(text)
        if tokens:  # a non-empty bag is a mean: weights sum to 1, in proportion to the n-gram counts
            assert abs(w.sum() - 1) < 1e-5
            counts = reference.transform([text]).toarray().ravel()
            dense = np.zeros(512)
            dense[ids[bounds[row]:bounds[row + 1]]] = w
            np.testing.assert_allclose(dense, counts / counts.sum(), rtol=1e-5, atol=1e-7)
        else:  # no word characters (e.g. "", "!!", "\n"): an empty bag, the student sees zeros
            assert len(w) == 0

