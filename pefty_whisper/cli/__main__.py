"""`python -m pefty_whisper.cli`: what the DeepSpeed launcher and torchrun run in every process."""

from pefty_whisper.cli import main

main()
