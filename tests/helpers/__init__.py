"""Test helpers: generated RAW files, TF checkpoints, a local HTTP server, readers (imported as helpers.X)."""
