"""Model cards and pushing to the Hub (offline: never touches the network)."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time

import httpx2
import huggingface_hub
import pytest
import yaml
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError

from prune_core import export
from prune_core.prune import drop_layers, save_model
from prune_core.testing import tiny_model, tiny_tokenizer

TOKEN = "hf_secretTOKEN1234567890"
HEALING = {"preset": "quick-cpu", "rank": 8, "lr": 3e-4, "steps": 40, "source": "shakespeare"}


@pytest.fixture
def saved(tmp_path):
    model = tiny_model("llama", num_layers=6)
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    pruned = drop_layers(model, [2, 3], method="similarity")
    return save_model(pruned, tiny_tokenizer(), tmp_path / "pruned")


def _front_matter(text: str) -> dict:
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.S).group(1))


def test_layer_ranges_and_hub_ids(tmp_path):
    assert export.layer_ranges([28, 21, 22, 23]) == "21-23, 28"
    assert export.layer_ranges([]) == "none"
    assert export.is_hub_id("org/model-1.5B") and not export.is_hub_id("model")
    assert not export.is_hub_id(str(tmp_path)) and not export.is_hub_id("/abs/path")


def test_card_names_base_layers_method_healing_and_numbers(saved):
    measured = {"base": {"loss": 2.4123, "probe_accuracy": 0.61}, "pruned": {"loss": 3.1}}
    readme = export.write_model_card(saved, {"healing": HEALING, "measured": measured, "seconds": 12})
    text = readme.read_text()
    meta = _front_matter(text)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "layer-pruning" in meta["tags"]
    assert "with 2 of 6 layers removed" in text and "| 6 -> 4 |" in text
    assert "| removed layers (0-based, original numbering) | 2-3 |" in text
    assert "| method | the block with the smallest angular distance" in text
    assert "| rank | 8 |" in text and "| preset | quick-cpu |" in text
    assert "| model | loss | probe_accuracy |" in text and "| base | 2.412 | 0.61 |" in text
    assert "| pruned | 3.1 |  |" in text
    assert "- seconds: 12" in text
    assert "layer_range: [0, 2]" in text and "layer_range: [4, 6]" in text  # mergekit: the kept slices
    stored = json.loads((saved / "prune.json").read_text())
    assert stored["removed_layers"] == [2, 3] and stored["healing"]["rank"] == 8


def test_measured_numbers_accumulate_across_writes(saved):
    export.write_model_card(saved, {"measured": {"pruned": {"loss": 3.1}}})
    export.write_model_card(saved, {"measured": {"healed": {"loss": 2.6}}})
    info, card = export.read_export_info(saved)
    assert card["measured"] == {"pruned": {"loss": 3.1}, "healed": {"loss": 2.6}}
    assert info["removed_layers"] == [2, 3] and info["base_num_layers"] == 6


def test_unhealed_card_says_so_and_local_base_is_kept_out_of_metadata(tmp_path):
    model = tiny_model("llama", num_layers=4)
    model.config.name_or_path = str(tmp_path)  # a local folder is not a valid Hub base_model
    folder = save_model(drop_layers(model, [1]), tiny_tokenizer(), tmp_path / "out")
    text = export.write_model_card(folder).read_text()
    assert "base_model" not in _front_matter(text)
    assert "Not healed" in text and "mergekit" not in text
    assert "| method | layers chosen by hand |" in text


def test_info_falls_back_to_config_json(saved):
    (saved / "prune.json").unlink()
    info, card = export.read_export_info(saved)
    assert info["removed_layers"] == [2, 3] and info["method"] == "similarity" and card == {}


def test_card_of_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        export.write_model_card(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------------------------
# push_to_hub: every failure is fast, clear, and never shows the token


@pytest.fixture
def no_stored_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_push_without_token_asks_for_hf_token(saved, no_stored_token):
    with pytest.raises(ValueError, match="HF_TOKEN"):
        export.push_to_hub(saved, "me/pruned")


@pytest.mark.parametrize("repo_id", ["", "no-owner", "me/bad name", "a/b/c", "me/"])
def test_push_rejects_bad_repo_ids_before_any_network(saved, no_stored_token, repo_id):
    with pytest.raises(ValueError, match="bad repo id"):
        export.push_to_hub(saved, repo_id, token=TOKEN)


def test_push_refuses_a_folder_without_weights(tmp_path, no_stored_token):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        export.push_to_hub(tmp_path, "me/pruned", token=TOKEN)


def test_push_offline_mode_is_a_connection_error(saved, no_stored_token, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE"):
        export.push_to_hub(saved, "me/pruned", token=TOKEN)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:{port}", "https://no-such-host.invalid"])
def test_push_without_network_fails_fast_with_a_clear_message(saved, no_stored_token, monkeypatch, endpoint):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach the Hugging Face Hub") as err:
        export.push_to_hub(saved, "me/pruned", endpoint=endpoint.format(port=_closed_port()), timeout=1.0)
    assert time.monotonic() - start < 5
    assert TOKEN not in str(err.value)


def test_push_to_a_silent_server_times_out_instead_of_hanging(saved, no_stored_token):
    with socket.socket() as server:  # accepts connections (kernel backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="timed out"):
            export.push_to_hub(saved, "me/pruned", token=TOKEN, endpoint=f"http://127.0.0.1:{server.getsockname()[1]}",
                               timeout=0.5)
        assert time.monotonic() - start < 5


@pytest.fixture
def hub_server():
    """A local stand-in for the Hub's token check: answers ``status`` to /api/whoami-v2 and records the headers."""
    seen: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        status = 200

        def do_GET(self):  # noqa: N802 (http.server's naming)
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            self.send_response(Handler.status)
            self.end_headers()
            self.wfile.write(b'{"name": "me"}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_whoami_sends_the_token_and_explains_a_rejected_one(hub_server):
    handler, endpoint, seen = hub_server
    assert export.whoami(endpoint, TOKEN, timeout=2) == {"name": "me"}
    assert seen == {"path": "/api/whoami-v2", "auth": f"Bearer {TOKEN}"}
    handler.status = 401
    with pytest.raises(ValueError, match="rejected") as err:
        export.whoami(endpoint, TOKEN, timeout=2)
    assert TOKEN not in str(err.value)
    handler.status = 503
    with pytest.raises(ConnectionError, match="503"):
        export.whoami(endpoint, TOKEN, timeout=2)


class FakeApi:
    """Records what push_to_hub asks of the Hub client."""

    calls: list = []
    fail_with: int | None = None

    def __init__(self, endpoint=None, token=None):
        FakeApi.calls.append(("init", endpoint, token))

    def create_repo(self, repo_id, **kwargs):
        if FakeApi.fail_with:
            response = httpx2.Response(FakeApi.fail_with, request=httpx2.Request("POST", "http://hub/api/repos"))
            raise HfHubHTTPError("refused", response=response)
        FakeApi.calls.append(("create_repo", repo_id, kwargs))
        return f"http://hub/{repo_id}"

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))


@pytest.fixture
def fake_hub(monkeypatch, no_stored_token):
    FakeApi.calls, FakeApi.fail_with = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(export, "whoami", lambda endpoint, token, timeout: {"name": "me"})
    return FakeApi


def test_push_uploads_the_folder_privately_with_the_env_token(saved, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert export.push_to_hub(saved, "me/pruned") == "http://hub/me/pruned"
    (_, _, token), (_, repo, create), (_, upload) = fake_hub.calls
    assert token == TOKEN and repo == "me/pruned" and create["private"] is True
    assert upload["folder_path"] == saved and upload["repo_id"] == "me/pruned"


def test_push_argument_token_wins_and_public_is_allowed(saved, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    export.push_to_hub(saved, "me/pruned", token=TOKEN, private=False)
    assert fake_hub.calls[0][2] == TOKEN and fake_hub.calls[1][2]["private"] is False


@pytest.mark.parametrize(("status", "error", "message"), [(401, ValueError, "rejected"), (403, ValueError, "write"),
                                                          (500, ConnectionError, "500")])
def test_push_http_errors_are_explained(saved, fake_hub, status, error, message):
    fake_hub.fail_with = status
    with pytest.raises(error, match=message) as err:
        export.push_to_hub(saved, "me/pruned", token=TOKEN)
    assert TOKEN not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# prune-core export


def test_cli_mergekit_from_a_folder_and_from_flags(saved, tmp_path, capsys):
    from prune_core.cli import main

    assert main(["export", "--model", str(saved), "--mergekit"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["merge_method"] == "passthrough"
    assert [s["sources"][0]["layer_range"] for s in printed["slices"]] == [[0, 2], [4, 6]]
    out = tmp_path / "cut.yml"
    assert main(["export", "--mergekit", str(out), "--base-model", "org/base", "--num-layers", "30",
                 "--layers", "21-26"]) == 0
    written = yaml.safe_load(out.read_text())
    assert [s["sources"][0]["layer_range"] for s in written["slices"]] == [[0, 21], [27, 30]]
    assert written["slices"][0]["sources"][0]["model"] == "org/base"


def test_cli_card_entries_reach_the_readme(saved, tmp_path):
    from prune_core.cli import main

    card = tmp_path / "card.json"
    card.write_text(json.dumps({"measured": {"healed": {"loss": 2.6}}}))
    assert main(["export", "--model", str(saved), "--card", str(card)]) == 0
    assert "| healed | 2.6 |" in (saved / "README.md").read_text()


def test_cli_errors_name_the_missing_flag(saved, tmp_path, capsys, no_stored_token):
    from prune_core.cli import main

    assert main(["export", "--model", str(saved)]) == 2
    assert "--push REPO_ID" in capsys.readouterr().err
    assert main(["export", "--mergekit"]) == 2
    assert "--base-model, --num-layers and --layers" in capsys.readouterr().err
    assert main(["export", "--model", str(saved), "--push", "me/pruned"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    assert main(["export", "--push", "me/pruned"]) == 2
    assert "--model DIR" in capsys.readouterr().err


EVAL_JSON = {"model": "pruned", "layers": 4, "loss": {"loss": 3.78, "perplexity": 43.9, "normalized_loss": 0.35,
                                                     "tokens": 2040, "data": "python-docs"},
             "probe": {"accuracy": 0.55, "n": 20, "chance": 0.25}, "mc": {"boolq": {"accuracy": 0.6, "n": 10}},
             "lm_eval": {"arc_easy": {"acc,none": 0.41, "alias": "arc_easy"}}}


def test_measured_from_eval_keeps_the_numbers():
    row = export.measured_from_eval(EVAL_JSON)
    assert row == {"loss": 3.78, "perplexity": 43.9, "loss/log(V)": 0.35, "capital probe": 0.55,
                   "boolq accuracy": 0.6, "arc_easy acc,none": 0.41}
    with pytest.raises(ValueError, match="prune-core eval --out"):
        export.measured_from_eval({"model": "x"})


def test_cli_eval_results_become_rows_of_the_measured_table(saved, tmp_path):
    from prune_core.cli import main

    path = tmp_path / "eval.json"
    path.write_text(json.dumps(EVAL_JSON))
    assert main(["export", "--model", str(saved), "--eval", str(path), "--eval", f"healed={path}"]) == 0
    text = (saved / "README.md").read_text()
    assert "| pruned | 3.78 | 43.9 | 0.35 | 0.55 | 0.6 | 0.41 |" in text and "| healed | 3.78 |" in text
