"""The duplex engine: continuous listening and speaking, over a local or a provider backend."""
