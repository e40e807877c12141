"""Data: audio decoding, KsponSpeech transcripts, manifests and features."""
