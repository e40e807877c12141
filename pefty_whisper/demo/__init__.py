"""`pefty demo`: the whole round pipeline offline, on real whisper-base and a synthetic corpus.

The demo owns only what no other command does: the offline base model (base.py, weights.py),
the sample corpus (sentences.py, speech.py, corpus.py), and the settings that make two rounds fit
in about 12 minutes of a 2-core CPU (pipeline.py). Every step after that is a `pefty` command,
run with the argv it prints and driven by the `pefty.yaml` the demo writes, so a user can rerun
any step by hand with the same result.
"""
