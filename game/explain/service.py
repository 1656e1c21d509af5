"""Explanations on the worker thread, results back on the main thread.

The world asks for a heat map, a what-if or a class model and gets a callback a few frames later
(inside ``Worker.poll``, so the callback may touch the scene graph). Nothing here blocks the
caller: the network is copied on the worker (once per model version), and requests on one
*channel* supersede each other - while the brush moves, only the newest what-if is computed and
only its result is delivered; older queued ones are skipped without running.

    service = ExplainService(worker)
    service.request_map(net, image, "gradcam", on_result=lambda r: panel.set_overlay(r.overlay),
                        version=ws.model_version)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from game.core.worker import Job, LaneView, Worker
from game.explain.attribution import (
    METHOD_TITLES,
    AttributionOptions,
    Explainer,
    Explanation,
    canonical_method,
)
from game.explain.class_model import ClassModel, ClassModelOptions, class_model, mean_image
from game.explain.render import heat_rgba, overlay, side_by_side, to_rgb
from game.explain.whatif import WhatIfResult, whatif
from game.nets.network import Network


@dataclass
class MapResult:
    """A heat map ready to show: ``overlay`` (opaque, image blended with the map) for the info
    panel, ``heat_layer`` (alpha = heat) for drawing over a card's own texture."""

    explanation: Explanation
    overlay: np.ndarray  # RGBA uint8 (H, W, 4), the image's resolution
    heat_layer: np.ndarray  # RGBA uint8 (H, W, 4)
    tag: Any = None


@dataclass
class PanelResult:
    """Several methods side by side in one RGBA picture."""

    explanations: list[Explanation]
    panel: np.ndarray  # RGBA uint8
    tag: Any = None


@dataclass
class _Channel:
    latest: int = 0


@dataclass
class ExplainService:
    """Submits explanation jobs to a ``Worker``; one cached ``Explainer`` per model version."""

    worker: Worker | LaneView
    options: AttributionOptions = field(default_factory=AttributionOptions)
    _channels: dict[str, _Channel] = field(default_factory=dict, init=False, repr=False)
    _explainer: Explainer | None = field(default=None, init=False, repr=False)
    _explainer_key: tuple[int, int] | None = field(default=None, init=False, repr=False)

    # --- requests (main thread) ----------------------------------------------------------------

    def request_map(
        self,
        network: Network,
        image: np.ndarray,
        method: str,
        on_result: Callable[[MapResult], None],
        target: int | None = None,
        version: int = 0,
        on_error: Callable[[BaseException], None] | None = None,
        channel: str = "map",
        tag: Any = None,
    ) -> Job:
        method = canonical_method(method)
        return self._submit(
            channel,
            self._map_job,
            (network, version, np.asarray(image), method, target, tag),
            on_result,
            on_error,
        )

    def request_panel(
        self,
        network: Network,
        image: np.ndarray,
        methods: Sequence[str],
        on_result: Callable[[PanelResult], None],
        target: int | None = None,
        version: int = 0,
        on_error: Callable[[BaseException], None] | None = None,
        channel: str = "panel",
        tag: Any = None,
    ) -> Job:
        methods = [canonical_method(m) for m in methods]
        return self._submit(
            channel,
            self._panel_job,
            (network, version, np.asarray(image), methods, target, tag),
            on_result,
            on_error,
        )

    def request_whatif(
        self,
        network: Network,
        image: np.ndarray,
        mask: np.ndarray,
        on_result: Callable[[WhatIfResult], None],
        method: str = "telea",
        before: tuple[np.ndarray, np.ndarray] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        channel: str = "whatif",
    ) -> Job:
        """Inpaint + re-classify. Uses the live network read-only (``classify`` runs under
        ``no_grad`` and adds no hooks), so no copy is needed and each brush move costs only a
        forward pass."""
        mask = np.array(mask, dtype=bool, copy=True)
        return self._submit(
            channel, whatif, (network, np.asarray(image), mask, method, 3.0, before), on_result, on_error
        )

    def request_class_model(
        self,
        network: Network,
        target: int,
        image_shape: tuple[int, int, int],
        on_result: Callable[[ClassModel], None],
        version: int = 0,
        options: ClassModelOptions | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        channel: str = "class_model",
        images: np.ndarray | None = None,
    ) -> Job:
        """``images`` (the workspace's, read only) give the prior: their mean image, computed on
        the worker, so "natural" means "like the data"."""
        args = (network, version, int(target), tuple(image_shape), options, images)
        return self._submit(channel, self._class_model_job, args, on_result, on_error)

    def cancel(self, channel: str) -> None:
        """Forget pending work on a channel: queued jobs skip, a running one's result is dropped."""
        self._channels.setdefault(channel, _Channel()).latest += 1

    # --- jobs (worker thread) ------------------------------------------------------------------

    def explainer_for(self, network: Network, version: int) -> Explainer:
        """The cached explainer for this network object and model version (rebuilt on change)."""
        key = (id(network.module), int(version))
        if self._explainer is None or self._explainer_key != key:
            self._explainer = Explainer(network, self.options)
            self._explainer_key = key
        return self._explainer

    def _map_job(
        self, network: Network, version: int, image: np.ndarray, method: str, target: int | None, tag: Any
    ) -> MapResult:
        ex = self.explainer_for(network, version).attribute(image, method, target)
        return MapResult(ex, overlay(image, ex.heat), heat_rgba(ex.heat), tag)

    def _panel_job(
        self,
        network: Network,
        version: int,
        image: np.ndarray,
        methods: list[str],
        target: int | None,
        tag: Any,
    ) -> PanelResult:
        exps = self.explainer_for(network, version).attribute_many(image, methods, target)
        tiles = [("Original", to_rgb(image))] + [
            (METHOD_TITLES[e.method], overlay(image, e.heat)) for e in exps
        ]
        return PanelResult(exps, side_by_side(tiles), tag)

    def _class_model_job(
        self,
        network: Network,
        version: int,
        target: int,
        shape: tuple[int, int, int],
        options: ClassModelOptions | None,
        images: np.ndarray | None,
    ) -> ClassModel:
        explainer = self.explainer_for(network, version)
        prior = mean_image(images) if images is not None and len(images) else None
        return class_model(explainer.network, target, shape, options, copy=False, prior=prior)

    # --- plumbing ------------------------------------------------------------------------------

    def _submit(
        self,
        channel: str,
        fn: Callable[..., Any],
        args: tuple,
        on_result: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None,
    ) -> Job:
        ch = self._channels.setdefault(channel, _Channel())
        ch.latest += 1
        token = ch.latest

        def run(*a: Any) -> Any:
            if ch.latest != token:
                return _SKIPPED
            return fn(*a)

        def done(job: Job) -> None:
            if ch.latest == token and job.result is not _SKIPPED:
                on_result(job.result)

        def failed(job: Job) -> None:
            if ch.latest == token and on_error is not None and job.error is not None:
                on_error(job.error)

        return self.worker.submit(run, *args, name=f"explain:{channel}", on_done=done, on_error=failed)


_SKIPPED = object()
