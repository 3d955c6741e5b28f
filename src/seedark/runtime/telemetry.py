"""OpenVINO's and NNCF's usage telemetry, kept off."""

from __future__ import annotations

import contextlib
from typing import Any


class _MutedTelemetry:
    """Stands in for openvino_telemetry's singleton: consent is False and every call does nothing."""

    consent = False

    def _nothing(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    init = send_event = start_session = end_session = send_error = send_stack_trace = _nothing
    force_shutdown = send_opt_in_event = get_stats = _nothing


def mute_telemetry() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry off.

    Model conversion (``ovc``) and NNCF report usage to Google Analytics by default and
    write a client id under ``~/intel``. A photo tool sends nothing its user did not ask
    for, so the telemetry singleton is taken before they create it.
    """
    try:
        from openvino_telemetry import Telemetry
    except ImportError:
        return
    slot = "_SingletonMetaClass__single_instance"  # the metaclass's private, name-mangled attribute
    with contextlib.suppress(Exception):
        if getattr(Telemetry, slot, None) is None:
            type.__setattr__(Telemetry, slot, _MutedTelemetry())
