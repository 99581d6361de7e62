"""The published MentalBERT classifiers' path without torch: a tiny BertForSequenceClassification saved by
transformers, converted (CTranslate2 encoder + numpy head), gives transformers' label and probabilities on IMHI
explanations; `score --classifiers` reports label-explanation consistency, `eval --free --classifiers` labels free
answers with them; a classifier whose class count differs from its task's labels is one line."""

import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from mental_edge.convert.bert_ct2 import convert_bert_classifier
from support.cli import one_error_line, run
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from mental_edge.engine.ctranslate2 import SequenceClassifier
from mental_edge.prompting import load_tasks
from mental_edge.prompting.classifiers import classifier_labels

pytestmark = pytest.mark.slow  # torch: the reference

TOLERANCE = 1e-4  # probabilities, CTranslate2 float32 + numpy head against transformers float32 (measured ~1e-6)


def write_bert(folder, imhi_dir, num_labels: int, seed: int = 0):
    """A 2-layer BERT classifier (hidden 64) with a WordPiece vocabulary of IMHI words and characters, uncased."""
    words = Counter()
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fh:
        for row in list(csv.DictReader(fh))[:80]:
            words.update(re.findall(r"\w+|[^\w\s]", row["gpt-3.5-turbo"].lower()))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    vocab += [w for w, _ in words.most_common(400) if w not in vocab]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, num_labels=num_labels,
                        architectures=["BertForSequenceClassification"])  # fmt: skip
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # biases off zero; attention peaked enough that texts get different labels
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.05)
            elif name.startswith("bert.encoder") and "LayerNorm" not in name:
                param.normal_(0, 0.5)
            elif name.startswith(("bert.pooler", "classifier")):
                param.normal_(0, 0.5)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def texts(imhi_dir):
    with open(imhi_dir / "test_instruction" / "SAD.csv", newline="", encoding="utf-8") as fh:
        answers = [row["gpt-3.5-turbo"] for row in list(csv.DictReader(fh))[:10]]
    return [a.split("Reasoning:", 1)[1].strip() for a in answers] + [" ".join(answers * 4)]  # the last: > 512


def reference(folder, texts):
    tokenizer = BertTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=512)
    with torch.no_grad():
        return torch.softmax(model(**inputs).logits, dim=-1).numpy()


def test_converted_classifier_gives_transformers_labels_and_probabilities(imhi_dir, texts, tmp_path):
    folder = write_bert(tmp_path / "SAD", imhi_dir, num_labels=9)
    assert len(BertTokenizer.from_pretrained(folder)(texts[-1])["input_ids"]) > 512
    classifier = SequenceClassifier(convert_bert_classifier(folder, tmp_path / "ct2"), threads=2)
    got, want = classifier.probabilities(texts, batch_size=4), reference(folder, texts)
    assert np.max(np.abs(got - want)) < TOLERANCE
    assert list(got.argmax(axis=1)) == list(want.argmax(axis=1))
    assert len(set(want.argmax(axis=1))) > 1  # the texts are told apart


def test_published_label_orders_cover_each_task_once():
    taskset = load_tasks()
    for task in taskset:
        if task.language == "en":
            assert sorted(classifier_labels(task)) == sorted(task.labels)
    assert classifier_labels(taskset.task("swmh"))[0] == "depression"  # label_inference.py's order, not ours


@pytest.fixture(scope="module")
def data(imhi_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("imhi") / "test_instruction"
    root.mkdir()
    with open(imhi_dir / "test_instruction" / "DR.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:4]
    with open(root / "DR.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["query", "gpt-3.5-turbo"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, imhi_dir):
    from mental_edge.convert import convert_checkpoint
    from support.seq2seq_tiny import write_bart

    bart = write_bart(tmp_path_factory.mktemp("bart") / "bart", imhi_dir)
    return convert_checkpoint(bart, tmp_path_factory.mktemp("scorer") / "s", outtype="f32")


def test_score_reports_label_explanation_consistency(imhi_dir, data, scorer, tmp_path):
    classifiers = tmp_path / "classifiers"
    write_bert(classifiers / "DR", imhi_dir, num_labels=2)
    golds = [r["gpt-3.5-turbo"] for r in csv.DictReader(open(data / "DR.csv", newline="", encoding="utf-8"))]
    explanations = [g.split("Reasoning:", 1)[1].strip() for g in golds]
    records = tmp_path / "r.jsonl"
    with records.open("w") as fh:
        for i, text in enumerate(explanations, start=1):
            fh.write(json.dumps({"id": str(i), "task": "DR", "label": "yes" if i % 2 else "no", "probabilities": None,
                                 "explanation": text, "gold": "no", "flags": [], "run": {}}) + "\n")  # fmt: skip
    result = run("score", records, "--data", data / "DR.csv", "--scorer", scorer, "--classifiers", classifiers,
                 "-o", tmp_path / "s")  # fmt: skip
    assert result.exit_code == 0, result.output
    part = json.loads((tmp_path / "s.json").read_text())["explanations"]
    want = reference(classifiers / "DR", explanations).argmax(axis=1)
    labels = [("no", "yes")[k] for k in want]
    assert [r["explanation_label"] for r in part["rows"]["DR"]] == labels
    agree = np.mean([label == ("yes" if i % 2 else "no") for i, label in enumerate(labels, start=1)])
    assert part["tasks"]["DR"]["consistency"]["agreement"]["estimate"] == pytest.approx(agree)
    assert "Label-explanation consistency" in (tmp_path / "s.md").read_text()


def test_eval_free_labels_answers_with_the_classifier(smollm2_gguf, imhi_dir, data, tmp_path):
    classifiers = tmp_path / "classifiers"
    write_bert(classifiers / "DR", imhi_dir, num_labels=2, seed=3)
    stem = tmp_path / "free"
    result = run("eval", "--data", data / "DR.csv", "-m", smollm2_gguf, "--free", "--max-tokens", 16,
                 "--classifiers", classifiers, "--report", stem, "--threads", 2)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(stem.with_suffix(".json").read_text())["rows"]["DR"]
    assert all(r["pred"] in ("no", "yes") and set(r["probabilities"]) == {"no", "yes"} for r in rows)


def test_a_classifier_with_another_class_count_is_one_line(imhi_dir, data, scorer, tmp_path):
    classifiers = tmp_path / "classifiers"
    write_bert(classifiers / "DR", imhi_dir, num_labels=3)
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"id": "1", "task": "DR", "label": "no", "explanation": "it is fine",
                                   "gold": "no", "run": {}}) + "\n")  # fmt: skip
    result = run("score", records, "--data", data / "DR.csv", "--scorer", scorer, "--classifiers", classifiers,
                 "-o", tmp_path / "s")  # fmt: skip
    one_error_line(result, "classifiers/DR", "3 classes", "task DR has 2 labels")
    assert not list(tmp_path.glob("s.*"))
