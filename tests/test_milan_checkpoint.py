"""A MILAN checkpoint is resumed only when it records the same settings and the same describer (issue 26).

Before, an empty or missing `settings` or `describer` skipped the check, so a checkpoint of unknown
origin was resumed silently. The check runs before any neuron is described: no model is needed.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from interp.errors import InterpError
from probes.milan import MilanSettings, describe_neurons


class _Describer:
    identity = "stub describer v1"

    def candidates(self, *a, **k):  # never reached: the checkpoint is judged first
        raise AssertionError("described a neuron")

    logprobs = candidates


SETTINGS = MilanSettings(k=5, beam=4, max_tokens=6)
DONE = {"text": "from the checkpoint", "pmi": 0.0, "lam": 0.2, "mode": "rerank", "argmax": "x",
        "candidates": ["from the checkpoint"], "captioner": [0.0], "prior": [0.0]}


def _resume(tmp_path, body: dict):
    ckpt = tmp_path / "milan-checkpoint.json"
    ckpt.write_text(json.dumps(body))
    return describe_neurons(None, None, {"s": [10]}, _Describer(), SETTINGS, checkpoint=ckpt, progress=False)


def test_a_checkpoint_with_the_same_settings_and_describer_is_resumed(tmp_path) -> None:
    got = _resume(tmp_path, {"settings": asdict(SETTINGS), "describer": _Describer.identity,
                             "descriptions": {"s": {"10": DONE}}})
    assert got["s"][10].text == "from the checkpoint"


@pytest.mark.parametrize("body, says", [
    ({"settings": {}, "describer": _Describer.identity}, "records no MILAN settings"),
    ({"describer": _Describer.identity}, "records no MILAN settings"),
    ({"settings": asdict(SETTINGS)}, "records no describer"),
    ({"settings": asdict(SETTINGS), "describer": ""}, "records no describer"),
    ({"settings": {**asdict(SETTINGS), "beam": 50}, "describer": _Describer.identity}, "other MILAN settings"),
    ({"settings": asdict(SETTINGS), "describer": "captioner 0123"}, "another describer"),
])
def test_a_checkpoint_without_or_with_other_settings_or_describer_is_refused(tmp_path, body, says) -> None:
    with pytest.raises(InterpError, match=says) as refusal:
        _resume(tmp_path, {**body, "descriptions": {"s": {"10": DONE}}})
    assert "\n" not in str(refusal.value)
