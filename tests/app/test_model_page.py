"""The landing page and the Model and data page, through Streamlit's AppTest on tiny models."""

from __future__ import annotations

import pytest
from apphelpers import finish_job, load_tiny, open_app

pytestmark = pytest.mark.app


def test_landing_starts_without_a_model_and_links_every_page():
    at = open_app()
    assert "No model is loaded" in at.info[0].value
    assert at.button(key="home_load_default").label == "Load the default model"
    assert "job" not in at.session_state  # nothing is loaded until asked


def test_landing_autoloads_the_configured_model(monkeypatch):
    monkeypatch.setenv("PRUNE_APP_AUTOLOAD", "tiny:gpt2")
    at = open_app()
    finish_job(at)
    assert at.session_state["base"].source == "tiny:gpt2"
    at.run()  # a later visit does not load again
    assert at.session_state["job"].name == "load" and not at.info


def test_load_tiny_model_shows_its_summary_on_every_page():
    at = open_app()
    load_tiny(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "6"
    assert metrics["Device / dtype"] == "cpu · float32"
    assert "Memory check before loading: 289.4 kB of weights estimated" in at.caption[1].value
    at.switch_page("app.py").run()  # the entry point shows the Home page
    assert not at.info and {m.label: m.value for m in at.metric}["Layers"] == "6"


def test_missing_folder_is_refused_with_a_message():
    at = open_app("pages/1_Model_and_data.py")
    at.radio(key="model_kind").set_value("folder").run()
    at.text_input(key="model_folder").input("/nonexistent/model")
    at.button(key="model_load").click().run()
    job = finish_job(at)
    assert job.error is not None and not at.exception
    assert "/nonexistent/model" in at.error[0].value
    assert "base" not in at.session_state


def test_model_too_large_for_this_machine_is_refused(monkeypatch):
    from prune_core import system

    monkeypatch.setattr(system, "machine_info", lambda root=None: dict(
        total_memory_bytes=10_000, available_memory_bytes=10_000, cpus=2, gpus=[]))
    at = open_app("pages/1_Model_and_data.py")
    at.radio(key="model_kind").set_value("tiny").run()
    at.button(key="model_load").click().run()
    finish_job(at)
    assert "needs" in at.error[0].value and "available" in at.error[0].value
    assert "base" not in at.session_state


def test_empty_hub_id_is_refused_before_any_job():
    at = open_app("pages/1_Model_and_data.py")
    at.radio(key="model_kind").set_value("hub").run()
    at.button(key="model_load").click().run()
    assert "enter a hugging face hub id" in at.error[0].value
    assert "job" not in at.session_state


def test_uploaded_corpus_becomes_the_calibration_source():
    at = open_app("pages/1_Model_and_data.py")
    at.radio(key="data_kind").set_value("upload").run()
    text = "\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(50))
    at.file_uploader(key="data_upload").upload("corpus.txt", text.encode(), "text/plain")
    at.run()
    at.number_input(key="data_n_samples").set_value(4)
    at.button(key="data_apply").click().run()
    assert not at.error and not at.exception
    data = at.session_state["data"]
    assert data["source"].kind == "file" and data["n_samples"] == 4
    assert "upload.txt" in at.caption[-1].value


def test_binary_upload_is_refused_with_a_message():
    at = open_app("pages/1_Model_and_data.py")
    at.radio(key="data_kind").set_value("upload").run()
    at.file_uploader(key="data_upload").upload("corpus.txt", b"\xff\xfe\x00binary", "text/plain")
    at.run()
    assert "not UTF-8 text" in at.error[0].value
    assert at.button(key="data_apply").disabled and "data" not in at.session_state


def test_save_upload_checks_type_and_size(tmp_path):
    from ui.uploads import save_upload

    with pytest.raises(ValueError, match="allowed types are .txt, .jsonl, .csv"):
        save_upload("weights.bin", b"text", tmp_path)
    with pytest.raises(ValueError, match="the limit is 1 MB"):
        save_upload("big.txt", b"a" * (2**20 + 1), tmp_path, limit_mb=1)
    assert not list(tmp_path.iterdir())  # nothing written for a refused file
    assert save_upload("ok.csv", b"text\nhello", tmp_path).read_text() == "text\nhello"
