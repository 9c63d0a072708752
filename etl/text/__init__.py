"""Text builders: keyword slices wrapped in the special tokens of etl.tokens, the stage-1 corpus
and the stage-2 contrastive pairs."""
