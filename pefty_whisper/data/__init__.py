"""Data: audio decoding, KsponSpeech transcripts, manifests, features and augmentation."""
