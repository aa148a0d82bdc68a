"""Data: the IEMOCAP builder, manifests for your own data, the spoken demo corpus, and audio checks."""
