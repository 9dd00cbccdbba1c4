"""The data stage on real data: prefetch, normalize, metafeatures and bins, and every bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from metatune import bins, metafeatures, normalize, sources
from metatune.io import DataError
from metatune.tokenizers import UnknownTokenizer, get_tokenizer

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0}


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def prefetch_normalize(tmp_path, name, source, fmt="text", template="plain", fields=None):
    sources.prefetch(source, name, tmp_path / "raw", cache_dir=str(tmp_path / "cache"))
    dataset = normalize.DatasetFormat(name, fmt, template, fields or {})
    stats = normalize.normalize(tmp_path / "raw" / "records.jsonl", dataset, RATIOS, tmp_path / "data")
    return stats


# --- prefetch -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("generator", ["stdlib_code", "pydoc_topics", "arithmetic", "markov"])
def test_builtin_generators_are_deterministic(tmp_path, generator):
    source = {"kind": "builtin", "generator": generator, "options": {"n_docs": 30}, "max_total_bytes": 300_000}
    a = sources.prefetch(source, "x", tmp_path / "a")
    b = sources.prefetch(source, "x", tmp_path / "b")
    assert a == b and a.n_records > 0
    assert (tmp_path / "a" / "records.jsonl").read_bytes() == (tmp_path / "b" / "records.jsonl").read_bytes()
    assert a.n_bytes <= 300_000


def test_markov_temperature_controls_entropy(tmp_path):
    tok = get_tokenizer("bytes")
    entropy = {}
    for t in (0.3, 3.0):
        prefetch_normalize(tmp_path / str(t), "m",
                           {"kind": "builtin", "generator": "markov", "options": {"n_docs": 60, "temperature": t}})
        mf = metafeatures.compute(tmp_path / str(t) / "data" / "train.jsonl", tmp_path / str(t) / "data" / "stats.json",
                                  tok, 10**6)
        entropy[t] = mf["compression_ratio"]
    assert entropy[0.3] < entropy[3.0]  # concentrated transitions compress better


def test_cap_stops_early_and_cap_below_one_record_fails(tmp_path, shared):
    source = {"kind": "local", "paths": [str(shared / "tinyshakespeare" / "input.txt")], "sample_by": "paragraph",
              "max_total_bytes": 20_000}
    r = sources.prefetch(source, "shake", tmp_path / "raw")
    assert r.capped and 19_000 < r.n_bytes <= 20_000
    with pytest.raises(DataError, match=r"dataset shake: source.max_total_bytes=10 is smaller than the first record"):
        sources.prefetch({**source, "max_total_bytes": 10}, "shake", tmp_path / "raw2")


def test_max_records(tmp_path, shared):
    source = {"kind": "local", "paths": [str(shared / "mbpp" / "mbpp.jsonl")], "max_records": 7}
    assert sources.prefetch(source, "mbpp", tmp_path / "raw").n_records == 7


def test_hf_source_through_datasets_offline(tmp_path, shared):
    """The hub path with a datasets builder and local data_files, as tests point `hf` sources offline."""
    source = {"kind": "hf", "path": "json", "data_files": str(shared / "mbpp" / "mbpp.jsonl"), "split": "train"}
    stats = prefetch_normalize(tmp_path, "mbpp", source, "instruction", "mbpp")
    assert stats.n_raw == 974 and stats.n_kept == 974
    rec = read_jsonl(tmp_path / "data" / "train.jsonl")[0]
    assert set(rec) >= {"prompt", "completion", "tests", "task_id"}
    assert rec["tests"][0] in rec["prompt"]


def test_hf_hub_unreachable_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset code: loading 'no-such-org/no-such-dataset' from the hub failed"):
        sources.prefetch({"kind": "hf", "path": "no-such-org/no-such-dataset"}, "code", tmp_path / "raw")


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_local_tabular_formats(tmp_path, shared, suffix):
    df = pd.read_json(shared / "codealpaca" / "code_alpaca_2k.json").head(50)
    path = tmp_path / f"alpaca.{suffix}"
    {"csv": lambda: df.to_csv(path, index=False), "parquet": lambda: df.to_parquet(path),
     "jsonl": lambda: df.to_json(path, orient="records", lines=True)}[suffix]()
    stats = prefetch_normalize(tmp_path, "alp", {"kind": "local", "paths": [str(path)]}, "instruction", "alpaca")
    assert stats.n_raw == 50 and stats.n_kept >= 48


# --- normalize ----------------------------------------------------------------------------------------------

def test_codealpaca_alpaca_template(tmp_path, shared):
    src = {"kind": "local", "paths": [str(shared / "codealpaca" / "code_alpaca_2k.json")]}
    stats = prefetch_normalize(tmp_path, "alpaca", src, "instruction", "alpaca")
    assert stats.n_raw == 2017 and stats.n_kept + stats.n_empty + stats.n_duplicates == 2017
    assert (stats.n_train, stats.n_val, stats.n_test) == normalize.split_counts(stats.n_kept, RATIOS)
    records = read_jsonl(tmp_path / "data" / "train.jsonl")
    assert all(set(r) == {"prompt", "completion"} and r["prompt"] and r["completion"] for r in records)
    # input, where present, follows the instruction
    raw = [json.loads(line) for line in open(tmp_path / "raw" / "records.jsonl")]
    with_input = next(r for r in raw if r["input"].strip())
    all_out = records + read_jsonl(tmp_path / "data" / "val.jsonl") + read_jsonl(tmp_path / "data" / "test.jsonl")
    assert any(r["prompt"] == f"{with_input['instruction'].strip()}\n\n{with_input['input'].strip()}" for r in all_out)


def test_split_is_reproducible_exact_and_disjoint(tmp_path, shared):
    src = {"kind": "local", "paths": [str(shared / "tinyshakespeare" / "input.txt")], "sample_by": "paragraph"}
    stats = prefetch_normalize(tmp_path / "a", "shake", src)
    prefetch_normalize(tmp_path / "b", "shake", src)
    for split in ("train", "val", "test"):
        assert ((tmp_path / "a" / "data" / f"{split}.jsonl").read_bytes()
                == (tmp_path / "b" / "data" / f"{split}.jsonl").read_bytes())
    texts = {s: {r["text"] for r in read_jsonl(tmp_path / "a" / "data" / f"{s}.jsonl")}
             for s in ("train", "val", "test")}
    assert not (texts["train"] & texts["val"]) and not (texts["train"] & texts["test"])
    assert stats.n_duplicates > 0  # tinyshakespeare repeats short paragraphs ("All:" and friends)
    assert sum(len(t) for t in texts.values()) == stats.n_kept
    assert abs(stats.n_val - 0.1 * stats.n_kept) <= 1
    # another seed, another split
    other = normalize.normalize(tmp_path / "a" / "raw" / "records.jsonl",
                                normalize.DatasetFormat("shake", "text", "plain", {}),
                                {**RATIOS, "seed": 1}, tmp_path / "c")
    assert other.n_val == stats.n_val
    assert {r["text"] for r in read_jsonl(tmp_path / "c" / "val.jsonl")} != texts["val"]


def test_quijote_byte_order_mark_is_dropped(tmp_path, shared):
    src = {"kind": "local", "paths": [str(shared / "quijote" / "quijote.txt")], "sample_by": "paragraph"}
    prefetch_normalize(tmp_path, "quijote", src)
    for split in ("train", "val", "test"):
        assert not any(r["text"].startswith("\ufeff") for r in read_jsonl(tmp_path / "data" / f"{split}.jsonl"))


def test_field_mapping(tmp_path):
    raw = tmp_path / "r.jsonl"
    raw.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(10)))
    fmt = normalize.DatasetFormat("qa", "instruction", "plain", {"prompt": "question", "completion": "answer"})
    stats = normalize.normalize(raw, fmt, RATIOS, tmp_path / "out")
    assert stats.n_kept == 10
    assert read_jsonl(tmp_path / "out" / "val.jsonl")[0]["prompt"].startswith("q")


# --- bad input ----------------------------------------------------------------------------------------------

def test_missing_local_file_names_dataset_and_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset d: source file not found: .*nope.txt"):
        sources.prefetch({"kind": "local", "paths": [str(tmp_path / "nope.txt")]}, "d", tmp_path / "raw")


def test_invalid_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"dataset d: .*bad.jsonl:3: invalid JSON"):
        sources.prefetch({"kind": "local", "paths": [str(p)]}, "d", tmp_path / "raw")


def test_non_utf8_names_file(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 au lait\n\nsecond paragraph\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"dataset d: .*latin1.txt: not UTF-8"):
        sources.prefetch({"kind": "local", "paths": [str(p)]}, "d", tmp_path / "raw")


def test_non_utf8_raw_line_names_line(tmp_path):
    raw = tmp_path / "records.jsonl"
    raw.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"records.jsonl:2: not UTF-8"):
        normalize.normalize(raw, normalize.DatasetFormat("d", "text", "plain", {}), RATIOS, tmp_path / "out")


def test_missing_field_names_dataset_line_and_field(tmp_path, shared):
    src = {"kind": "local", "paths": [str(shared / "codealpaca" / "code_alpaca_2k.json")], "max_records": 20}
    sources.prefetch(src, "alp", tmp_path / "raw")
    fmt = normalize.DatasetFormat("alp", "text", "plain", {})  # alpaca records have no "text"
    with pytest.raises(DataError, match=r"dataset alp: .*records.jsonl:1: missing field 'text'"):
        normalize.normalize(tmp_path / "raw" / "records.jsonl", fmt, RATIOS, tmp_path / "out")


def test_empty_after_filtering_is_an_error_and_writes_nothing(tmp_path):
    raw = tmp_path / "records.jsonl"
    raw.write_text('{"text": "   "}\n{"text": "same"}\n{"text": "same"}\n')
    with pytest.raises(DataError, match=r"dataset d: 1 record\(s\) left after dropping 1 empty and 1 duplicate of 3"):
        normalize.normalize(raw, normalize.DatasetFormat("d", "text", "plain", {}), RATIOS, tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_wrong_field_type(tmp_path):
    raw = tmp_path / "records.jsonl"
    raw.write_text('{"text": ["a", "list"]}\n')
    with pytest.raises(DataError, match=r"records.jsonl:1: field 'text' must be text, got list"):
        normalize.normalize(raw, normalize.DatasetFormat("d", "text", "plain", {}), RATIOS, tmp_path / "out")


def test_unknown_tokenizer():
    with pytest.raises(UnknownTokenizer, match="tokenizer.name: unknown tokenizer 'sentencepiece'"):
        get_tokenizer("sentencepiece")
    with pytest.raises(UnknownTokenizer, match="tokenizer.name: cannot load 'hf:/no/such/tokenizer'"):
        get_tokenizer("hf:/no/such/tokenizer")


# --- tokenizers, bins, metafeatures -------------------------------------------------------------------------

def test_gpt2_offline_matches_known_ids(shared):
    for tok in (get_tokenizer("gpt2"),
                get_tokenizer("gpt2", bpe_file=str(shared / "gpt2_tokenizer" / "gpt2.tiktoken"))):
        assert tok.encode_batch(["hello world"]) == [[31373, 995]]
        assert tok.eot == 50256 and tok.vocab_size == 50257


@pytest.mark.parametrize("tokenizer", ["gpt2", "bytes"])
def test_bins_hold_every_document_then_eot(tmp_path, shared, tokenizer):
    src = {"kind": "local", "paths": [str(shared / "tinyshakespeare" / "input.txt")], "sample_by": "paragraph"}
    prefetch_normalize(tmp_path, "shake", src)
    tok = get_tokenizer(tokenizer)
    data = tmp_path / "data"
    meta = bins.build_bins({"train": data / "train.jsonl", "val": data / "val.jsonl"}, tmp_path / "bins", tok,
                           bins.BinSettings(workers=2, chunk_bytes=50_000), provenance={"source": "test"})
    assert meta["dtype"] == "uint16"
    train = np.memmap(tmp_path / "bins" / "train.bin", dtype=np.uint16, mode="r")
    assert len(train) == meta["splits"]["train"]["n_tokens"]
    docs = [r["text"] for r in read_jsonl(data / "train.jsonl")]
    expected = [t for ids in tok.encode_batch(docs) for t in (*ids, tok.eot)]
    assert train.tolist() == expected  # chunking and threads change nothing
    assert int((train == tok.eot).sum()) == len(docs) == meta["splits"]["train"]["n_docs"]
    assert json.loads((tmp_path / "bins" / "meta.json").read_text())["splits"]["val"]["n_tokens"] > 0


def test_bins_of_instruction_data_use_the_sft_format(tmp_path, shared):
    src = {"kind": "local", "paths": [str(shared / "codealpaca" / "code_alpaca_2k.json")], "max_records": 40}
    prefetch_normalize(tmp_path, "alp", src, "instruction", "alpaca")
    tok = get_tokenizer("bytes")
    bins.build_bins({"train": tmp_path / "data" / "train.jsonl"}, tmp_path / "bins", tok, bins.BinSettings())
    data = np.fromfile(tmp_path / "bins" / "train.bin", dtype=np.uint16)
    first = bytes(data[: list(data).index(256)].tolist()).decode()
    assert first.startswith("### Instruction:\n") and "\n\n### Response:\n" in first


def test_uint32_for_large_vocabularies():
    assert bins.token_dtype(50257) == np.uint16
    assert bins.token_dtype(128_256) == np.uint32


def test_metafeatures_are_deterministic_and_sensible(tmp_path, shared):
    tok = get_tokenizer("gpt2")
    out = {}
    for name, src, fmt, template in [
        ("code", {"kind": "builtin", "generator": "stdlib_code", "max_total_bytes": 400_000}, "text", "plain"),
        ("quijote", {"kind": "local", "paths": [str(shared / "quijote" / "quijote.txt")], "sample_by": "paragraph",
                     "max_total_bytes": 400_000}, "text", "plain"),
        ("alpaca", {"kind": "local", "paths": [str(shared / "codealpaca" / "code_alpaca_2k.json")]},
         "instruction", "alpaca"),
    ]:
        prefetch_normalize(tmp_path / name, name, src, fmt, template)
        args = (tmp_path / name / "data" / "train.jsonl", tmp_path / name / "data" / "stats.json", tok, 200_000)
        out[name] = metafeatures.compute(*args)
        assert metafeatures.compute(*args) == out[name]
    assert out["code"]["code_line_share"] > 0.4 > out["quijote"]["code_line_share"]
    assert out["quijote"]["non_ascii_share"] > 0.01 > out["code"]["non_ascii_share"]
    assert out["alpaca"]["is_instruction"] == 1.0 and out["alpaca"]["completion_len_mean"] > 0
    assert out["code"]["prompt_len_mean"] == 0.0
    for mf in out.values():
        assert 0 < mf["compression_ratio"] < 1 and 0 < mf["vocab_coverage"] < 1
        assert mf["doc_len_median"] <= mf["doc_len_p95"]
        assert mf["n_tokens"] > 0 and mf["token_entropy"] > 3


def test_empty_source_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="dataset d: .*(produced no records|empty)"):
        sources.prefetch({"kind": "local", "paths": [str(empty)]}, "d", tmp_path / "raw")


def test_one_enormous_line_is_tokenized_in_bounded_pieces(tmp_path, shared):
    """A 3 MB single-line document with a 64 kB chunk: tokenized piece by piece, the same tokens as whole."""
    text = (shared / "tinyshakespeare" / "input.txt").read_text().replace("\n", " ") * 3
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": text}) + "\n" + json.dumps({"text": "tail"}) + "\n")
    tok = get_tokenizer("gpt2")
    meta = bins.write_bin(tmp_path / "train.jsonl", tmp_path / "train.bin", tok, bins.BinSettings(chunk_bytes=64_000))
    data = np.fromfile(tmp_path / "train.bin", dtype=np.uint16).tolist()
    whole = tok.encode_batch([text, "tail"])
    assert meta["n_docs"] == 2 and data.count(tok.eot) == 2
    assert data == whole[0] + [tok.eot] + whole[1] + [tok.eot]
    assert max(len(p) for p in bins.split_long(text, 64_000)) <= 64_000
