"""The user errors of the ``lightning-xai`` command: one line that names the file, exit status 2.

A mistake in the command line or in a file it names (a store that is a directory, a text file, another
application's SQLite database or of a newer schema; a checkpoint that is missing, unreadable, not a Lightning
checkpoint or of another model; a YAML config that is missing or does not parse) is raised as
:class:`UserError` where it is detected: at the boundaries where the command opens those files, and around
``trainer.validate`` for a checkpoint whose weights do not fit the model. :func:`lightning_xai.cli.main` prints
it as ``lightning-xai <command>: error: <message>`` and returns 2; with ``--debug`` the traceback (with the
original error as its cause) comes first. Anything else is a bug and propagates as a traceback.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import traceback
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_xai._checks import expected

if TYPE_CHECKING:
    from lightning_xai.sinks.store import AttributionStore

__all__ = ["UserError", "check_checkpoint", "check_configs", "load_error", "open_store", "report", "write_png"]

_CONFIG_FLAGS = ("--config", "-c")
_INLINE = ("{", "\n", ": ")  # jsonargparse also takes a config as a YAML string, not a file
_SIZE = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) from checkpoint, "
    r"the shape in current model is torch\.Size\((\[.*?\])\)"
)


class UserError(ValueError):
    """A mistake in the command line or in a file it names; ``main`` prints it in one line and returns 2.

    Example:
        >>> report("drift", UserError("no store at s.sqlite"), debug=False, stream=sys.stdout)
        lightning-xai drift: error: no store at s.sqlite
        2
    """


def report(command: str, err: BaseException, debug: bool, stream: Any = None) -> int:
    """Print ``err`` as one line (after its traceback when ``debug``) on ``stream`` (default stderr); 2."""
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=stream)
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"lightning-xai {command}: error: {message}", file=stream)
    return 2


def _first_line(err: BaseException) -> str:
    """The error's type and first line; of torch's long ``weights_only`` message, what the unpickler said."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = marker + " " + text.split(marker, 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def open_store(path: str | Path, given: str = "`--store`") -> AttributionStore:
    """Open the existing store at ``path`` for reading; anything that is not one is a :class:`UserError`.

    Example:
        >>> open_store("no-such-store.sqlite")
        Traceback (most recent call last):
        ...
        lightning_xai.cli._errors.UserError: no store at no-such-store.sqlite (`--store` names the file an AttributionDriftCallback wrote)
    """  # noqa: E501
    from lightning_xai.sinks.store import AttributionStore

    if not Path(path).exists():
        raise UserError(f"no store at {path} ({given} names the file an AttributionDriftCallback wrote)")
    try:
        return AttributionStore(path, create=False)
    except (ValueError, OSError, sqlite3.Error) as err:  # a directory, a text file, another database, newer
        detail = str(err) if str(path) in str(err) else f"{path}: {err}"
        raise UserError(f"cannot read the store given by {given}: {detail}") from err


def write_png(path: str | Path, data: bytes, flag: str = "--out") -> Path:
    """Write ``data`` to ``path`` atomically; a path that cannot be written is a :class:`UserError`."""
    from lightning_xai.sinks.files import atomic_write_bytes

    try:
        return atomic_write_bytes(path, data)
    except OSError as err:
        raise UserError(f"cannot write `{flag}` {path}: {err.strerror or err}") from err


def check_checkpoint(path: str, flag: str = "--ckpt_path") -> None:
    """Raise a :class:`UserError` unless ``path`` is a Lightning checkpoint that ``torch.load`` reads.

    It is loaded as Lightning will load it (``torch.load``'s default ``weights_only``), memory-mapped when it is
    a zip file, so its tensors are not read.

    Example:
        >>> check_checkpoint("no-such.ckpt")
        Traceback (most recent call last):
        ...
        lightning_xai.cli._errors.UserError: Expected argument `--ckpt_path` to be an existing checkpoint file, but got 'no-such.ckpt'.
    """  # noqa: E501
    if not Path(path).is_file():
        raise UserError(expected(flag, "an existing checkpoint file", path))
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001  (whatever torch.load raises on this file is a verdict on it)
        raise UserError(f"checkpoint {path} cannot be read by torch.load ({_first_line(err)})") from err
    if not isinstance(ckpt, Mapping) or not {"state_dict", "pytorch-lightning_version"} <= set(ckpt):
        keys = [str(k) for k in ckpt][:4] if isinstance(ckpt, Mapping) else []
        held = f"a dict of {len(ckpt)} keys {keys}" if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise UserError(
            f"checkpoint {path} is not a Lightning checkpoint: it holds {held}, without 'state_dict' and "
            "'pytorch-lightning_version' (save one with Trainer.save_checkpoint or ModelCheckpoint)"
        )


def _few(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_error(err: BaseException, ckpt: str, model: Any) -> UserError | None:
    """The :class:`UserError` for torch's ``Error(s) in loading state_dict`` (``None`` for any other error).

    Example:
        >>> err = RuntimeError('Error(s) in loading state_dict for Net:\\n\\tMissing key(s) in state_dict: "a", '
        ...                    '"b". \\n\\tUnexpected key(s) in state_dict: "c". ')
        >>> print(load_error(err, "x.ckpt", object()))
        checkpoint x.ckpt does not fit model builtins.object: missing keys a, b; unexpected keys c (a checkpoint of another model class, or of other init_args?)
    """  # noqa: E501
    text = str(err)
    if not isinstance(err, RuntimeError) or not text.startswith("Error(s) in loading state_dict"):
        return None
    missing: list[str] = []
    unexpected: list[str] = []
    shapes: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Missing key(s)"):
            missing += re.findall(r'"([^"]*)"', line)
        elif line.startswith("Unexpected key(s)"):
            unexpected += re.findall(r'"([^"]*)"', line)
        elif match := _SIZE.match(line):
            shapes.append(f"{match[1]} ({match[2]} in the checkpoint, {match[3]} in the model)")
    found = [("missing keys", missing), ("unexpected keys", unexpected), ("other shapes for", shapes)]
    what = "; ".join(f"{label} {_few(items)}" for label, items in found if items) or text.splitlines()[0]
    cls = type(model)
    return UserError(
        f"checkpoint {ckpt} does not fit model {cls.__module__}.{cls.__qualname__}: {what} "
        "(a checkpoint of another model class, or of other init_args?)"
    )


def _flag_values(args: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(flag, value)`` for every ``--flag value``, ``--flag=value`` and ``-c value`` of ``args``."""
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        if "=" in arg:
            flag, value = arg.split("=", 1)
            yield flag, value
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            yield arg, args[i + 1]


def check_configs(args: Sequence[str]) -> None:
    """Raise a :class:`UserError` naming the file and line for a ``--config`` that is missing or is not a YAML
    mapping, and for any other ``.yaml``/``.yml`` file given to a LightningCLI flag that does not parse.

    jsonargparse would say ``<unicode string>`` instead of the file, after a page of usage.

    Example:
        >>> check_configs(["--config", "no-such.yaml", "--trainer.max_epochs", "1"])
        Traceback (most recent call last):
        ...
        lightning_xai.cli._errors.UserError: Expected argument `--config` to be an existing YAML file, but got 'no-such.yaml'.
    """  # noqa: E501
    import yaml

    for flag, value in _flag_values(args):
        config = flag in _CONFIG_FLAGS and not any(c in value for c in _INLINE)
        if not config and not (value.endswith((".yaml", ".yml")) and Path(value).is_file()):
            continue
        if not Path(value).is_file():
            raise UserError(expected(flag, "an existing YAML file", value))
        try:
            data = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read the config file {value} (`{flag}`): {err}") from err
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            context = getattr(err, "context", None)
            detail = f"{problem} ({context})" if context else problem
            raise UserError(f"config file {value}{where} (`{flag}`) is not valid YAML: {detail}") from err
        if config and data is not None and not isinstance(data, dict):
            raise UserError(
                f"config file {value} (`{flag}`) holds a {type(data).__name__}, not a mapping of LightningCLI "
                f"keys (model, data, trainer, ...): {str(data)[:40]!r}"
            )
