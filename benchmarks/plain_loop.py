"""The plain llama-cpp-python loop a researcher would write, as a whole process: one `Llama` (which keeps its
prefix cache between calls), one greedy `create_completion` per prompt. The throughput benchmarks run it as the
baseline; prompts come from a JSON list.

    python benchmarks/plain_loop.py MODEL.gguf PROMPTS.json MAX_TOKENS THREADS [N_CTX]
"""

import json
import sys

import llama_cpp


def main() -> None:
    model, prompts, max_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    n_ctx = int(sys.argv[5]) if len(sys.argv) > 5 else 2048
    with open(prompts, encoding="utf-8") as fh:
        queries = json.load(fh)
    llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    for query in queries:
        llm.create_completion(query, max_tokens=max_tokens, temperature=0.0)
    llm.close()


if __name__ == "__main__":
    main()
