"""mmcompress: compose vision-expert mixtures, fusion and visual-token pruning for multimodal LLMs."""

__version__ = "0.1.0"
