"""BARTScore on CTranslate2 (no torch at run time) against BARTScore computed here with transformers.

The reference is neulab/BARTScore's definition: BART's tokenizer (truncation at 1,024 tokens), the model run with
`labels=` the framed reference, the score the mean log-probability of the reference's tokens. The ParaBank weights
(`bart_score.pth`) are a torch state dict: a `torch.save`d one must replace the weights without its pickle running.
"""

import csv
import os

import numpy as np
import pytest
import torch
from mental_edge.convert import ConversionError, convert_checkpoint
from support.seq2seq_tiny import write_bart
from transformers import BartForConditionalGeneration, BartTokenizer

from mental_edge.engine.ctranslate2 import SequenceScorer
from mental_edge.errors import MentalEdgeError

pytestmark = pytest.mark.slow  # torch: not in the fast tier

# float32 on both sides; the per-token log-probabilities agree to about 1e-6 (measured); a framing error (a token
# more or less in the mean, the decoder started elsewhere) moves the mean by 1e-3 or more on these pairs
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bart_dir(tmp_path_factory, imhi_dir):
    return write_bart(tmp_path_factory.mktemp("bart") / "tiny-bart", imhi_dir, positions=1024)


@pytest.fixture(scope="module")
def pairs(imhi_dir):
    """Explanations of real IMHI gold answers, each scored against another row's; the last pair's source runs
    past 1,024 tokens (and its target too)."""
    with open(imhi_dir / "test_instruction" / "SAD.csv", newline="", encoding="utf-8") as fh:
        answers = [row["gpt-3.5-turbo"] for row in list(csv.DictReader(fh))[:6]]
    refs = [a.split("Reasoning:", 1)[1].strip() for a in answers]
    sources, targets = refs[:5], [refs[5], *refs[:4]]
    long = " ".join(answers * 12)
    return [*sources, long], [*targets, long[:6000]]


def reference_scores(model, tokenizer, sources, targets) -> list[float]:
    out = []
    for source, target in zip(sources, targets):
        src = tokenizer([source], max_length=1024, truncation=True, return_tensors="pt")
        tgt = tokenizer([target], max_length=1024, truncation=True, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=src["input_ids"], attention_mask=src["attention_mask"], labels=tgt).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)[0].gather(1, tgt[0][:, None])
        out.append(float(log_probs.mean()))
    return out


def test_score_equals_transformers_bartscore(bart_dir, pairs, tmp_path):
    tokenizer = BartTokenizer.from_pretrained(bart_dir)
    assert len(tokenizer(pairs[0][-1])["input_ids"]) > 1024  # the truncation is exercised
    scorer = SequenceScorer(convert_checkpoint(bart_dir, tmp_path / "scorer", outtype="f32"), threads=2)
    got = scorer.score(*pairs, batch_size=4)
    model = BartForConditionalGeneration.from_pretrained(bart_dir).eval()
    want = reference_scores(model, tokenizer, *pairs)
    assert np.max(np.abs(np.array(got) - want)) < TOLERANCE
    assert np.ptp(want) > 10 * TOLERANCE  # the pairs tell scores apart at this tolerance


def test_state_dict_overrides_the_weights(bart_dir, pairs, tmp_path):
    """A state dict saved with torch.save (as bart_score.pth is) replaces the checkpoint's weights."""
    tuned = BartForConditionalGeneration.from_pretrained(bart_dir).eval()
    torch.manual_seed(7)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "layers.1" in name or "shared" in name:
                param.add_(torch.randn_like(param) * 0.3)
    pth = tmp_path / "bart_score.pth"
    torch.save(tuned.state_dict(), pth)
    folder = convert_checkpoint(bart_dir, tmp_path / "scorer", outtype="f32", state_dict=pth)
    got = SequenceScorer(folder, threads=2).score(*pairs)
    tokenizer = BartTokenizer.from_pretrained(bart_dir)
    want = reference_scores(tuned, tokenizer, *pairs)
    base = reference_scores(BartForConditionalGeneration.from_pretrained(bart_dir).eval(), tokenizer, *pairs)
    assert np.max(np.abs(np.array(got) - want)) < TOLERANCE
    assert np.max(np.abs(np.array(base) - want)) > 100 * TOLERANCE  # the override changed the scores


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_state_dict_that_would_run_code_is_refused_unrun(bart_dir, tmp_path):
    marker = tmp_path / "ran"
    pth = tmp_path / "bart_score.pth"
    state = BartForConditionalGeneration.from_pretrained(bart_dir).state_dict()
    state["model.shared.weight"] = _Payload(marker)
    torch.save(state, pth)
    with pytest.raises(ConversionError, match=r"bart_score\.pth: refused to load.*(posix|os)\.system"):
        convert_checkpoint(bart_dir, tmp_path / "scorer", outtype="f32", state_dict=pth)
    assert not marker.exists()
    assert not (tmp_path / "scorer").exists()


def test_a_state_dict_of_another_model_is_refused(bart_dir, tmp_path):
    pth = tmp_path / "other.pth"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 4)}, pth)
    with pytest.raises(ConversionError, match=r"other\.pth: tensor bert\.embeddings\.word_embeddings\.weight is not"):
        convert_checkpoint(bart_dir, tmp_path / "scorer", outtype="f32", state_dict=pth)
    assert not (tmp_path / "scorer").exists()


def test_a_folder_that_is_not_a_bart_scorer(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(MentalEdgeError, match="not a converted BART scorer"):
        SequenceScorer(tmp_path)
