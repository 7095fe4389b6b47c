"""Run store: config -> hash -> directory of config.json, metrics.parquet, safetensors checkpoints.

A run is trained inside `.tmp-<hash>-<pid>/` and renamed to `<hash>/` only when complete,
so a killed run never leaves a directory that looks finished. Nothing is read through pickle.
`manifest.json`, written just before `summary.json` (the last file, the marker of a finished run),
holds the sha256 of every other file, the summary's included; every load checks it, so a
flipped byte, an edited summary or a swapped checkpoint is named (StoreError with the file), and
`train()` sets the folder aside and retrains, as for any damaged folder. Non-finite weights are
refused on load.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from scidl.config import ConfigError, RunConfig
from scidl.registry import make_model
from scidl.errors import ScidlError, check_int, check_type, not_allowed

CHECKPOINTS = "checkpoints"
METRIC_COLUMNS = ("step", "train_loss")  # every metrics row has these; evaluations add the rest


class StoreError(ScidlError):
    """A run folder or file that is missing, damaged or inconsistent; the message names the file."""


class RunNotFound(StoreError, KeyError):
    """The store holds no finished run of that config or hash."""

    __str__ = StoreError.__str__  # not KeyError's quoted repr


class StoreWarning(UserWarning):
    """A damaged run folder was skipped (listing) or set aside to be retrained."""


def read_json(path: Path) -> Any:
    """Return the JSON in `path`; StoreError naming the file if it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StoreError(f"{path}: cannot be read as JSON ({type(e).__name__}: {e}); the run folder "
                         f"is damaged: delete it, or call train() again to set it aside and retrain") from None


def read_parquet(path: Path) -> pd.DataFrame:
    """Return the DataFrame in `path`; StoreError naming the file if it cannot be read."""
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises many types for a truncated or foreign file
        raise StoreError(f"{path}: cannot be read as Parquet ({type(e).__name__}: {e}); the run "
                         f"folder is damaged") from None


def default_root() -> Path:
    """Return $SCIDL_STORE, else <repo>/data/runs for a source checkout, else ~/.cache/scidl/runs."""
    if os.environ.get("SCIDL_STORE"):
        return Path(os.environ["SCIDL_STORE"])
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists() and (repo / "data").is_dir():
        return repo / "data" / "runs"
    return Path.home() / ".cache" / "scidl" / "runs"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Return the code that trains runs: 'scidl <version>' plus the git commit (+dirty) of a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = f"scidl {version('scidl')}"
    except PackageNotFoundError:
        text = "scidl (not installed)"
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "lib"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text} ({sha}{'+dirty' if dirty else ''})"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + fsync + rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_bytes(obj: Any) -> bytes:
    """Return the bytes the store writes for `obj` as JSON."""
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


MANIFEST = "manifest.json"  # sha256 of every other file of a finished run, written just before summary.json
MASK_FILE = "mask.safetensors"  # a pruned run's mask (scidl.masks)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of the file at `path`."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_files(path: Path) -> list[str]:
    """Return the files of the run folder `path` that its manifest covers, relative and sorted:
    config.json, summary.json, metrics.parquet and every checkpoint."""
    names = [n for n in ("config.json", "summary.json", "metrics.parquet", MASK_FILE) if (path / n).is_file()]
    names += [f"{CHECKPOINTS}/{f.name}" for f in sorted((path / CHECKPOINTS).glob("step_*.safetensors"))]
    return names


def write_manifest(path: Path, pending: dict[str, bytes] | None = None) -> None:
    """Record the sha256 of every file of the run folder `path` in its manifest, and of `pending`
    files (name -> the bytes about to be written: the summary, written after it as the run's marker)."""
    import hashlib

    hashes = {n: sha256_file(path / n) for n in run_files(path)}
    hashes |= {n: hashlib.sha256(data).hexdigest() for n, data in (pending or {}).items()}
    atomic_write_json(path / MANIFEST, {"sha256": dict(sorted(hashes.items()))})


def read_manifest(path: Path) -> dict[str, str]:
    """Return the manifest's file -> sha256 map of the run folder `path` (StoreError if it is missing
    or malformed: a folder without one predates these checks or lost it, and is damaged)."""
    if not (path / MANIFEST).is_file():
        raise StoreError(f"{path / MANIFEST}: missing, so the run's files cannot be checked (written by an "
                         f"older scidl, or removed); the run folder is damaged: it is set aside and retrained")
    manifest = read_json(path / MANIFEST)
    hashes = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise StoreError(f"{path / MANIFEST}: not a manifest (a JSON object with a 'sha256' map of file -> hash)")
    return hashes


def verify_manifest(path: Path) -> dict[str, str]:
    """Return the manifest of the run folder `path` after checking every file against it: StoreError
    naming the file that is missing, extra, or whose bytes changed since the run was written."""
    hashes = read_manifest(path)
    present = run_files(path)
    for name in sorted(set(hashes) | set(present)):
        if name not in present:
            raise StoreError(f"{path / name}: missing, but the manifest lists it; the run folder is damaged")
        if name not in hashes:
            raise StoreError(f"{path / name}: not in the manifest (added after the run was written); the run "
                             f"folder is damaged")
        if sha256_file(path / name) != hashes[name]:
            raise StoreError(f"{path / name}: its bytes changed since the run was written (sha256 differs from "
                             f"the manifest); the run folder is damaged")
    return hashes


@dataclass(frozen=True)
class Run:
    """A finished run on disk: its config, per-eval metrics and summary; checkpoints load lazily."""

    path: Path
    config: RunConfig
    metrics: pd.DataFrame
    summary: dict[str, Any]

    @property
    def hash(self) -> str:
        return self.path.name

    @property
    def checkpoint_steps(self) -> list[int]:
        files = sorted((self.path / CHECKPOINTS).glob("step_*.safetensors"))
        return [int(f.stem[5:]) for f in files if f.stem[5:].isdigit()]

    def load_state(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """Return the state dict saved at `step` (default: the last checkpoint)."""
        steps = self.checkpoint_steps
        if not steps:
            raise StoreError(f"{self.path / CHECKPOINTS}: no checkpoints; the run folder is damaged")
        step = steps[-1] if step is None else check_int("step", step, 0, error=StoreError)
        if step not in steps:
            raise StoreError(f"step={step!r} is not allowed: run {self.hash} has checkpoints at {steps}")
        path = self.path / CHECKPOINTS / checkpoint_name(step)
        try:
            state = load_file(path)
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise StoreError(f"{path}: cannot be read as safetensors ({type(e).__name__}: {e}); the "
                             f"checkpoint is damaged") from None
        hashes = read_manifest(self.path)  # this checkpoint's bytes as written, now (not only when the run was opened)
        if sha256_file(path) != hashes.get(f"{CHECKPOINTS}/{path.name}"):
            raise StoreError(f"{path}: its bytes changed since the run was written (sha256 differs from the "
                             f"manifest); the checkpoint is damaged")
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise StoreError(f"{path}: non-finite weights in {bad[:3]}; the checkpoint is damaged")
        return state

    @property
    def mask(self) -> dict[str, torch.Tensor] | None:
        """Return the run's pruning mask ({weight name: bool tensor}), or None for a dense run."""
        from scidl.masks import load_mask

        if (self.path / MASK_FILE).exists():
            hashes = read_manifest(self.path)
            if sha256_file(self.path / MASK_FILE) != hashes.get(MASK_FILE):
                raise StoreError(f"{self.path / MASK_FILE}: its bytes changed since the run was written; the run "
                                 f"folder is damaged")
        return load_mask(self.path)

    def load_model(self, step: int | None = None):
        """Return the model with the weights saved at `step` (default: the last), in eval mode."""
        model = make_model(self.config.model, self.config.task)
        state = self.load_state(step)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise StoreError(f"{self.path / CHECKPOINTS}: checkpoint at step {step} does not fit the "
                             f"run's config ({str(e).splitlines()[0]} ...); the run folder is damaged") from None
        return model.eval()


class RunStore:
    """A directory of runs, one sub-directory per config hash."""

    def __init__(self, root: str | Path | None = None) -> None:
        check_type("root", root, (str, os.PathLike, type(None)), "a folder path or None", StoreError)
        self.root = Path(root) if root is not None else default_root()

    def path(self, config: RunConfig) -> Path:
        """Return the folder of `config`'s run."""
        check_type("config", config, RunConfig, "a RunConfig (see scidl.make_config)", StoreError)
        return self.root / config.hash

    def has(self, config: RunConfig) -> bool:
        """Return whether the store holds a finished, intact run of `config` (a damaged folder is
        not a run: it is set aside and retrained)."""
        path = self.path(config)
        if not (path / "summary.json").exists():
            return False
        try:
            self._check(path)
        except StoreError:
            return False
        return True

    def _check(self, path: Path) -> RunConfig:
        """Return the config of the run folder `path` after checking that its files are complete and
        its config hashes to the folder name; StoreError names the first bad file."""
        for name in ("config.json", "summary.json", "metrics.parquet"):
            if not (path / name).is_file():
                raise StoreError(f"{path / name}: missing; the run folder {path} is incomplete")
        try:
            config = RunConfig.from_dict(read_json(path / "config.json"))
        except ConfigError as e:
            raise StoreError(f"{path / 'config.json'}: not a valid config ({e})") from None
        if config.hash != path.name:
            raise StoreError(f"{path / 'config.json'}: the config hashes to {config.hash}, not to its "
                             f"folder name {path.name} (edited or copied?)")
        summary = read_json(path / "summary.json")
        if not isinstance(summary, dict) or summary.get("status") not in ("finished", "diverged"):
            raise StoreError(f"{path / 'summary.json'}: not a run summary (a JSON object whose status is "
                             f"'finished' or 'diverged')")
        with open(path / "metrics.parquet", "rb") as f:  # a complete Parquet file ends with PAR1
            f.seek(0, os.SEEK_END)
            if f.tell() < 8 or (f.seek(-4, os.SEEK_END), f.read(4))[1] != b"PAR1":
                raise StoreError(f"{path / 'metrics.parquet'}: truncated (no Parquet footer)")
        verify_manifest(path)  # then the files are the ones written; are they the run's config's?
        _check_checkpoints(path, config, summary)
        return config

    def load(self, key: RunConfig | str) -> Run:
        """Return the finished run for a config or hash: RunNotFound (a KeyError) if there is none, StoreError
        (naming the file) if its folder is damaged."""
        if isinstance(key, RunConfig):
            key = key.hash
        if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{12}", key):
            raise RunNotFound(not_allowed("run", key, "must be a RunConfig or a 12-hex-digit run hash"))
        path = self.root / key
        if not (path / "summary.json").exists():
            raise RunNotFound(f"run={path.name!r} is not allowed: no finished run of that hash in {self.root}")
        config = self._check(path)
        metrics = read_parquet(path / "metrics.parquet")
        missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
        if missing or metrics.empty:
            raise StoreError(f"{path / 'metrics.parquet'}: lacks the column(s) {missing} or rows; the run "
                             f"folder is damaged")
        return Run(path, config, metrics, read_json(path / "summary.json"))

    def set_aside(self, name: str, reason: str) -> Path | None:
        """Move the damaged folder `name` to `.damaged-<name>-<time>` (kept for inspection, ignored
        by the store) and warn; return its new path."""
        path = self.root / name
        if not path.exists():
            return None
        target = self.root / f".damaged-{name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            os.rename(path, target)
        except OSError:  # another process set it aside or replaced it first
            return None
        warnings.warn(StoreWarning(f"run folder {path} is damaged ({reason}); moved to {target.name}"),
                      stacklevel=3)
        return target

    def begin(self, config: RunConfig) -> Path:
        """Return a fresh private work directory for training `config` (removes stale ones)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.clean_stale(config)
        work = self.root / f".tmp-{config.hash}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        (work / CHECKPOINTS).mkdir(parents=True)
        atomic_write_json(work / "config.json", config.to_dict())
        return work

    def clean_stale(self, config: RunConfig) -> None:
        """Remove work directories of `config` left by processes that no longer exist."""
        for work in self.root.glob(f".tmp-{config.hash}-*"):
            try:
                pid = int(work.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if not _alive(pid) or pid == os.getpid():
                shutil.rmtree(work, ignore_errors=True)

    def commit(self, work: Path, metrics: pd.DataFrame, summary: dict[str, Any]) -> Path:
        """Write metrics and summary (last), then publish the work directory atomically."""
        atomic_write_parquet(work / "metrics.parquet", metrics)
        summary_bytes = json_bytes(summary)
        write_manifest(work, {"summary.json": summary_bytes})  # every file's sha256, checked on every load
        atomic_write_bytes(work / "summary.json", summary_bytes)  # last: the marker of a finished run
        final = self.root / work.name.split("-")[1]
        if final.exists() and not (final / "summary.json").exists():
            self.set_aside(final.name, "no summary.json: an incomplete folder")
        elif final.exists():
            try:
                self._check(final)
            except StoreError as e:
                self.set_aside(final.name, str(e))
        try:
            os.rename(work, final)
        except OSError:  # another process published the same config first: keep theirs
            shutil.rmtree(work, ignore_errors=True)
        return final

    def runs(self) -> list[Run]:
        """Return every finished run in the store; damaged folders are skipped with a StoreWarning."""
        if not self.root.exists():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir() or not (d / "summary.json").exists():
                continue
            try:
                out.append(self.load(d.name))
            except StoreError as e:
                warnings.warn(StoreWarning(f"skipped a damaged run folder: {e}"), stacklevel=2)
        return out

    def index(self) -> pd.DataFrame:
        """Return one row per finished run: hash, flat config columns and summary columns."""
        rows = [{"hash": r.hash, **r.config.flat(), **_scalars(r.summary)} for r in self.runs()]
        return pd.DataFrame(rows)


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expected_checkpoint_steps(config: RunConfig) -> set[int]:
    """Return the steps a finished run of `config` saves checkpoints at (step 0 and the last included)."""
    t = config.train
    every = set(range(0, t.steps + 1, t.checkpoint_every)) if t.checkpoint_every else set()
    return every | {s for s in t.checkpoint_steps if s <= t.steps} | {0, t.steps}


_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def _state_shapes(config: RunConfig) -> dict[str, tuple[int, ...]]:
    """Return the state-dict shapes of the model `config` builds (on the meta device: no weights, no
    change to the global random state), cached per model and task."""
    d = config.to_dict()
    key = json.dumps([d["model"], d["task"]], sort_keys=True)
    if key not in _SHAPES:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = make_model(config.model, config.task)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES[key]


def _check_checkpoints(path: Path, config: RunConfig, summary: dict[str, Any]) -> None:
    """Raise StoreError unless the run folder `path` holds the checkpoints its config saves (all of
    them for a finished run; from step 0 on, none past the schedule, for a diverged one), each with
    the tensor names and shapes of the config's model (read from the safetensors headers only)."""
    from safetensors import safe_open

    folder = path / CHECKPOINTS
    if not folder.is_dir():
        raise StoreError(f"{folder}: missing or not a folder; the run folder is damaged")
    files = sorted(folder.iterdir())
    odd = [f.name for f in files if not re.fullmatch(r"step_\d{7}\.safetensors", f.name)]
    if odd:
        raise StoreError(f"{folder}: holds {odd[:3]}, not checkpoints (step_NNNNNNN.safetensors); the run folder "
                         f"is damaged")
    steps = {int(f.name[5:12]) for f in files}
    expected = expected_checkpoint_steps(config)
    if (summary.get("status") == "finished" and steps != expected) or not steps <= expected or 0 not in steps:
        missing, extra = sorted(expected - steps)[:5], sorted(steps - expected)[:5]
        raise StoreError(f"{folder}: checkpoints at {len(steps)} steps do not match the config's schedule "
                         f"(missing {missing}, unexpected {extra}); the run folder is damaged")
    want = _state_shapes(config)
    for f in files:
        try:
            with safe_open(str(f), "pt") as st:
                got = {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise StoreError(f"{f}: cannot be read as safetensors ({type(e).__name__}); the checkpoint is damaged") \
                from None
        if got != want:
            diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[:3]
            raise StoreError(f"{f}: tensors {diff} have shapes {[got.get(k) for k in diff]}, but the run's config "
                             f"builds {[want.get(k) for k in diff]}; the checkpoint is not this run's")


def save_checkpoint(work: Path, step: int, model: torch.nn.Module) -> None:
    """Save the model's state at `step` as safetensors, atomically."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = work / CHECKPOINTS / checkpoint_name(step)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, tmp)
    os.replace(tmp, path)


def as_store(store: RunStore | str | os.PathLike | None) -> RunStore:
    """Return `store` as a RunStore: a RunStore, a folder path, or None (the default store)."""
    return store if isinstance(store, RunStore) else RunStore(store)
