"""Models we build for experiments (not part of the core `interp` package).

`testbeds.vlm`: the Llava-on-SmolLM2 digits VLM and its math LLM (`python -m testbeds.vlm`).
Testbeds may import `interp`; `interp` never imports them.
"""
