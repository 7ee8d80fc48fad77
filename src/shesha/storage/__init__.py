"""The project store: parsed documents on disk, written atomically."""
