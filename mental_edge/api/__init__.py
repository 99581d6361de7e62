"""The Python API: what `import mental_edge` offers (re-exported there), and what the CLI, the server and Ray's
workers call. One module a job: `loading` (opening a model, the engine-loader extension point), `model`
(`Model`: analyze, prompt, generate, chat), `inputs` (posts in the shapes notebooks hold them), `records`
(`Record`, `records_to_frame`), `jobs` (an analysis from input files to an output file, resumable), `evaluate`
(IMHI evaluation reports and the HTML page), `checks` (`verify`, with a shipped sample of IMHI rows)."""
