"""Real data sources: the sizes README "Data" states, deterministic stratified splits, user files."""

import json

import numpy as np
import pandas as pd
import pytest

from lelp_lightning.errors import LelpError
from lelp_lightning.sources import SPLITS, Newsgroups20, TextFile, Tweets


def all_rows(source):
    return {s: source.split(s) for s in SPLITS}


def test_tweets_binary_and_three_class_sizes_match_the_documented_dedup():
    binary = all_rows(Tweets(num_classes=2))
    labels = np.concatenate([s.labels for s in binary.values()])
    assert len(labels) == 22_812 and np.bincount(labels).tolist() == [15_978, 6_834]
    three = all_rows(Tweets(num_classes=3))
    assert sum(len(s) for s in three.values()) == 37_243
    assert len(binary["test"]) == pytest.approx(0.2 * 22_812, abs=1)


def test_splits_are_disjoint_stratified_and_deterministic():
    a, b = all_rows(Tweets(max_rows=1000, seed=3)), all_rows(Tweets(max_rows=1000, seed=3))
    ids = [set(a[s].row_ids.tolist()) for s in SPLITS]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for s in SPLITS:
        np.testing.assert_array_equal(a[s].row_ids, b[s].row_ids)
        assert a[s].fingerprint() == b[s].fingerprint()
    rates = [a[s].labels.mean() for s in SPLITS]
    assert max(rates) - min(rates) < 0.02
    assert Tweets(max_rows=1000, seed=4).split("train").fingerprint() != a["train"].fingerprint()


def test_newsgroups_binary_is_topic_index_mod_two_with_fine_labels():
    source = Newsgroups20(binary=True, max_train=400, val_size=100, max_test=200)
    train, test = source.split("train"), source.split("test")
    assert len(train) == 400 and len(source.split("val")) == 100 and len(test) == 200
    np.testing.assert_array_equal(train.labels, train.fine_labels % 2)
    assert set(np.unique(train.fine_labels)) == set(range(20))
    official = source._read("train")[0].map({t: i for i, t in enumerate(source._topics())}).to_numpy()
    expected = 400 * np.bincount(official) / len(official)
    assert np.abs(np.bincount(train.fine_labels) - expected).max() <= 1.5  # stratified by topic
    assert set(train.row_ids).isdisjoint(test.row_ids)
    full = Newsgroups20(binary=True)
    assert len(full.split("train")) + len(full.split("val")) == 11_293 and len(full.split("test")) == 7_528


def test_text_file_csv_and_jsonl_with_string_labels(tmp_path):
    rows = [{"review": f"text number {i} {'good' if i % 3 else 'bad'}", "stars": "pos" if i % 3 else "neg"}
            for i in range(60)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("d.csv", "d.jsonl"):
        source = TextFile(str(tmp_path / name), text_column="review", label_column="stars")
        assert source.class_names == ["neg", "pos"]
        total = sum(len(source.split(s)) for s in SPLITS)
        assert total == 60
        train = source.split("train")
        assert all(("good" in t) == (l == 1) for t, l in zip(train.texts, train.labels, strict=True))


def test_text_file_split_column_and_fingerprint_tracks_file_content(tmp_path):
    df = pd.DataFrame({"text": list("abcdefgh"), "label": [0, 1] * 4,
                       "part": ["train"] * 4 + ["val"] * 2 + ["test"] * 2})
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    source = TextFile(str(path), split_column="part")
    assert source.split("train").texts == list("abcd") and source.split("test").texts == list("gh")
    before = source.fingerprint()
    df.loc[0, "text"] = "z"
    df.to_csv(path, index=False)
    assert TextFile(str(path), split_column="part").fingerprint() != before


def test_text_file_fine_label_column(tmp_path):
    """Fine labels (strings or integers) become integer ids over the whole file; an empty one is -1 (unknown).
    Without the option the source has none, and its fingerprint is the one it had before the option existed."""
    path = tmp_path / "d.csv"
    rows = [(f"t{i}", "pos" if i % 2 else "neg", ["food", "film", ""][i % 3]) for i in range(30)]
    pd.DataFrame(rows, columns=["text", "label", "topic"]).to_csv(path, index=False)
    source = TextFile(str(path), fine_label_column="topic")
    frame = source.frame()
    for split in SPLITS:
        data = source.split(split)
        topics = frame["topic"].to_numpy()[data.row_ids]
        expected = [{"film": 0, "food": 1}.get(t, -1) for t in topics]
        assert data.fine_labels.tolist() == expected
    plain = TextFile(str(path))
    assert plain.split("train").fine_labels is None
    assert plain.fingerprint() != source.fingerprint() and "fine_label_column" not in plain.options()
    with pytest.raises(LelpError, match=r"has no column\(s\) \['genre'\]"):
        TextFile(str(path), fine_label_column="genre").frame()

@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_field_of_a_megabyte_is_read(tmp_path, suffix):
    """Python's csv module refuses a field over 131,072 characters by default; a 1 MB review is normal."""
    review = "great value, would buy again. " * (1_048_576 // 30 + 1)
    rows = [(review, "pos"), ("short", "neg")] * 5
    path = tmp_path / f"big{suffix}"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    frame = TextFile(str(path)).frame()
    assert len(frame) == 10 and frame["text"][0] == review and len(review) > 1_048_576

def test_csv_keeps_carriage_returns_inside_quoted_text_and_reads_crlf_files(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\r\n"line one\rline two",neg\r\nplain,pos\r\nthird,neg\r\n')
    frame = TextFile(str(path)).frame()
    assert frame["text"].tolist() == ["line one\rline two", "plain", "third"]
    assert frame["label"].tolist() == ["neg", "pos", "neg"]


@pytest.mark.parametrize(("content", "match"), [
    (None, "does not exist"),
    ("", "is empty"),
    ("text,other\na,b\n", r"no column\(s\) \['label'\]"),
    ("text,label\n", "no rows"),
    ("text,label\na,1\nb,\n", "empty 'label' label"),
])
def test_text_file_bad_input_says_what_is_wrong(tmp_path, content, match):
    path = tmp_path / "d.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LelpError, match=match):
        TextFile(str(path)).split("train")
