"""Prompt-lookup drafting for greedy explanations (issue #12 item 6), measured against plain one-token steps.

After each accepted token the last n generated tokens (n = 3, else 2) are looked up earlier in the prompt and the
answer so far; the k tokens that followed their latest earlier occurrence become a draft. The current token and
the draft are decoded in one batch with logits on every row, each row's greedy token taken by the engine's own
greedy sampler, drafted tokens accepted while they equal it, and the cells of the rejected rows dropped. A token
accepted past max_tokens, an end token or a stop string is never emitted, and the cache is left holding what the
plain loop leaves. Built here on top of the engine's batch interface (`decode_rows`, `drop_cells`), on the
one-at-a-time path (`--sequential`): `DraftingEngine` replaces the generation loop of greedy requests only.

Per model and per setting (the engine's fast default, and --exact): the same analysis (label scored, then an
explanation of at most --max-tokens) with drafting off and on, side by side in one process, the better of
--rounds rounds each; the ratio; drafted tokens accepted / proposed; tokens per decode; and whether every record
(label, probabilities, explanation) is equal. Explanations that differ are told by their first differing token.

- smollm2: SmolLM2-135M-Instruct Q4_1, real weights, real explanations of IMHI DR posts.
- 1b: the synthetic 1B shape of benchmarks/analysis_throughput.py (random weights: they rarely copy the post).

Measured here (2026-12-02, 2 cores, 2 threads): not kept in the engine. A decode with logits on every row costs
nearly a full step per row on this CPU (SmolLM2: 1 row 10-12 ms, 2 rows 20-22, 9 rows 60-74; the 1B shape: 37, 58-77,
165-183), so a verify step pays only when most drafts are accepted. SmolLM2, 12 DR posts, 96 tokens: analysis
explanations (128 tokens in all) 0.82-0.86x with drafting on, and one record of 12 changed (a draft batch's logits
differ from one-token steps' in the fast default: post 8 no longer ends after 7 tokens); chat answers (891 tokens)
0.86-0.92x, 6 of 12 records changed. With --exact every record was equal (12 of 12 both ways) but the gain at most
+5.7% (chat, k=4). The 1B shape (random weights fall into loops the 2-grams catch: 0.63-0.89 accepted), 4 posts:
48 tokens +3.6% (k=2) / +9.6% (k=8), 128 tokens +2.6% with 1 of 4 records changed, --exact -0.2% with 4 of 4 equal.

    python benchmarks/prompt_lookup.py [--model smollm2|1b|both] [--posts N] [--max-tokens N] [--draft K]
        [--ngram N] [--threads N] [--rounds N] [--exact-too]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator, Sequence

from bench_common import imhi_posts, load_line, smollm2

from mental_edge.analysis import Analyzer
from mental_edge.engine.base import Generation, Sampling
from mental_edge.engine.llamacpp.decoder import LlamaEngine
from mental_edge.engine.text import StopText
from mental_edge.prompting import load_tasks
from mental_edge.prompting.chat_format import Message, chat_format_for

# -- the n-gram lookup ------------------------------------------------------------------------------------------


def propose(
    history: Sequence[int],
    k: int,
    ngram: int = 3,
    min_ngram: int = 2,
    is_end: Callable[[int], bool] = lambda t: False,
) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of history's last n tokens (n from `ngram` down
    to `min_ngram`), cut before any end token; [] when none occurs."""
    if k <= 0:
        return []
    size = len(history)
    for n in range(ngram, min_ngram - 1, -1):
        if size <= n:
            continue
        key = list(history[size - n :])
        last = key[-1]
        for end in range(size - 2, n - 2, -1):  # history[end] closes a candidate occurrence
            if history[end] == last and list(history[end - n + 1 : end + 1]) == key:
                draft = []
                for tok in history[end + 1 : end + 1 + k]:
                    if is_end(tok):
                        break
                    draft.append(tok)
                return draft
    return []


def accepted(draft: Sequence[int], greedy: Sequence[int]) -> int:
    """Drafted tokens accepted: greedy[i] is the greedy token after row i (the current token, then draft[:i])."""
    a = 0
    while a < len(draft) and draft[a] == greedy[a]:
        a += 1
    return a


# -- the engine with drafting ---------------------------------------------------------------------------------


class DraftingEngine(LlamaEngine):
    """LlamaEngine whose greedy generation (no grammar, logprobs or penalties) verifies prompt-lookup drafts."""

    draft = 8  # k: drafted tokens at most per step (0: off, the engine's own loop)
    ngram = 3
    proposed = accepted_total = steps = generated = 0

    def _answer(self, max_tokens, sampling: Sampling, stop, gen: Generation) -> Iterator[str]:
        try:
            yield from self._answer_drafting(max_tokens, sampling, stop, gen)
        finally:
            self.generated += gen.generated_tokens

    def _answer_drafting(self, max_tokens, sampling: Sampling, stop, gen: Generation) -> Iterator[str]:
        plain = sampling.grammar is not None or sampling.logprobs is not None
        plain = plain or sampling.frequency_penalty or sampling.presence_penalty or not sampling.greedy
        if plain or self.draft <= 0:
            yield from super()._answer(max_tokens, sampling, stop, gen)
            return
        sampler = self.new_sampler(sampling)
        text = StopText(stop)
        gen.finish_reason = "length"
        try:
            token = sampler.sample(self._last)  # the greedy token after what sequence 0 holds, not yet in it
            while gen.generated_tokens < max_tokens:
                pos = len(self._cached)
                if pos >= self.n_ctx:
                    gen.finish_reason = "context"
                    break
                if self.is_end(token):
                    gen.finish_reason = "stop"
                    break
                room = min(self.draft, max_tokens - gen.generated_tokens - 1, self.n_ctx - pos - 1)
                draft = propose([*self._cached, token], room, self.ngram, is_end=self.is_end) if room > 0 else []
                rows = [token, *draft]
                try:
                    self.decode_rows([(t, pos + i, 0, True) for i, t in enumerate(rows)])
                except BaseException:
                    self._forget()
                    raise
                greedy = [sampler.sample(i) for i in range(len(rows))]
                a = accepted(draft, greedy)
                self.proposed += len(draft)
                self.accepted_total += a
                self.steps += 1
                if a < len(draft):
                    self.drop_cells(0, pos + 1 + a)
                self._cached.extend(rows[: 1 + a])
                self._last = a
                for i, t in enumerate(rows[: 1 + a]):
                    gen.generated_tokens += 1
                    out = text.feed(self.token_bytes(t))
                    if out:
                        yield out
                    if text.stopped:  # the plain loop would hold the tokens up to this one
                        self.drop_cells(0, pos + 1 + i)
                        del self._cached[pos + 1 + i :]
                        gen.finish_reason = "stop"
                        return
                token = greedy[a]
            rest = text.flush()
            if rest:
                yield rest
        finally:
            sampler.close()


# -- the runs -----------------------------------------------------------------------------------------------------


CHAT_QUESTION = "Does the poster of this post suffer from depression? Explain why, quoting the post."


def run_posts(engine: DraftingEngine, posts, task, max_tokens: int, kind: str) -> tuple[float, list[tuple]]:
    """Seconds and one record per post: (label, probabilities, explanation) of the DR analysis ("analysis"), or
    the text of a chat answer about the post ("chat": the model's chat template, the post then CHAT_QUESTION)."""
    start = time.perf_counter()
    if kind == "analysis":
        analyzer = Analyzer(engine, max_tokens=max_tokens)
        items = ((i, p, [task]) for i, p in enumerate(posts))
        records = [(r.label, r.probabilities, r.explanation) for _, rs in analyzer.analyze_stream(items) for r in rs]
    else:
        chat = chat_format_for(engine)
        records = []
        for post in posts:
            prompt = engine.tokenize_segments(
                chat.segments([Message("user", f"{post}\n\n{CHAT_QUESTION}")]), add_bos=True
            )
            gen = engine.generate(prompt, max_tokens=max_tokens)
            records.append((None, None, "".join(gen)))
    return time.perf_counter() - start, records


def decode_costs(engine: LlamaEngine, widths=(1, 2, 3, 5, 9), cells: int = 500, rounds: int = 9) -> str:
    """ms for one decode of `widths` rows of sequence 0 with logits on every row (a verify step), after `cells`
    cells of prompt: the median of `rounds`. The cache is left empty."""
    prompt = [(i * 37 + 11) % 20000 + 100 for i in range(cells + max(widths) + rounds)]
    engine.clear_cache()
    engine.decode_rows([(t, i, 0, False) for i, t in enumerate(prompt[:cells])][: engine.n_batch])
    cells = min(cells, engine.n_batch)
    parts = []
    for m in widths:
        times = []
        for r in range(rounds):
            rows = [(prompt[cells + r + j], cells + j, 0, True) for j in range(m)]
            start = time.perf_counter()
            engine.decode_rows(rows)
            times.append(time.perf_counter() - start)
            engine.drop_cells(0, cells)
        parts.append(f"{m} rows {1000 * sorted(times)[rounds // 2]:.1f} ms")
    engine.clear_cache()
    return f"  a decode with logits on every row, after {cells} cells: " + ", ".join(parts)


def first_difference(engine, a: str, b: str) -> str:
    ta, tb = engine.tokenize(a or ""), engine.tokenize(b or "")
    i = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    there, here = engine.detokenize(ta[i : i + 3]), engine.detokenize(tb[i : i + 3])
    return f"token {i} of {len(ta)}/{len(tb)}: {there!r} vs {here!r}"


def bench(name: str, gguf, args, exact: bool, kind: str) -> None:
    task = load_tasks().task("DR")
    posts = imhi_posts("DR", args.posts)
    engine = DraftingEngine(gguf, threads=args.threads, slots=1, n_ctx=2048, exact=exact)
    engine.ngram = args.ngram
    what = "explanations of the DR analysis" if kind == "analysis" else "chat answers"
    print(
        f"\n== {name} {kind}{' --exact' if exact else ''}: {gguf.name}, {len(posts)} DR posts, {what} of at most "
        f"{args.max_tokens} tokens, --sequential, {args.threads} threads; {load_line()}"
    )
    engine.draft = 0
    run_posts(engine, posts[:1], task, 8, kind)  # warm-up
    print(decode_costs(engine))
    modes = {"off": 0} | {f"on k={k}": k for k in args.draft}
    best = dict.fromkeys(modes, float("inf"))
    records, counts = {}, {}
    for _ in range(args.rounds):
        for mode, k in modes.items():
            engine.clear_cache()
            engine.draft = k
            engine.proposed = engine.accepted_total = engine.steps = engine.generated = 0
            seconds, records[mode] = run_posts(engine, posts, task, args.max_tokens, kind)
            best[mode] = min(best[mode], seconds)
            counts[mode] = (engine.generated, engine.steps, engine.proposed, engine.accepted_total)
    off = records["off"]
    for mode in modes:
        generated, steps, proposed, taken = counts[mode]
        same = sum(a == b for a, b in zip(off, records[mode]))
        rate = 60 * len(posts) / best[mode]
        line = f"  drafting {mode:<8}{best[mode]:>8.2f} s {rate:>7.1f} posts/min, {generated} tokens"
        if mode != "off":
            gain = best["off"] / best[mode]
            rate = taken / proposed if proposed else 0.0
            line += (
                f"; {gain:.2f}x off ({100 * (gain - 1):+.1f}%); accepted/proposed {taken}/{proposed} = {rate:.2f}, "
                f"{generated / steps if steps else 0:.2f} tokens a decode; records equal to off: {same} of {len(posts)}"
            )
        print(line)
        for i, (a, b) in enumerate(zip(off, records[mode])):
            if a != b:
                diff = first_difference(engine, a[2] or "", b[2] or "") if a[2] != b[2] else "probabilities only"
                print(f"    post {i}: {diff}")
    engine.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["smollm2", "1b", "both"], default="both")
    ap.add_argument("--posts", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--draft", type=int, nargs="+", default=[8], help="drafted tokens at most per step (several: each)")
    ap.add_argument("--kind", choices=["analysis", "chat", "both"], default="both")
    ap.add_argument("--ngram", type=int, default=3, help="longest n-gram looked up (then down to 2)")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    ap.add_argument("--rounds", type=int, default=2, help="rounds, settings interleaved; the best of each")
    ap.add_argument("--exact-too", action="store_true", help="also with the engine's --exact settings")
    args = ap.parse_args()
    models = {"smollm2": smollm2, "1b": _one_b}
    for name in ["smollm2", "1b"] if args.model == "both" else [args.model]:
        gguf = models[name]()
        for kind in ["analysis", "chat"] if args.kind == "both" else [args.kind]:
            for exact in (False, True) if args.exact_too else (False,):
                bench(name, gguf, args, exact, kind)


def _one_b():
    from analysis_throughput import one_b_files
    from bench_common import WORK

    WORK.mkdir(parents=True, exist_ok=True)
    return one_b_files()[0]


if __name__ == "__main__":
    main()
