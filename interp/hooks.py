"""Site hooks: read (and later rewrite) one site's tensor with a plain function.

`site_hook(point, fn)` registers one PyTorch hook that hands `fn` the site's
tensor — [batch, seq, width], or [batch, seq, n_heads, d_head] for
attn.hook_z — and, if `fn` returns a tensor, writes it back in its place.
`hooks(...)` is a context manager that always removes what it registered,
and `StopForward` lets a hook end the forward pass early once the last
needed site has been seen.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch.utils.hooks import RemovableHandle

from .adapters import SitePoint

SiteFn = Callable[[torch.Tensor], "torch.Tensor | None"]


class StopForward(Exception):
    """Raised by a hook to stop the forward pass after the last needed site."""


def _view(point: SitePoint, x: torch.Tensor) -> torch.Tensor:
    if point.span is not None:
        x = x[..., point.span[0] : point.span[1]]
    if point.heads is not None:
        x = x.unflatten(-1, (point.heads, -1))
    return x


def _put(point: SitePoint, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    if point.heads is not None:
        new = new.flatten(-2)
    if point.span is not None:
        a, b = point.span
        new = torch.cat([x[..., :a], new, x[..., b:]], dim=-1)
    return new


def site_hook(point: SitePoint, fn: SiteFn, *, stop_after: bool = False) -> RemovableHandle:
    """Register `fn` on the site; raise StopForward after it if `stop_after`."""
    if point.kind == "output":

        def on_output(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            new = fn(_view(point, x))
            if stop_after:
                raise StopForward
            if new is None:
                return None
            new = _put(point, x, new)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return point.module.register_forward_hook(on_output)

    def on_input(module, args, kwargs):
        if args:
            x = args[0]
        else:
            key = next(iter(kwargs))
            x = kwargs[key]
        new = fn(_view(point, x))
        if stop_after:
            raise StopForward
        if new is None:
            return None
        new = _put(point, x, new)
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, key: new}

    return point.module.register_forward_pre_hook(on_input, with_kwargs=True)


@contextmanager
def hooks(registrations: Iterable[Callable[[], RemovableHandle]]) -> Iterator[list[RemovableHandle]]:
    """Register hooks from zero-argument callables; remove them all on exit."""
    handles: list[RemovableHandle] = []
    try:
        for register in registrations:
            handles.append(register())
        yield handles
    finally:
        for h in handles:
            h.remove()
