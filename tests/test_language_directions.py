"""English → target directions (FOXP2 step 2): SVD spectra, eigengap rank, bootstrap stability, window."""

from __future__ import annotations

import pytest
import torch

from probes.language_directions import (bootstrap_stability, choose_window, difference_matrices, spectra_png,
                                        spectrum, subspace_similarity)


def planted(n=60, width=40, rank=2, signal=10.0, noise=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(width, rank, generator=g))[0].T  # [rank, width]
    coef = torch.randn(n, rank, generator=g) * signal + 0.3 * signal  # spread along each, a small shared shift
    return coef @ basis + noise * torch.randn(n, width, generator=g), basis


def test_spectrum_finds_the_planted_rank_and_directions() -> None:
    D, basis = planted(rank=2)
    sp = spectrum(D)
    assert sp.rank == 2
    assert subspace_similarity(sp.directions, basis) > 0.98
    assert sp.energy > 0.75 and sp.effective_rank < 40
    assert (sp.directions @ sp.mean_diff >= 0).all()  # oriented along the mean difference
    noise, _ = planted(signal=0.0)
    assert spectrum(noise).energy < sp.energy / 2 and spectrum(noise).effective_rank > sp.effective_rank


def test_bootstrap_stability_separates_structure_from_noise() -> None:
    D, _ = planted(rank=1)
    noise, _ = planted(rank=1, signal=0.0)
    assert bootstrap_stability(D, samples=10) > 0.95
    assert bootstrap_stability(noise, rank=1, samples=10) < 0.5


def test_window_is_the_strong_stable_low_to_mid_run() -> None:
    energy = [0.2, 0.5, 0.9, 0.95, 0.9, 0.4, 0.3, 0.99, 0.99]
    stability = [0.5, 0.9, 0.95, 0.97, 0.9, 0.5, 0.5, 0.99, 0.99]  # the last layers are excluded by depth
    assert choose_window(energy, stability) == [2, 3, 4]
    assert choose_window(energy, stability, max_depth=1.0) == [7, 8]
    assert choose_window(energy, stability, width=2) == [2, 3]  # 0.855 + 0.9215 beats 0.9215 + 0.81
    assert choose_window(energy, stability, width=2, max_depth=1.0) == [7, 8]
    assert choose_window(energy, stability, width=3, max_depth=1.0) == [2, 3, 4]  # 2.59 beats [6, 7, 8]: 2.11
    assert choose_window(energy, stability, width=50) == list(range(6))  # clipped to the allowed depth


@pytest.mark.slow
def test_smollm2_english_spanish_shift_is_low_rank(smollm2) -> None:
    """On parallel verses the en→es shift at a middle layer is dominated by its mean direction."""
    from probes.language_counts import bible_texts

    texts = bible_texts(["en", "es"], limit=48, offset=500)
    es, en, en_other = texts["es"][:24], texts["en"][:24], texts["en"][24:]
    D = difference_matrices(smollm2, es, en, layers=[4, 15])
    control = difference_matrices(smollm2, en_other, en, layers=[4, 15])  # English minus other English verses
    assert D[15].shape == (24, smollm2.adapter.d_mlp)

    def shared(M):  # share of the matrix's energy in its mean row: ~1/n without a consistent shift
        return float(M.shape[0] * M.mean(0).norm() ** 2 / M.norm() ** 2)

    for layer in (4, 15):
        sp = spectrum(D[layer])
        cos = float(sp.directions[0] @ sp.mean_diff / sp.mean_diff.norm())
        print(f"layer {layer}: rank {sp.rank}, energy {sp.energy:.2f}, effective rank {sp.effective_rank:.1f}, "
              f"cos(top direction, mean shift) {cos:.2f}, shared shift {shared(D[layer]):.2f} "
              f"(en−en control {shared(control[layer]):.2f})")
        assert cos > 0.8 and shared(D[layer]) > 3 * shared(control[layer])
    assert spectra_png({l: spectrum(D[l]) for l in D}).startswith(b"\x89PNG")
    with pytest.raises(Exception, match="same number"):
        difference_matrices(smollm2, texts["es"], texts["en"][:3])
