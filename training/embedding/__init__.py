"""Stage 2: contrastive fine-tuning of the LLM into a text encoder (pooling, losses, trainer)."""
