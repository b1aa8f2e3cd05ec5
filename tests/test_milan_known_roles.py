"""Issue 10's acceptance on real neurons: MILAN descriptions (learned captioner) of smollm2-135m's
language-specific and LM-head concept neurons against their known roles, beside the plain captioner argmax
and descriptions of random neurons of the same layers (the table is printed).

What holds, and is asserted: the descriptions agree with the known roles far more often than descriptions of
random neurons do, and PMI never agrees less often than the argmax. PMI does not agree strictly *more* often
with the default captioner (17 of 23 each; other trainings gave PMI one neuron more or the same count: README,
"Neurons with known roles"), so issue 10's "more often than the argmax" is reported, not asserted."""

from __future__ import annotations

import pytest

from probes.milan import MilanSettings
from probes.milan_annotations import AnnotationSettings
from probes.milan_captioner import TrainedDescriber, trained_captioner
from probes.milan_eval import agreement_table
from probes.milan_known_roles import agreement_rows, describe_known, known_neurons, random_partners


@pytest.mark.slow
def test_descriptions_agree_with_known_roles(smollm2, smollm2_language_counts) -> None:
    settings = MilanSettings(beam=20)
    neurons = known_neurons(smollm2, counts=smollm2_language_counts[0])
    neurons += random_partners(smollm2, neurons)
    describer = TrainedDescriber(trained_captioner(smollm2.tokenizer, AnnotationSettings(window=settings.window)))
    described = describe_known(smollm2, describer, neurons, settings)
    rows, table = agreement_table(agreement_rows(described))
    print("\n" + "\n".join(f"{n.kind:14s} L{n.layer}:{n.unit:<5d} {n.reference!r:10s} PMI {n.pmi!r:24s} "
                           f"argmax {n.argmax!r}" for n in described))
    print(table)
    agree = {r.name: r.agree for r in rows}
    assert agree["PMI (known roles)"] >= agree["PMI (random neurons)"] + 0.3, table
    assert agree["argmax (known roles)"] >= agree["argmax (random neurons)"] + 0.3, table
    assert agree["PMI (known roles)"] >= agree["argmax (known roles)"], table
