"""pefty-whisper: round-based LoRA fine-tuning of 8-bit Whisper for Korean speech recognition."""

__version__ = "0.1.0"
