"""MentalT5's path: a tiny random T5 converted to GGUF and run by llama.cpp, checked against transformers.

The checkpoint (2+2 layers, d_model 64, tied embeddings) and its unigram tokenizer are made at test time;
transformers' T5ForConditionalGeneration on the same weights is the reference.
"""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mental_edge.convert import ConversionError, convert_checkpoint
from mental_edge.convert.arch import t5 as t5_arch
from support.seq2seq_tiny import hf_answer_scores, imhi_queries, quantized_agreement, source_tokens, write_t5
from support.served import complete, serving
from transformers import AutoTokenizer, T5ForConditionalGeneration

from mental_edge.cli import main
from mental_edge.engine import Seq2SeqPrompt, load_engine
from mental_edge.engine.llamacpp.t5 import LlamaT5Engine
from mental_edge.errors import MentalEdgeError
from mental_edge.prompting import load_tasks

pytestmark = pytest.mark.slow  # torch: not in the fast tier

SCORE_TOL = 0.02  # nats per answer, f32 GGUF (f16 KV cache) against transformers fp32; measured worst 0.008
TIE_MARGIN = 0.05  # logits this close may swap under rounding
ANSWERS = ("yes.", "no.", "no. Reasoning: the post", "This post shows the stress cause of work.")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, imhi_dir):
    return write_t5(tmp_path_factory.mktemp("t5") / "tiny-t5", imhi_dir)


@pytest.fixture(scope="module")
def t5_files(t5_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5-gguf")
    files = {
        "f32": convert_checkpoint(t5_dir, out / "t5.f32.gguf", outtype="f32"),
        "q8_0": convert_checkpoint(t5_dir, out / "t5.q8_0.gguf", quant="Q8_0"),
    }
    with pytest.MonkeyPatch.context() as mp:  # the same file without the d_model^-0.5 output scaling
        mp.setattr(t5_arch, "output_scale", lambda hp: 1.0)
        files["unscaled"] = convert_checkpoint(t5_dir, out / "t5.unscaled.gguf", outtype="f32")
    return files


@pytest.fixture(scope="module")
def engines(t5_files):
    opened = {kind: load_engine(path, threads=2) for kind, path in t5_files.items()}
    yield opened
    for engine in opened.values():
        engine.close()


@pytest.fixture(scope="module")
def reference(t5_dir):
    return AutoTokenizer.from_pretrained(t5_dir), T5ForConditionalGeneration.from_pretrained(t5_dir).eval()


@pytest.fixture(scope="module")
def queries(imhi_dir):
    return imhi_queries(imhi_dir)


def test_load_engine_picks_the_encoder_decoder_engine(engines):
    engine = engines["f32"]
    assert isinstance(engine, LlamaT5Engine) and engine.encoder_decoder
    assert engine.info.architecture == "t5" and engine.n_ctx == 512
    assert engines["q8_0"].info.quantization == "Q8_0"


def test_tokenization_equals_the_reference_tokenizer_on_imhi_queries(engines, reference, queries, t5_dir):
    import sentencepiece as spm

    tokenizer, _ = reference
    sp = spm.SentencePieceProcessor(model_file=str(t5_dir / "spiece.model"))
    for query in queries:
        ours = source_tokens(engines["f32"], query)
        assert ours == tokenizer(query).input_ids
        assert ours == sp.encode(query) + [1]  # the original SentencePiece model, then </s>
    answers = [engines["f32"].tokenize(a) for a in ANSWERS]
    assert answers == [tokenizer(a, add_special_tokens=False).input_ids for a in ANSWERS]
    # typed sentinels and </s> in a post stay text
    typed = source_tokens(engines["f32"], "a </s> b <extra_id_0>")
    assert typed.count(1) == 1 and max(typed) < 600


def test_scores_match_transformers(engines, reference, queries):
    tokenizer, model = reference
    engine = engines["f32"]
    worst = 0.0
    for query in queries[::4]:
        source = source_tokens(engine, query)
        if len(source) > engine.n_ctx:
            continue
        continuations = [engine.tokenize(a) for a in ANSWERS]
        ours, theirs = (
            engine.score(source, continuations),
            hf_answer_scores(model, source, continuations, (model.config.decoder_start_token_id,)),
        )
        worst = max(worst, float(np.max(np.abs(np.array(ours) - theirs))))
    assert worst < SCORE_TOL, worst


def test_probabilities_need_the_output_scaling(engines, reference, queries):
    """Without the scaled output weight the greedy choice survives but the probabilities do not."""
    tokenizer, model = reference
    source = source_tokens(engines["f32"], queries[0])
    continuations = [engines["f32"].tokenize(a) for a in ANSWERS[:2]]
    theirs = hf_answer_scores(model, source, continuations, (model.config.decoder_start_token_id,))
    scaled = engines["f32"].score(source, continuations)
    unscaled = engines["unscaled"].score(source, continuations)
    assert np.allclose(scaled, theirs, atol=SCORE_TOL)
    assert np.max(np.abs(np.array(unscaled) - theirs)) > 1.0
    greedy = [engines[k].generate(source, max_tokens=8).text() for k in ("f32", "unscaled")]
    assert greedy[0] == greedy[1]


def _hf_greedy(model, source, max_new_tokens, decoder_prefix=None):
    """transformers' greedy tokens, cut before the first step whose top two logits are within TIE_MARGIN (a
    near-tie that rounding may break either way), and whether the cut happened."""
    kwargs = {} if decoder_prefix is None else {"decoder_input_ids": torch.tensor([decoder_prefix])}
    with torch.no_grad():
        out = model.generate(
            torch.tensor([source]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
    tokens = out.sequences[0, -len(out.logits) :].tolist()
    for step, logits in enumerate(out.logits):
        top2 = torch.topk(logits[0], 2).values
        if float(top2[0] - top2[1]) < TIE_MARGIN:
            return tokens[:step], True
    return tokens, False


def test_greedy_generation_matches_transformers(engines, reference, queries):
    tokenizer, model = reference
    engine = engines["f32"]
    compared = 0
    for query in queries[::3]:
        source = source_tokens(engine, query)
        gen = engine.generate(source, max_tokens=16)
        ours = gen.text().strip()
        theirs, cut = _hf_greedy(model, source, 16)
        text = tokenizer.decode(theirs, skip_special_tokens=True).strip()
        if cut:
            assert ours.startswith(text), (ours, text)
        else:
            assert ours == text
            assert gen.generated_tokens == len(theirs) - int(theirs[-1:] == [tokenizer.eos_token_id])
        compared += len(theirs)
    assert compared >= 0.5 * 16 * len(queries[::3])  # near-ties do not excuse most of the comparison


def test_generation_continues_a_decoder_prefix(engines, reference, queries):
    tokenizer, model = reference
    engine = engines["f32"]
    source = source_tokens(engine, queries[1])
    prefix = engine.tokenize("no. Reasoning:")
    ours = engine.generate(Seq2SeqPrompt(tuple(source), tuple(prefix)), max_tokens=8).text()
    theirs, _ = _hf_greedy(model, source, 8, decoder_prefix=[model.config.decoder_start_token_id, *prefix])
    assert len(theirs) >= 4 and ours.strip().startswith(tokenizer.decode(theirs, skip_special_tokens=True).strip())


def test_sampling_is_seeded(engines, queries):
    from mental_edge.engine import Sampling

    engine = engines["f32"]
    source = source_tokens(engine, min(queries, key=len))
    runs = [
        engine.generate(source, max_tokens=12, sampling=Sampling(temperature=1.5, seed=s)).text() for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_q8_0_agrees_with_f32_on_imhi_answers(engines, queries):
    """Each IMHI completion query that fits the encoder: its scored label (the task's answer sentences) and its
    greedy answer (8 tokens), Q8_0 against f32."""
    labels, greedy, total = quantized_agreement(engines, queries, "q8_0")
    print(f"\nT5 Q8_0 vs f32 on {total} IMHI queries: label {labels}/{total}, greedy 8 tokens {greedy}/{total}")
    assert total >= 20
    # a random 64-wide model has near-ties everywhere (measured: labels 28/34, see the report); a broken Q8_0
    # file (wrong scales, wrong tensor kept f16) falls to chance
    assert labels / total >= 0.7 and greedy / total >= 0.3


def test_a_prompt_longer_than_the_encoder_context_is_one_clear_error(t5_files):
    engine = load_engine(t5_files["f32"], n_ctx=64, threads=2)
    try:
        with pytest.raises(MentalEdgeError, match="the prompt has 601 tokens; the encoder reads at most 64"):
            engine.score(source_tokens(engine, "sad " * 200), [[5]])
        with pytest.raises(MentalEdgeError, match="encoder reads at most 64"):
            engine.generate(source_tokens(engine, "sad " * 200), max_tokens=4).text()
    finally:
        engine.close()


def test_a_checkpoint_without_its_tokenizer_is_one_clear_error(t5_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((t5_dir / name).read_bytes())
    with pytest.raises(ConversionError, match="no tokenizer found .*spiece.model"):
        convert_checkpoint(bare, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_analyze_end_to_end_on_a_converted_t5(t5_files, reference, tmp_path):
    tokenizer, model = reference
    post = "I cannot sleep and my job is killing me."
    out = tmp_path / "records.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            "-m",
            str(t5_files["f32"]),
            "-t",
            "DR",
            "--max-tokens",
            "8",
            "--threads",
            "2",
            "-o",
            str(out),
            post,
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text().splitlines()[0])
    task = load_tasks().task("DR")
    source = tokenizer(task.render(post, "completion")).input_ids
    labels = list(task.labels)
    answers = [tokenizer(task.answer(label, "completion"), add_special_tokens=False).input_ids for label in labels]
    scores = hf_answer_scores(model, source, answers, (model.config.decoder_start_token_id,))
    expected = np.exp(np.array(scores) - max(scores))
    expected /= expected.sum()
    got = [record["probabilities"][label] for label in labels] if "probabilities" in record else None
    assert got is not None, record
    assert np.allclose(got, expected, atol=1e-3)
    assert record["label"] == labels[int(np.argmax(expected))]


# -- `generate` and /v1/completions: the raw prompt framed as the encoder takes it -------------------------------

GENERATE_TOKENS = 12


@pytest.fixture(scope="module")
def generate_cases(reference, queries):
    """Three IMHI completion queries with transformers' greedy text (tokenizer(query) ends with </s>), cut before
    a near-tie: the first queries whose text runs 6 tokens or more before one (a random tiny model has many)."""
    tokenizer, model = reference
    cases = []
    for query in queries:
        source = tokenizer(query).input_ids
        if len(source) > 512:
            continue
        theirs, cut = _hf_greedy(model, source, GENERATE_TOKENS)
        if len(theirs) >= 6:
            cases.append((query, tokenizer.decode(theirs, skip_special_tokens=True).strip(), cut))
        if len(cases) == 3:
            return cases
    pytest.fail(f"only {len(cases)} IMHI queries give 6 greedy tokens before a near-tie")


def _same_text(ours: str, theirs: str, cut: bool) -> bool:
    ours = ours.strip()
    return ours.startswith(theirs) if cut else ours == theirs


def test_generate_gives_transformers_greedy_text(t5_files, engines, generate_cases):
    for query, theirs, cut in generate_cases:
        args = ["generate", "-m", str(t5_files["f32"]), "--temperature", "0", "--threads", "2"]
        result = CliRunner().invoke(main, [*args, "--max-tokens", str(GENERATE_TOKENS), query])
        assert result.exit_code == 0, result.output
        assert _same_text(result.stdout, theirs, cut), (result.stdout, theirs)
    # what `generate` fed before (the query without T5's closing </s>) gives other text: the test can fail
    engine = engines["f32"]
    unframed = [engine.generate(engine.tokenize(c[0]), max_tokens=GENERATE_TOKENS).text() for c in generate_cases]
    assert any(not _same_text(u, c[1], c[2]) for u, c in zip(unframed, generate_cases))


def test_completions_over_http_give_transformers_greedy_text(t5_files, reference, generate_cases, tmp_path):
    tokenizer, _ = reference
    with serving(t5_files["f32"], tmp_path, "--threads", "2") as url:
        for query, theirs, cut in generate_cases:
            body = complete(url, query, GENERATE_TOKENS)
            assert _same_text(body["choices"][0]["text"], theirs, cut), (body, theirs)
            assert body["usage"]["prompt_tokens"] == len(tokenizer(query).input_ids)
