"""Export a pruned or healed model: a model card that says what was done and measured, and a push to the Hub.

The folder itself (safetensors, config, tokenizer, ``prune.json``) is written by :func:`prune_core.prune.save_model`;
:func:`model_card_markdown` renders its README.md and :func:`write_model_card` rewrites it later, when healing or
evaluation has added settings and numbers.

The ``card`` dict may hold, besides free-form entries shown as a list:
``similarity`` (dict: metric, source, n_samples, max_length, distance, ...), ``healing`` (dict of HealConfig fields
and the data source), and ``measured`` (``{model name: {metric: value}}``, e.g. ``{"base": {"loss": 2.41}}``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from prune_core.prune import mergekit_config

PAPER = "[Gromov et al. 2024](https://arxiv.org/abs/2403.17887)"
INFO_KEYS = ("removed_layers", "base_num_layers", "method", "base_model")
SECTIONS = ("similarity", "healing", "measured")
TOKEN_REJECTED = "the Hugging Face token was rejected (401): check HF_TOKEN or the token you typed"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_hub_id(name: str | None) -> bool:
    """True for ``"org/name"`` ids that are not also a path on this machine."""
    return bool(name) and bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def layer_ranges(layers) -> str:
    """``[21, 22, 23, 28] -> "21-23, 28"`` (0-based, inclusive)."""
    parts: list[list[int]] = []
    for i in sorted(set(layers)):
        if parts and parts[-1][1] == i - 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in parts) or "none"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _table(rows: dict) -> list[str]:
    return ["| setting | value |", "|---|---|", *(f"| {k} | {_fmt(v)} |" for k, v in rows.items()), ""]


def _measured_table(measured: dict) -> list[str]:
    """Models as rows, metrics as columns (a metric a model lacks is left blank)."""
    metrics = list(dict.fromkeys(m for values in measured.values() for m in values))
    lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, values in measured.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(values.get(m)) for m in metrics) + " |")
    return lines + [""]


def _front_matter(base: str) -> list[str]:
    lines = ["---"] + ([f"base_model: {base}"] if is_hub_id(base) else [])
    return lines + ["library_name: transformers", "pipeline_tag: text-generation",
                    "tags:", "  - layer-pruning", "  - prune-core", "---", ""]


METHODS = {"similarity": "the block with the smallest angular distance between its input and output (the paper)",
           "deepest": "the deepest layers except the final one (the paper's simpler heuristic)",
           "manual": "layers chosen by hand"}


def _describe_method(method: str | None) -> str:
    steps = [METHODS.get(m, m) for m in (method or "").split("+") if m]
    return "; then ".join(steps) or "none"


def _summary(info: dict, base: str) -> list[str]:
    removed, total = info.get("removed_layers") or [], info.get("base_num_layers")
    return [f"# {base} with {len(removed)} of {total} layers removed", "",
            f"Made with Layer Pruning Explorer (`prune-core`), following {PAPER}, *The Unreasonable Ineffectiveness "
            "of the Deeper Layers*.", "",
            "## What was removed", "", *_table({
                "base model": f"`{base}`", "layers": f"{total} -> {total - len(removed) if total else '?'}",
                "removed layers (0-based, original numbering)": layer_ranges(removed),
                "method": _describe_method(info.get("method"))})]


def _reproduce(info: dict, base: str) -> list[str]:
    removed, total = info.get("removed_layers") or [], info.get("base_num_layers")
    if not (is_hub_id(base) and removed and total):
        return []
    yaml = mergekit_config(base, total, removed)
    return ["## Rebuild with mergekit", "", "The same cut from the original checkpoint (no healing):", "",
            "```yaml", yaml.rstrip(), "```", ""]


def similarity_card(result, layers: list[int]) -> dict:
    """The model card's "how the block was chosen" section for ``layers`` picked from a similarity result."""
    meta = result.metadata
    return {"similarity": {"calibration data": meta["source"], "metric": meta["metric"],
                           "samples": meta["n_samples"], "max length": meta["max_length"],
                           "distance of the removed block": round(float(result.distances[len(layers), layers[0]]), 4)}}


def model_card_markdown(info: dict, card: dict | None = None) -> str:
    """The model card (README.md) of a pruned or healed model.

    ``info`` is :func:`prune_core.prune.prune_info` (removed_layers, base_num_layers, method, base_model);
    ``card`` adds the sections described in this module's docstring.
    """
    card = dict(card or {})
    base = str(info.get("base_model") or "unknown")
    lines = _front_matter(base) + _summary(info, base)
    if card.get("similarity"):
        lines += ["## How the block was chosen", "", *_table(card["similarity"])]
    healing = card.get("healing")
    lines += ["## Healing", "", *(_table(healing) if healing else
                                  ["Not healed: the weights are the base model's, minus the removed layers.", ""])]
    if card.get("measured"):
        lines += ["## Measured", "", *_measured_table(card["measured"])]
    other = {k: v for k, v in card.items() if k not in SECTIONS}
    if other:
        lines += ["## Notes", "", *(f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in other.items()), ""]
    lines += _reproduce(info, base)
    return "\n".join(lines).rstrip() + "\n"


def measured_from_eval(result: dict) -> dict:
    """The numbers of a ``prune-core eval --out`` JSON as one row of the card's ``measured`` table."""
    row: dict = {}
    loss = result.get("loss") or {}
    for key, label in (("loss", "loss"), ("perplexity", "perplexity"), ("normalized_loss", "loss/log(V)")):
        if isinstance(loss.get(key), (int, float)):
            row[label] = loss[key]
    if isinstance((result.get("probe") or {}).get("accuracy"), (int, float)):
        row["capital probe"] = result["probe"]["accuracy"]
    for spec, values in (result.get("mc") or {}).items():
        row[f"{spec} accuracy"] = values.get("accuracy")
    for task, values in (result.get("lm_eval") or {}).items():
        for metric, value in (values.items() if isinstance(values, dict) else []):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"{task} {metric}"] = value
    if not row:
        raise ValueError("no measured numbers found: expected the JSON written by `prune-core eval --out FILE` "
                         "(keys loss, probe, mc or lm_eval)")
    return row


def _merge(old: dict, new: dict) -> dict:
    """``new`` over ``old``; the ``measured`` tables are merged per model instead of replaced."""
    merged = {**old, **new}
    if isinstance(old.get("measured"), dict) and isinstance(new.get("measured"), dict):
        merged["measured"] = {**old["measured"], **new["measured"]}
    return merged


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_export_info(folder: str | Path) -> tuple[dict, dict]:
    """``(info, card)`` of a saved model folder, from its ``prune.json`` (or the ``prune_*`` entries of config.json)."""
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved model folder")
    meta_file = folder / "prune.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
    else:
        config = json.loads((folder / "config.json").read_text())
        meta = {k: config.get(f"prune_{k}") for k in INFO_KEYS}
        meta["base_num_layers"] = meta["base_num_layers"] or config.get("num_hidden_layers")
    info = {k: meta.get(k) for k in INFO_KEYS}
    info["removed_layers"] = info["removed_layers"] or []
    return info, {k: v for k, v in meta.items() if k not in INFO_KEYS}


def write_model_card(folder: str | Path, card: dict | None = None) -> Path:
    """Add ``card`` entries to a saved model folder's ``prune.json`` and rewrite its README.md; returns README.md."""
    folder = Path(folder).expanduser()
    info, old_card = read_export_info(folder)
    merged = _merge(old_card, card or {})
    _write_atomic(folder / "prune.json", json.dumps({**info, **merged}, indent=2, default=str))
    readme = folder / "README.md"
    _write_atomic(readme, model_card_markdown(info, merged))
    return readme


# --------------------------------------------------------------------------------------------------------------
# Hub


def whoami(endpoint: str, token: str, timeout: float = 10.0) -> dict:
    """Ask the Hub who ``token`` belongs to, within ``timeout`` seconds: checks the network and the token at once.

    (The Hub client itself waits without a time limit, so an unresponsive network would hang the push.)
    """
    request = urllib.request.Request(f"{endpoint.rstrip('/')}/api/whoami-v2",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        if err.code == 401:
            raise ValueError(TOKEN_REJECTED) from None
        raise ConnectionError(f"the Hugging Face Hub at {endpoint} answered {err.code} to a token check") from None
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, a non-JSON answer
        reason = getattr(err, "reason", None) or err
        raise ConnectionError(f"cannot reach the Hugging Face Hub at {endpoint} ({reason}); check the network "
                              f"connection, or copy the saved folder to a machine that has one") from None


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = (token or "").strip() or os.environ.get("HF_TOKEN", "").strip() or get_token()
    if not token:
        raise ValueError("no Hugging Face token: set the HF_TOKEN environment variable (or type a token in the app); "
                         "create one with write access at https://huggingface.co/settings/tokens")
    return token


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: save the model first (prune-core prune --out DIR)")
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"{folder} has no .safetensors weights: not a saved model folder")


def push_to_hub(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = True,
                endpoint: str | None = None, timeout: float = 10.0, commit_message: str | None = None) -> str:
    """Upload a saved model folder to the Hugging Face Hub (created private unless ``private=False``); returns its URL.

    The token comes from ``token``, else the ``HF_TOKEN`` environment variable, else a ``huggingface-cli login``;
    it is passed to the Hub client only, never logged or written. Offline (``HF_HUB_OFFLINE=1`` or an unreachable
    endpoint) raises ConnectionError within ``timeout`` seconds; a bad repo id, token or permission raises ValueError.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError

    folder = Path(folder).expanduser()
    _check_folder(folder)
    if not _HUB_ID.match(repo_id or ""):
        raise ValueError(f"bad repo id {repo_id!r}: use 'user-or-org/model-name' (letters, digits, '-', '_', '.')")
    if constants.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set: pushing to the Hub needs a network connection")
    token = _resolve_token(token)
    endpoint = endpoint or constants.ENDPOINT
    whoami(endpoint, token, timeout)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                          commit_message=commit_message or "Upload pruned model (prune-core)")
    except HFValidationError as err:
        raise ValueError(f"bad repo id {repo_id!r}: {err}") from None
    except HfHubHTTPError as err:
        raise _http_error(err, repo_id) from None
    except HTTPError as err:  # transport errors: DNS, refused, timeout
        raise ConnectionError(f"lost the connection to the Hugging Face Hub while pushing {repo_id!r}: "
                              f"{type(err).__name__}") from None
    return str(url)


def _http_error(err, repo_id: str) -> Exception:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401:
        return ValueError(TOKEN_REJECTED)
    if status == 403:
        return ValueError(f"the token may not write to {repo_id!r} (403): use a token with write access to that "
                          f"user or organisation")
    return ConnectionError(f"the Hugging Face Hub answered {status} while pushing {repo_id!r}")
