"""`interp analyze --probe hftp [--brain EPOCHS]`: syntax neurons by frequency tagging, and RSA with brain data.

--natural N: natural N-word sentences from --corpus instead of the four-word ones; --rsa-raw: the
paper's uncentred RSA distance (both recorded in atlas.json's settings and paper_mode).

Writes an atlas folder: per site `z.sentence`, `z.phrase` [width] and `label` [width] (0 none,
1 sentence-only, 2 phrase-only, 3 shared); atlas.json holds the settings and the per-layer
counts (and the RSA summary with --brain); spectra.png, counts.png, rsa.png, report.html.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from interp.errors import InterpError
from cli import paper
from cli.argtypes import positive
from cli.loading import load


def add_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--lang", default="en", help="stimulus language: en or es (default en)")
    group.add_argument("--streams", type=positive, default=100, help="streams per condition (default 100, as in the paper)")
    group.add_argument("--groups", type=positive, default=10, help="groups the streams are averaged in (default 10)")
    group.add_argument("--sentences", type=positive, default=60, help="sentences per stream (default 60: 240 words)")
    group.add_argument("--permutations", type=positive, default=1000, help="time permutations in stage 1 (default 1000)")
    group.add_argument("--paper-z", action="store_true",
                       help="(one of --paper's choices) stage 2 as in the paper: z-score the differences against themselves (marks the top few "
                            "per cent even without any effect); default: against a second, independent control")
    group.add_argument("--brain", metavar="EPOCHS",
                       help="epochs file (.fif) with the six conditions, or a BIDS dataset folder (mne-bids), for RSA")
    group.add_argument("--bids", metavar="KEY=VALUE,...",
                       help="which BIDS recording, e.g. subject=01,task=hftp "
                            "(keys: subject, session, task, acquisition, run)")
    group.add_argument("--rsa-top", type=positive, default=1000, metavar="N",
                       help="RSA uses the N syntax neurons with the highest z (default 1000; the random controls "
                            "draw as many from all neurons and from the non-syntax neurons)")
    group.add_argument("--regions", metavar="JSON", help="{region: [channel, ...]} for per-region RSA summaries")
    group.add_argument("--rsa-raw", action="store_true",
                       help="(one of --paper's choices) RSA with the raw, uncentred cosine distance between the "
                            "conditions' spectra, as the paper; default: each unit centred over the conditions")
    group.add_argument("--natural", type=positive, metavar="N",
                       help="natural N-word sentences cut from --corpus (default bible:LANG) instead of the "
                            "four-word ones: tagged at 4/N Hz (sentence) and 4/k Hz (phrase<k>, k = 2..N-1), "
                            "against the same sentences word-shuffled; --sentences per stream")


def _check(args) -> None:
    from probes.hftp.stimuli import LEXICON

    if args.lang not in LEXICON:
        raise InterpError(f"--lang {args.lang!r}: HFTP word lists exist for {', '.join(LEXICON)}")
    if args.streams < 2 or args.groups < 1 or args.streams % args.groups:
        raise InterpError(f"--streams {args.streams} must split into --groups {args.groups} equal groups (≥ 2 streams)")
    if args.sentences < 4 or args.permutations < 20:
        raise InterpError("--sentences must be at least 4 and --permutations at least 20")
    if args.rsa_top < 1:
        raise InterpError("--rsa-top must be at least 1")
    if args.regions and not Path(args.regions).is_file():
        raise InterpError(f"--regions {args.regions} does not exist")
    if (args.regions or args.bids) and not args.brain:
        raise InterpError("--regions and --bids go with --brain")
    if args.rsa_raw and not args.brain:
        raise InterpError("--rsa-raw goes with --brain")
    if args.natural is not None:
        from probes.hftp.run import HftpSettings, check_natural, natural_texts
        from probes.hftp.stimuli import natural

        check_natural(args.natural, args.sentences)
        texts = natural_texts(HftpSettings(lang=args.lang, corpus=getattr(args, "corpus", None)))
        natural(texts, args.natural, n_sentences=args.sentences, n_streams=1)  # enough sentences? (one line if not)


def _bids_entities(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    if not pairs or any(not k.strip() or not sep or not v.strip() for k, sep, v in pairs):
        raise InterpError(f"--bids {text!r}: expected KEY=VALUE pairs separated by commas, e.g. subject=01,task=hftp")
    return {k.strip(): v.strip() for k, _, v in pairs}


def analyze_command(args, out: Path) -> int:
    from dataclasses import replace

    import torch

    import interp
    from atlases import Atlas
    from probes.hftp.brain import CONDITIONS, check_regions, model_brain_rsa, read_epochs
    from probes.hftp.plots import counts_png, rsa_png, spectra_png
    from probes.hftp.run import HftpSettings, condition_spectra, run_hftp, summary

    _check(args)
    # a bad file fails before the model loads
    epochs = read_epochs(args.brain, bids=_bids_entities(args.bids)) if args.brain else None
    regions = None
    if args.regions:
        try:
            regions = json.loads(Path(args.regions).read_text())
        except json.JSONDecodeError as exc:
            raise InterpError(f"--regions {args.regions}: not JSON ({exc.msg})") from None
        check_regions(epochs, regions)
    model = load(args)
    sites = model.adapter.expand(args.sites, args.layers)
    settings = HftpSettings(lang=args.lang, site=args.sites, n_sentences=args.sentences, n_streams=args.streams,
                            n_groups=args.groups, n_perm=args.permutations, null_control=not args.paper_z,
                            natural=args.natural, corpus=getattr(args, "corpus", None) if args.natural else None)
    settings = paper.apply(settings, args)
    if args.rsa_raw:
        settings = replace(settings, rsa_center=False)
    result = run_hftp(model, settings, sites)
    tensors = {}
    for site in sites:
        lab = result.labels(site)
        code = lab["sentence-only"].to(torch.int8) + 2 * lab["phrase-only"].to(torch.int8) + 3 * lab["shared"].to(torch.int8)
        tensors[f"{site}/label"] = code
        for name in result.rates:
            tensors[f"{site}/z.{name}"] = result.z[name][site].contiguous()
        for cond, by_site in result.spectra.items():  # [F, N] mean amplitude, F = 2n + 1 bins of 1/(4n) per word
            tensors[f"{site}/spectrum.{cond}"] = by_site[site].to(torch.float16).contiguous()
    params = {**summary(result, settings), "paper_mode": settings.provenance()}
    binary = {"spectra.png": spectra_png(result, (settings.natural or 4) * settings.n_sentences),
              "counts.png": counts_png(result)}
    rsa_text = ""
    if epochs is not None:
        spectra, freqs = condition_spectra(model, settings, sites)
        selected = result.top(sites, args.rsa_top)
        if not selected.any():
            raise InterpError("no syntax neurons were found, so there is nothing to compare with the brain data")
        r = model_brain_rsa(spectra, freqs, selected.numpy(), epochs, regions=regions,
                            significant=result.any_rate(sites).numpy(), center=settings.rsa_center)
        params["rsa"] = {"by_region": r.by_region(), "rho": r.rho.tolist(), "channels": r.channels}
        binary["rsa.png"] = rsa_png(r.model_rdm, r.brain_rdm, list(CONDITIONS), r.by_region())
        rsa_text = ("\n\nRSA (Spearman ρ): syntax neurons vs random neurons of the same count, drawn from all "
                    "neurons and from the non-syntax ones; p = (1 + sets reaching ρ) / 21 over 20 random sets\n"
                    + r.table())
    atlas = Atlas(model=model.name, revision=model.revision, sites=sites, method="hftp", tensors=tensors,
                  params=params)
    report = (f"<!doctype html><html><head><meta charset='utf-8'><title>interp HFTP: {html.escape(model.name)}"
              f"</title></head><body><h1>HFTP — {html.escape(model.name)}</h1><img src='spectra.png'>"
              f"<img src='counts.png'>{'<img src=rsa.png>' if epochs is not None else ''}"
              f"<pre>{html.escape(result.table() + rsa_text)}</pre></body></html>")
    atlas.save(out, extra_files={"report.html": report}, binary_files=binary)
    print(result.table() + rsa_text)
    print(f"wrote {out}: {sum(sum(c.values()) for c in result.counts().values())} syntax neurons over {len(sites)} sites")
    return 0
