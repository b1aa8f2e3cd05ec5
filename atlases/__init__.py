"""What is kept on disk and how: the neuron atlas format, LM-head maps in it, HTML reports."""

from .cards import CardIndex, NeuronCard, merge_atlases
from .lm_head import Agreement, NeuronHit, TokenHit, compare
from .lm_head_store import decoded_vocab, lm_head_atlas
from .neuron_atlas import FORMAT, FORMAT_VERSION, Atlas, load_atlas

__all__ = ["FORMAT", "FORMAT_VERSION", "Atlas", "load_atlas", "Agreement", "NeuronHit", "TokenHit", "compare",
           "decoded_vocab", "lm_head_atlas", "CardIndex", "NeuronCard", "merge_atlases"]
