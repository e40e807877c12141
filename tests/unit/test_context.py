"""The encoder context: which length a batch is padded to, and an encoder that takes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import tiny_whisper_config
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from pefty_whisper.data.features import log_mel
from pefty_whisper.whisper.context import allow_short_context, context_samples

RATE = 16_000
FULL = 30 * RATE


def test_full_context_is_always_the_whole_window() -> None:
    assert context_samples(RATE, "full", 2.0, FULL) == FULL


@pytest.mark.parametrize(
    ("seconds", "expected_s"),
    [(0.3, 2), (2.0, 2), (2.01, 4), (5.6, 6), (29.5, 30), (30.0, 30)],
)
def test_auto_context_rounds_the_longest_up_to_a_step(seconds: float, expected_s: int) -> None:
    assert context_samples(round(seconds * RATE), "auto", 2.0, FULL) == expected_s * RATE


def test_auto_context_never_exceeds_the_window() -> None:
    # A 7 s step would round 29 s up to 35 s: the window caps it.
    assert context_samples(29 * RATE, "auto", 7.0, FULL) == FULL


@pytest.mark.parametrize("step_s", [0.001, 0.25, 0.33, 1.0, 2.0])
def test_every_context_is_an_even_number_of_frames(step_s: float) -> None:
    for seconds in (0.1, 0.9, 3.3, 7.77, 29.99):
        samples = context_samples(round(seconds * RATE), "auto", step_s, FULL)
        assert samples % 320 == 0 and samples >= seconds * RATE - 1e-6


def test_short_features_are_the_start_of_the_full_ones() -> None:
    extractor = WhisperFeatureExtractor()
    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (4 * RATE, 2 * RATE)]
    full = log_mel(extractor, audios, FULL)
    short = log_mel(extractor, audios, 5 * RATE)
    assert full.shape == (2, 80, 3000) and short.shape == (2, 80, 500)
    # Padding the waveform, not the spectrogram: even the padded frames match exactly.
    np.testing.assert_array_equal(short, full[:, :, :500])


def test_a_short_input_encodes_as_a_model_built_for_that_context() -> None:
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config()).eval()
    allow_short_context(model)
    allow_short_context(model)  # a second call must not wrap the wrapper
    frames = 400
    short_config = tiny_whisper_config(max_source_positions=frames // 2)
    reference = WhisperForConditionalGeneration(short_config)
    state = model.state_dict()
    state["model.encoder.embed_positions.weight"] = state["model.encoder.embed_positions.weight"][
        : frames // 2
    ]
    reference.load_state_dict(state)
    reference.eval()
    features = torch.randn(2, 80, frames)
    with torch.no_grad():
        ours = model.get_encoder()(features).last_hidden_state
        expected = reference.get_encoder()(features).last_hidden_state
    assert ours.shape == (2, frames // 2, 32)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    # The model is left as it was: full-length input still works, the config is untouched.
    assert model.config.max_source_positions == 1500
    assert model.get_encoder().embed_positions.num_embeddings == 1500
    with torch.no_grad():
        assert model.get_encoder()(torch.randn(1, 80, 3000)).last_hidden_state.shape[1] == 1500


def test_a_short_input_trains_and_generates() -> None:
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    allow_short_context(model)
    features = torch.randn(2, 80, 200)
    labels = torch.randint(0, 100, (2, 5))
    model(input_features=features, labels=labels).loss.backward()
    assert model.model.encoder.layers[0].fc1.weight.grad.abs().sum() > 0
    model.eval()
    tokens = model.generate(input_features=features, max_new_tokens=3)
    assert tokens.shape[0] == 2


def test_an_odd_or_too_long_input_is_refused() -> None:
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    allow_short_context(model)
    with pytest.raises(ValueError, match="multiple of 2 mel frames up to 3000; got 401"):
        model.get_encoder()(torch.randn(1, 80, 401))
    with pytest.raises(ValueError, match="got 3002"):
        model.get_encoder()(torch.randn(1, 80, 3002))


@pytest.mark.parametrize(("context", "frames"), [("auto", 400), ("full", 3000)])
def test_the_collator_pads_a_batch_to_its_context(context: str, frames: int) -> None:
    from pefty_whisper.data.features import SpeechCollator

    collator = SpeechCollator(
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        pad_token_id=0,
        context=context,
        context_step_s=2.0,
    )
    items = [
        {"audio": np.zeros(RATE, dtype=np.float32), "labels": [5, 6, 7]},
        None,  # an unreadable file, skipped
        {"audio": np.ones(round(3.1 * RATE), dtype=np.float32) * 0.1, "labels": [5, 8]},
    ]
    batch = collator(items)
    assert batch["input_features"].shape == (2, 128, frames)
    assert batch["decoder_input_ids"].tolist() == [[5, 6], [5, 0]]
    assert batch["labels"].tolist() == [[6, 7], [8, -100]]
