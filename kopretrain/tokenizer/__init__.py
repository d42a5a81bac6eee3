"""Tokenizers: load any supported base, train Korean SentencePiece, merge into the base,
measure token efficiency, and resize/initialise model embeddings for the new tokens."""
