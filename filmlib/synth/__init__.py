"""SynthCLEVR: the embedded CLEVR-format dataset (scenes, renderer, question engine)."""
