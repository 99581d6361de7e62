"""The llama.cpp backend (through llama-cpp-python): the shared loading and sampling, the decoder-only engine,
its batcher, and T5 through the encoder-decoder API."""
