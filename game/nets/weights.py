"""Loading and saving weights safely: safetensors, or torch files with ``weights_only=True``.

A file that does not fit the network is a ``WeightsError`` that names the missing and unexpected
keys and the shape mismatches, so the person can see at once whether they picked the wrong file
or the wrong architecture.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from game.core.errors import UserError


class WeightsError(UserError):
    """A weights file that cannot be read or does not match the network."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code from the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            import warnings

            with warnings.catch_warnings():  # torch's own "please file an issue" advice is not ours
                warnings.simplefilter("ignore")
                state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, wrong format
        import pickle

        if isinstance(exc, pickle.UnpicklingError):  # torch explains in a page; one line is enough
            why = "it holds pickled Python objects beyond tensors, which are refused (never run)"
        else:
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        raise WeightsError(f"cannot read weights from {p}: {why}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{p} does not hold a state dict of tensors")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_weights(module: nn.Module, path: str | Path, allow_new_head: bool = False) -> list[str]:
    """Load ``path`` into ``module``; strict unless ``allow_new_head``.

    With ``allow_new_head`` the final layer may differ in class count (an ImageNet file on a
    10-class dataset): those keys are left at their fresh values and returned.
    """
    state = read_state_dict(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    skipped: list[str] = []
    if allow_new_head and not missing and not unexpected and mismatched:
        head = _last_linear_keys(module)
        if set(mismatched) <= head:
            skipped = mismatched
            state = {k: v for k, v in state.items() if k not in head}
            mismatched = []
            missing = []
    if missing or unexpected or mismatched:
        parts = [f"weights in {path} do not match the network"]
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys: {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}"
            )
        if mismatched:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:6]]
            parts.append(f"shape mismatches (file vs network): {', '.join(shapes)}")
        raise WeightsError("; ".join(parts))
    module.load_state_dict(state, strict=not skipped)
    return skipped


def _last_linear_keys(module: nn.Module) -> set[str]:
    name = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)][-1]
    return {f"{name}.weight", f"{name}.bias"}


def save_weights(module: nn.Module | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write weights as safetensors (atomic: a crash never leaves half a file, and two processes
    writing the same path, e.g. two first launches filling the model cache, each write their own
    uniquely named temporary file; the last rename wins with a whole file)."""
    from safetensors.torch import save_file

    state = module.state_dict() if isinstance(module, nn.Module) else module
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def state_to_bytes(module: nn.Module, names: Iterable[str] | None = None) -> bytes:
    """Weights as safetensors bytes (for checkpoints kept in memory or a session file): every
    tensor of ``module``'s state, or only those ``names`` (a job's trained head; what the job
    process lacks of a network). ``save`` copies the data into its bytes, so nothing is cloned
    first (64 MB less at AlexNet's head)."""
    from safetensors.torch import save

    state = module.state_dict()
    chosen = state.keys() if names is None else names
    return save({n: state[n].detach().contiguous().cpu() for n in chosen})


def state_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)
