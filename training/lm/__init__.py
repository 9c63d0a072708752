"""Stage 1 and the shared LLM backbone: loading, special tokens, saving, the SmolLM2 conversion."""
