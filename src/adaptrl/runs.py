"""A run is a directory: config.yaml (complete), sessions.json (versions and command of every
training session), metrics.csv, tb/ (TensorBoard), checkpoints/ (last.pt, best.pt, iter_N.pt),
eval/, report.*

Checkpoints are written to a temporary file, fsynced, then renamed over the old one, so a kill at
any moment leaves either the previous or the new checkpoint, never a torn one. They hold only
tensors and plain values and are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

from adaptrl.config import RunConfig, parse_run_config, yaml_problem
from adaptrl.errors import ConfigError, RunError

CHECKPOINT_FORMAT = 1


class Run:
    """Paths and files of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_path = property(lambda self: self.path / "checkpoints" / "best.pt")
    eval_dir = property(lambda self: self.path / "eval")
    sessions_path = property(lambda self: self.path / "sessions.json")

    def periodic_path(self, iteration: int) -> Path:
        return self.path / "checkpoints" / f"iter_{iteration:06d}.pt"

    def checkpoint_file(self, which: str = "last") -> Path:
        """``last``, ``best``, an iteration kept by ``train.keep_every``, or a file path."""
        if which == "last":
            return self.checkpoint_path
        if which == "best":
            if not self.best_path.exists():
                raise RunError(
                    f"run '{self.path}' has no best checkpoint (it is kept when "
                    "train.eval_every > 0); use --checkpoint last"
                )
            return self.best_path
        if which.isdigit():
            path = self.periodic_path(int(which))
            if not path.exists():
                kept = sorted(int(p.stem[5:]) for p in self.path.glob("checkpoints/iter_*.pt"))
                raise RunError(
                    f"run '{self.path}' kept no checkpoint of iteration {which} (kept: "
                    f"{', '.join(map(str, kept)) or 'none; set train.keep_every'})"
                )
            return path
        path = Path(which)
        if not path.is_file():
            raise RunError(f"--checkpoint '{which}' is not last, best, an iteration or a file")
        return path

    def eval_dir_for(self, which: str = "last") -> Path:
        """Evaluations of the last checkpoint go to eval/, others beside it (eval-best/, ...)."""
        if which == "last":
            return self.eval_dir
        if which == "best":
            return self.path / "eval-best"
        name = f"iter{int(which):06d}" if which.isdigit() else Path(which).stem
        return self.path / f"eval-{name}"

    def save_config(self, config: RunConfig) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))

    tb_dir = property(lambda self: self.path / "tb")

    @classmethod
    def create(cls, path: str | Path, config: RunConfig) -> Run:
        run = cls(path)
        if run.config_path.exists():
            raise RunError(
                f"'{run.path}' already holds a run; continue it with "
                f"'adaptrl train --resume {run.path}' or choose another --out"
            )
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"--out '{run.path}' exists and is not a directory")
        (run.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        run.save_config(config)
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"run directory '{run.path}' does not exist")
        if not run.config_path.exists():
            raise RunError(
                f"'{run.path}' is not an adaptrl run (no config.yaml); pass the --out directory "
                "of 'adaptrl train'"
            )
        return run

    def config(self) -> RunConfig:
        try:
            return parse_run_config(self._written())
        except ConfigError as exc:
            raise RunError(f"'{self.config_path}': {exc}") from None

    def written_keys(self, section: str) -> set[str]:
        """The keys config.yaml spells out in ``section``: a key the library gained after the
        run was made is absent (``build.run_config`` gives it the old behaviour)."""
        part = self._written().get(section)
        return set(part) if isinstance(part, dict) else set()

    def _written(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError as exc:
            raise RunError(f"'{self.config_path}' is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise RunError(f"'{self.config_path}' does not hold a config mapping")
        return data

    # ----------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_save({"format": CHECKPOINT_FORMAT, **state}, self.checkpoint_path)

    def save_extra_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        atomic_save({"format": CHECKPOINT_FORMAT, **state}, path)

    def load_checkpoint(self, required: bool = True, which: str = "last") -> dict[str, Any] | None:
        path = self.checkpoint_file(which)
        if not path.exists():
            if required:
                raise RunError(
                    f"run '{self.path}' has no checkpoint ({path}); train it first with "
                    "'adaptrl train'"
                )
            return None
        return load_checkpoint_file(path)

    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpoint to continue from, or None for a run that has logged nothing. A
        run that logged iterations but kept no checkpoint (killed before its first one) is
        refused: starting it again from iteration 0 would overwrite metrics.csv (issue 26)."""
        state = self.load_checkpoint(required=False)
        if state is None and (logged := read_metrics(self)):
            raise RunError(
                f"run '{self.path}' has no checkpoint to resume from, but its metrics.csv holds "
                f"{len(logged)} logged iteration(s); train a new run (another --out) rather "
                "than overwrite them"
            )
        return state

    def record_session(self, command: list[str], iteration: int, device: str) -> None:
        """Append this session's versions and command to sessions.json: a resumed run shows
        whether it changed torch or adaptrl half-way."""
        sessions = []
        if self.sessions_path.exists():
            try:
                sessions = json.loads(self.sessions_path.read_text())
            except json.JSONDecodeError:
                sessions = []
        sessions.append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "start_iteration": iteration,
                "command": command,
                "device": device,
                "versions": versions(),
                "platform": platform.platform(),
            }
        )
        atomic_write_text(self.sessions_path, json.dumps(sessions, indent=1))


def versions() -> dict[str, str]:
    """Python and the installed versions of adaptrl and the libraries results depend on."""
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("adaptrl", "numpy", "gymnasium", "mujoco", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save streamed into a temporary file, then renamed (no second copy in memory)."""
    _atomic_write(path, lambda f: torch.save(obj, f))


ARRAYS_FORMAT = 1


def save_arrays(path: Path, arrays: dict[str, torch.Tensor]) -> None:
    """Large tensors (a learner's replay buffers) as raw bytes behind a JSON header, written
    atomically one tensor at a time from its own memory: no pickle, no second copy."""
    entries, offset = [], 0
    for name, t in arrays.items():
        if not t.is_contiguous():
            raise ValueError(f"array '{name}' must be contiguous to be saved without a copy")
        nbytes = t.numel() * t.element_size()
        entries.append(
            {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
             "offset": offset, "nbytes": nbytes}
        )  # fmt: skip
        offset += nbytes
    header = json.dumps({"format": ARRAYS_FORMAT, "arrays": entries}).encode()

    def write(f) -> None:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for t in arrays.values():
            if t.numel():
                f.write(memoryview(t.detach().cpu().numpy()).cast("B"))

    _atomic_write(path, write)


def load_arrays(path: Path):
    """(name, tensor) pairs of a ``save_arrays`` file, one at a time (the caller copies each
    where it belongs before the next is read); a damaged file is one RunError line."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            if header.get("format") != ARRAYS_FORMAT:
                raise ValueError("unknown format")
            start = 8 + size
            for entry in header["arrays"]:
                t = torch.empty(entry["shape"], dtype=getattr(torch, entry["dtype"]))
                if t.numel() * t.element_size() != entry["nbytes"]:
                    raise ValueError("sizes disagree")
                f.seek(start + entry["offset"])
                if t.numel() and f.readinto(memoryview(t.numpy()).cast("B")) != entry["nbytes"]:
                    raise ValueError("truncated")
                yield entry["name"], t
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(
            f"'{path}' is corrupted or not an adaptrl array file ({type(exc).__name__}: {exc}); "
            "delete the run's checkpoints to restart it"
        ) from None


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbled files
        raise RunError(
            f"checkpoint '{path}' is corrupted or not an adaptrl checkpoint "
            f"({type(exc).__name__}); {_other_checkpoints(path)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(
            f"checkpoint '{path}' is not an adaptrl checkpoint (format "
            f"{CHECKPOINT_FORMAT} expected)"
        )
    return state


def _other_checkpoints(path: Path) -> str:
    """What to do about a damaged checkpoint: use a kept one before losing the run (issue 26)."""
    kept = sorted(
        p.name
        for p in path.parent.glob("*.pt")
        if p != path and (p.name == "best.pt" or p.name.startswith("iter_"))
    )
    if not kept:
        return "delete it to restart the run from scratch"
    flags = ["best"] if "best.pt" in kept else []
    flags += ["N (iter_N.pt)"] if kept[-1].startswith("iter_") else []
    return (
        f"{path.parent} also holds {', '.join(kept)}: evaluate one with --checkpoint "
        f"{' or '.join(flags)}, or copy one over {path.name} to resume from it"
    )


class MetricsLog:
    """metrics.csv (one row per logged iteration) plus TensorBoard scalars."""

    def __init__(self, run: Run, start_iteration: int) -> None:
        self.path = run.metrics_path
        self.rows = self._read_rows(start_iteration)
        self.fields: list[str] = list(self.rows[0]) if self.rows else []
        if self.rows or self.path.exists():
            self._rewrite()
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run wrote after its last checkpoint.
        self.writer = SummaryWriter(str(run.tb_dir), purge_step=start_iteration + 1)

    def _read_rows(self, start_iteration: int) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return [r for r in csv.DictReader(f) if int(r["iteration"]) <= start_iteration]

    def _rewrite(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, text.getvalue())

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, iteration)
        new_keys = [k for k in row if k not in self.fields]
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        if new_keys or not self.path.exists():
            self.fields += new_keys
            self._rewrite()
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(self.rows[-1])

    def close(self) -> None:
        self.writer.close()


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def read_metrics(run: Run) -> list[dict[str, float]]:
    if not run.metrics_path.exists():
        return []
    with run.metrics_path.open(newline="") as f:
        return [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)
        ]
