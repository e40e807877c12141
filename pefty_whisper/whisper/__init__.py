"""The ground floor: what a Whisper model directory is, its tokens, its processor files.

Imports nothing of the stages above it (data, train, evaluate, inference, export): every stage
asks these modules what kind a directory is, which ids a prompt has, which files it carries.
"""
