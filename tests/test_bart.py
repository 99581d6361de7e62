"""MentalBART's path: a tiny random BART converted to a CTranslate2 folder (no torch in the converter) and run
by CTranslate2, checked against transformers' BartForConditionalGeneration on the same weights."""

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mental_edge.convert import ConversionError, convert_checkpoint
from support.seq2seq_tiny import hf_answer_scores, imhi_queries, quantized_agreement, source_tokens, write_bart
from support.served import complete, serving
from transformers import BartForConditionalGeneration, BartTokenizer, GenerationConfig

from mental_edge.cli import main
from mental_edge.engine import Sampling, Seq2SeqPrompt, load_engine
from mental_edge.engine.ctranslate2 import CT2Engine
from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import load_tasks

pytestmark = pytest.mark.slow  # torch: not in the fast tier

SCORE_TOL = 1e-3  # nats per answer, CTranslate2 float32 against transformers fp32 (measured worst: 4e-6)
TIE_MARGIN = 0.01  # logits this close may swap under rounding
ANSWERS = ("yes.", "no.", "no. Reasoning: the post", "This post shows the stress cause of work.")
START, BOS, EOS = 2, 0, 2  # decoder start </s>, then <s>


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory, imhi_dir):
    return write_bart(tmp_path_factory.mktemp("bart") / "tiny-bart", imhi_dir)


@pytest.fixture(scope="module")
def folders(bart_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bart-ct2")
    return {kind: convert_checkpoint(bart_dir, out / kind, outtype=kind) for kind in ("f32", "int8")}


@pytest.fixture(scope="module")
def engines(folders):
    return {kind: load_engine(path, threads=2) for kind, path in folders.items()}


@pytest.fixture(scope="module")
def reference(bart_dir):
    return BartTokenizer.from_pretrained(bart_dir), BartForConditionalGeneration.from_pretrained(bart_dir).eval()


@pytest.fixture(scope="module")
def queries(imhi_dir):
    return imhi_queries(imhi_dir)


def _hf_greedy(model, source, max_new_tokens, prefix=()):
    """transformers' plain greedy tokens (the checkpoint's beam-search defaults overridden), cut before the
    first near-tie, and whether it was cut."""
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=EOS,
        pad_token_id=1,
        decoder_start_token_id=START,
        output_logits=True,
        return_dict_in_generate=True,
    )
    model.generation_config = config  # unset fields would otherwise come from the checkpoint's defaults
    start = torch.tensor([[START, BOS, *prefix]])
    with torch.no_grad():
        out = model.generate(torch.tensor([source]), decoder_input_ids=start, generation_config=config)
    tokens = out.sequences[0, start.shape[1] :].tolist()
    for step, logits in enumerate(out.logits):
        top2 = torch.topk(logits[0], 2).values
        if float(top2[0] - top2[1]) < TIE_MARGIN:
            return tokens[:step], True
    return tokens, False


def test_the_folder_is_a_ctranslate2_model_the_store_and_load_engine_know(folders, engines):
    from mental_edge.store import describe

    info = json.loads((folders["int8"] / "mental_edge.json").read_text())
    assert info["architecture"] == "bart" and info["weights"] == "int8"
    assert describe(folders["int8"], "tiny", source="here").architecture == "ctranslate2"
    engine = engines["int8"]
    assert isinstance(engine, CT2Engine) and engine.encoder_decoder
    assert engine.info.architecture == "bart" and engine.info.quantization == "INT8"
    assert engine.settings["compute_type"].startswith("int8")
    assert engines["f32"].settings["compute_type"] == "float32"


def test_tokenization_equals_the_reference_tokenizer_on_imhi_queries(engines, reference, queries):
    tokenizer, _ = reference
    engine = engines["f32"]
    for query in queries:
        ours = source_tokens(engine, query)
        assert ours == tokenizer(query).input_ids
        assert engine.token_text(ours[-2]) == "Ġ"  # the completion prompt's trailing space is kept
    assert [engine.tokenize(a) for a in ANSWERS] == [tokenizer(a, add_special_tokens=False).input_ids for a in ANSWERS]
    typed = source_tokens(engine, "a </s> b <s>")
    assert typed.count(EOS) == 1 and typed.count(BOS) == 1  # only the frame's own


def test_scores_match_transformers(engines, reference, queries):
    _, model = reference
    engine = engines["f32"]
    worst = 0.0
    for query in queries[::4]:
        source = source_tokens(engine, query)
        if len(source) > engine.n_ctx:
            continue
        continuations = [engine.tokenize(a) for a in ANSWERS]
        ours, theirs = engine.score(source, continuations), hf_answer_scores(model, source, continuations, (START, BOS))
        worst = max(worst, float(np.max(np.abs(np.array(ours) - theirs))))
    assert worst < SCORE_TOL, worst


def test_greedy_generation_is_plain_greedy_and_matches_transformers(engines, reference, queries):
    tokenizer, model = reference
    engine = engines["f32"]
    compared = checked = 0
    for query in queries[::3]:
        source = source_tokens(engine, query)
        if len(source) > engine.n_ctx:
            continue
        gen = engine.generate(source, max_tokens=16)
        ours = gen.text()
        theirs, cut = _hf_greedy(model, source, 16)
        text = tokenizer.decode(theirs, skip_special_tokens=True)
        assert ours.startswith(text) if cut else ours == text, (ours, text)
        compared += len(theirs)
        checked += 1
    assert compared >= 0.5 * 16 * checked


def test_generation_continues_a_decoder_prefix(engines, reference, queries):
    tokenizer, model = reference
    engine = engines["f32"]
    compared = 0
    for query, prefix in zip(sorted(queries, key=len)[:6], [engine.tokenize(a) for a in ANSWERS * 2]):
        source = source_tokens(engine, query)
        ours = engine.generate(Seq2SeqPrompt(tuple(source), tuple(prefix)), max_tokens=8).text()
        theirs, _ = _hf_greedy(model, source, 8, prefix)
        assert ours.startswith(tokenizer.decode(theirs, skip_special_tokens=True))
        compared += len(theirs)
    assert compared >= 16


def test_sampling_follows_the_seed_of_an_engines_first_sampled_request(folders, queries):
    """CTranslate2 seeds its worker thread once: fresh engines with one seed sample alike, another seed differs."""
    runs = []
    for seed in (1, 1, 2):
        engine = load_engine(folders["f32"], threads=2)
        source = source_tokens(engine, min(queries, key=len))
        runs.append(engine.generate(source, max_tokens=12, sampling=Sampling(temperature=1.5, seed=seed)).text())
        engine.close()
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_int8_agrees_with_f32_on_imhi_answers(engines, queries):
    labels, greedy, total = quantized_agreement(engines, queries, "int8")
    print(f"\nBART int8 vs f32 on {total} IMHI queries: label {labels}/{total}, greedy 8 tokens {greedy}/{total}")
    assert total >= 20
    # a random 64-wide model has near-ties everywhere (see the report for the measured rates)
    assert labels / total >= 0.7 and greedy / total >= 0.3


def test_a_prompt_longer_than_the_encoder_context_is_one_clear_error(folders):
    engine = load_engine(folders["f32"], n_ctx=64, threads=2)
    source = source_tokens(engine, "sad " * 200)
    with pytest.raises(MentalEdgeError, match=f"the prompt has {len(source)} tokens; the encoder reads at most 64"):
        engine.score(source, [[5]])
    with pytest.raises(MentalEdgeError, match="encoder reads at most 64"):
        engine.generate(source, max_tokens=4).text()


def test_a_checkpoint_without_its_tokenizer_is_one_clear_error(bart_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((bart_dir / name).read_bytes())
    with pytest.raises(ConversionError, match="no tokenizer found .*vocab.json"):
        convert_checkpoint(bare, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_ctranslate2_installed_each_path_says_so(bart_dir, folders, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # makes `import ctranslate2` raise ImportError
    with pytest.raises(ConversionError, match=r"CTranslate2 is not installed; .*pip install 'mental-edge\[bart\]'"):
        convert_checkpoint(bart_dir, tmp_path / "out")
    with pytest.raises(MentalEdgeError, match="CTranslate2 is not installed"):
        load_engine(folders["f32"])
    result = CliRunner().invoke(main, ["analyze", "-m", str(folders["f32"]), "-t", "DR", "I am sad."])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: CTranslate2 is not installed")


def test_convert_command_writes_int8_by_default_and_refuses_a_quant(bart_dir, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(bart_dir), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m" / "mental_edge.json").read_text())["weights"] == "int8"
    result = CliRunner().invoke(main, ["convert", str(bart_dir), "-o", str(tmp_path / "q"), "--quant", "Q8_0"])
    assert result.exit_code == 1 and "Error: BART becomes a CTranslate2 folder" in result.output
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint(bart_dir, tmp_path / "m")


def test_analyze_end_to_end_on_a_converted_bart(folders, reference, tmp_path):
    tokenizer, model = reference
    post = "I cannot sleep and my job is killing me."
    out = tmp_path / "records.jsonl"
    result = CliRunner().invoke(
        main,
        ["analyze", "-m", str(folders["f32"]), "-t", "DR", "--max-tokens", "8", "--threads", "2", "-o", str(out), post],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text().splitlines()[0])
    task = load_tasks().task("DR")
    source = tokenizer(task.render(post, "completion")).input_ids
    labels = list(task.labels)
    answers = [tokenizer(task.answer(label, "completion"), add_special_tokens=False).input_ids for label in labels]
    scores = hf_answer_scores(model, source, answers, (START, BOS))
    expected = np.exp(np.array(scores) - max(scores))
    expected /= expected.sum()
    assert np.allclose([record["probabilities"][label] for label in labels], expected, atol=1e-3), record
    assert record["label"] == labels[int(np.argmax(expected))]


# -- `generate` and /v1/completions: the raw prompt framed as the encoder takes it (<s> ... </s>) ----------------

GENERATE_TOKENS = 12


@pytest.fixture(scope="module")
def generate_cases(reference, queries):
    """Three IMHI completion queries with transformers' plain greedy text (the encoder reads tokenizer(query):
    <s> ... </s>; the decoder starts </s> <s>), cut before a near-tie: the first whose text runs 6 tokens or more."""
    tokenizer, model = reference
    cases = []
    for query in queries:
        source = tokenizer(query).input_ids
        if len(source) > 512:
            continue
        theirs, cut = _hf_greedy(model, source, GENERATE_TOKENS)
        if len(theirs) >= 6:
            cases.append((query, tokenizer.decode(theirs, skip_special_tokens=True), cut))
        if len(cases) == 3:
            return cases
    pytest.fail(f"only {len(cases)} IMHI queries give 6 greedy tokens before a near-tie")


def _same_text(ours: str, theirs: str, cut: bool) -> bool:
    return ours.startswith(theirs) if cut else ours == theirs


def test_generate_gives_transformers_greedy_text(folders, generate_cases):
    for query, theirs, cut in generate_cases:
        args = ["generate", "-m", str(folders["f32"]), "--temperature", "0", "--threads", "2"]
        result = CliRunner().invoke(main, [*args, "--max-tokens", str(GENERATE_TOKENS), query])
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("\n") and _same_text(result.stdout[:-1], theirs, cut), (result.stdout, theirs)


def test_completions_over_http_give_transformers_greedy_text(folders, reference, generate_cases, tmp_path):
    tokenizer, _ = reference
    with serving(folders["f32"], tmp_path, "--threads", "2") as url:
        for query, theirs, cut in generate_cases:
            body = complete(url, query, GENERATE_TOKENS)
            assert _same_text(body["choices"][0]["text"], theirs, cut), (body, theirs)
            assert body["usage"]["prompt_tokens"] == len(tokenizer(query).input_ids)
