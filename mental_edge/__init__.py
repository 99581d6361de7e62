"""mental-edge: the open mental-health analysis models, run locally on llama.cpp.

For non-clinical research only: outputs are model opinions, not diagnoses.
"""

__version__ = "0.1.0"
