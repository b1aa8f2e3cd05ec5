"""MILAN (Hernandez et al. 2022; METHODS.md §F): describe neurons in words, search and audit them.

Modules: `probe` (exemplars, `describe_neurons`, `search`, `audit`), `describe` (the describer
protocol, the prompted `LMDescriber`, PMI choice), `captioner` (the learned describer, the
default), `annotations` (synthetic annotated neurons it is trained on), `eval` (BLEU, ROUGE,
embedding agreement), `images` (exemplars of a vision tower), `known_roles` (neurons whose role
is known, for the acceptance). The probe's names are importable from `probes.milan` itself.
"""

from .probe import (Exemplar, ExemplarIndex, Hit, MilanSettings, NeuronExemplars, audit, counted_tokens,
                    describe_neurons, exemplars_for, index_exemplars, search)

__all__ = ["Exemplar", "ExemplarIndex", "Hit", "MilanSettings", "NeuronExemplars", "audit", "counted_tokens",
           "describe_neurons", "exemplars_for", "index_exemplars", "search"]
