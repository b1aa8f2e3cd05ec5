"""Issue 10's acceptance on real neurons: MILAN's PMI description (learned captioner) agrees with the known
role of smollm2-135m's language-specific and LM-head concept neurons more often than the plain captioner
argmax and than descriptions of random neurons of the same layers."""

from __future__ import annotations

import pytest

from probes.milan import MilanSettings
from probes.milan_annotations import AnnotationSettings
from probes.milan_captioner import TrainedDescriber, trained_captioner
from probes.milan_eval import agreement_table
from probes.milan_known_roles import agreement_rows, describe_known, known_neurons, random_partners


@pytest.mark.slow
def test_pmi_descriptions_agree_with_known_roles(smollm2) -> None:
    settings = MilanSettings(beam=20)
    neurons = known_neurons(smollm2)
    neurons += random_partners(smollm2, neurons)
    describer = TrainedDescriber(trained_captioner(smollm2.tokenizer, AnnotationSettings(window=settings.window)))
    described = describe_known(smollm2, describer, neurons, settings)
    rows, table = agreement_table(agreement_rows(described))
    print("\n" + "\n".join(f"{n.kind:14s} L{n.layer}:{n.unit:<5d} {n.reference!r:10s} PMI {n.pmi!r:24s} "
                           f"argmax {n.argmax!r}" for n in described))
    print(table)
    agree = {r.name: r.agree for r in rows}
    assert agree["PMI (known roles)"] > agree["argmax (known roles)"], table
    assert agree["PMI (known roles)"] > agree["PMI (random neurons)"], table
    assert agree["PMI (known roles)"] > agree["argmax (random neurons)"], table
