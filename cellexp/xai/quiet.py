"""Silence the per-image progress bars some libraries draw, while ours counts cells for the whole run."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from types import ModuleType, SimpleNamespace
from unittest import mock

import tqdm


@contextmanager
def library_bars_off(*modules: ModuleType) -> Iterator[None]:
    """Within the block, `module.tqdm` (the tqdm module or its class, as the library imported it) draws nothing.

    ScoreCAM and AblationCAM draw one bar per image and lime one per explained instance: hundreds of
    bars for one run, none of which says how far the run is.
    """
    quiet = partial(tqdm.tqdm, disable=True)
    with ExitStack() as stack:
        for module in modules:
            replacement = SimpleNamespace(tqdm=quiet) if inspect.ismodule(module.tqdm) else quiet
            stack.enter_context(mock.patch.object(module, "tqdm", replacement))
        yield
