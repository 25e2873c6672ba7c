"""The pipeline pages on a tiny model: prerequisites, similarity, prune, heal, compare, evaluate, isolation."""

from __future__ import annotations

import time

import pytest
from apphelpers import finish_job, load_tiny, open_app

from prune_core.models import model_fingerprint

pytestmark = pytest.mark.app

PAGES = ["pages/2_Similarity.py", "pages/3_Prune.py", "pages/4_Heal.py", "pages/5_Compare.py", "pages/6_Evaluate.py",
         "pages/7_Export.py"]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    """Similarity results and runs go to this test's folders (the real default model is not used here)."""
    monkeypatch.setenv("PRUNE_CORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("page", PAGES)
def test_page_without_a_model_explains_what_to_do(page):
    at = open_app(page)
    assert not at.exception, at.exception
    assert "Load a model first" in at.info[0].value
    assert at.button(key="require_load_default").label == "Load the default model"


def test_heal_before_pruning_points_to_the_prune_page():
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/4_Heal.py").run()
    assert not at.exception and "Prune the model first" in at.info[0].value


def test_prune_deepest_layers_then_save_and_mergekit(tmp_path):
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/3_Prune.py").run()
    at.radio(key="prune_method").set_value("deepest").run()
    at.slider(key="prune_n").set_value(2).run()
    assert "Removes **2** of 6 layers: **3-4**" in at.markdown[0].value
    at.button(key="prune_run").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m for m in at.metric}
    assert metrics["Layers"].value == "4" and metrics["Layers"].delta == "-2"
    assert "layer_range: [0, 3]" in at.code[0].value and "layer_range: [5, 6]" in at.code[0].value
    at.text_input(key="prune_folder").input(str(tmp_path / "out"))
    at.button(key="prune_save").click().run()
    assert "Saved to" in at.success[-1].value
    assert (tmp_path / "out" / "config.json").is_file()
    at.button(key="prune_save").click().run()  # a second save must not overwrite silently
    assert "already holds files" in at.error[0].value


def test_manual_range_out_of_bounds_is_refused():
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/3_Prune.py").run()
    at.radio(key="prune_method").set_value("manual").run()
    at.text_input(key="prune_manual").input("4-9").run()
    assert "out of range" in at.error[0].value and not at.button  # refused before anything can be pruned
    assert "pruned" not in at.session_state


def test_best_block_needs_the_similarity_first():
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/3_Prune.py").run()
    at.radio(key="prune_method").set_value("similarity").run()
    assert "compute it first" in at.info[0].value


def prune_deepest(at, n: int = 2) -> None:
    at.switch_page("pages/3_Prune.py").run()
    at.radio(key="prune_method").set_value("deepest").run()
    at.slider(key="prune_n").set_value(n).run()
    at.button(key="prune_run").click().run()
    assert not at.exception, at.exception


def start_heal(tmp_path, steps: int, max_length: int):
    """Load a tiny model, prune it, and start healing it with quick-cpu into ``tmp_path / "run"``."""
    at = open_app()
    load_tiny(at)
    prune_deepest(at)
    at.switch_page("pages/4_Heal.py").run()
    at.selectbox(key="heal_preset").set_value("quick-cpu").run()
    at.number_input(key="heal_steps").set_value(steps)
    at.number_input(key="heal_max_length").set_value(max_length)
    at.text_input(key="heal_dir").input(str(tmp_path / "run"))
    at.button(key="heal_start").click().run()
    return at


def test_heal_a_few_steps_then_merge_and_save(tmp_path):
    at = start_heal(tmp_path, steps=3, max_length=64)
    job = finish_job(at)
    assert job.error is None, job.error
    assert [p.done for p in job.history if "loss" in p.info] == [1, 2, 3]  # live loss reports, one per step
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Steps"] == "3" and metrics["After"] != "-"
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    at.button(key="heal_merge").click().run()
    assert "healed model is ready" in at.success[0].value
    at.text_input(key="heal_save_dir").input(str(tmp_path / "merged"))
    at.button(key="heal_save").click().run()
    assert (tmp_path / "merged" / "config.json").is_file(), [e.value for e in at.error]


def test_stopping_a_heal_keeps_a_resumable_run(tmp_path):
    at = start_heal(tmp_path, steps=2000, max_length=32)
    job = at.session_state["job"]
    deadline = time.monotonic() + 60
    while not any("loss" in p.info for p in job.history) and time.monotonic() < deadline:
        time.sleep(0.1)
    at.run()
    at.button(key="job_stop").click().run()  # the Stop button of the polling fragment
    finish_job(at)
    run = at.session_state["heal_result"]
    assert run.stopped and 0 < run.global_step < 2000
    assert "Resume" in at.info[0].value


def test_two_sessions_prune_different_blocks_and_the_shared_base_is_untouched():
    first, second = open_app(), open_app()
    load_tiny(first)
    load_tiny(second)
    base = first.session_state["base"]
    assert second.session_state["base"] is base  # one cached base model shared by both sessions
    before = model_fingerprint(base.model)
    prune_deepest(first, 1)
    second.switch_page("pages/3_Prune.py").run()
    second.radio(key="prune_method").set_value("manual").run()
    second.text_input(key="prune_manual").input("0-2").run()
    second.button(key="prune_run").click().run()
    assert first.session_state["pruned"].model.config.prune_removed_layers == [4]
    assert second.session_state["pruned"].model.config.prune_removed_layers == [0, 1, 2]
    assert model_fingerprint(base.model) == before and base.num_layers == 6


def test_evaluate_loss_and_probe_on_original_and_pruned():
    at = open_app()
    load_tiny(at)
    prune_deepest(at)
    at.switch_page("pages/6_Evaluate.py").run()
    assert at.multiselect(key="eval_models").value == ["original", "pruned"]
    at.number_input(key="eval_n_samples").set_value(4)
    at.number_input(key="eval_probe_limit").set_value(8)
    at.button(key="eval_run").click().run()
    job = finish_job(at)
    assert job.error is None, job.error
    table = at.dataframe[0].value
    assert list(table["model"]) == ["original", "pruned"]
    assert (table["loss"] > 0).all() and table["probe_accuracy"].between(0, 1).all()
    assert table["loss"].iloc[0] != table["loss"].iloc[1]  # two different models were evaluated


def test_compare_generations_side_by_side():
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/5_Compare.py").run()
    assert "Only the original model is loaded" in at.info[0].value
    prune_deepest(at)
    at.switch_page("pages/5_Compare.py").run()
    at.selectbox(key="compare_prompt").set_value("Custom prompt...").run()
    at.text_area(key="compare_custom").input("Hello there").run()
    at.slider(key="compare_tokens").set_value(8).run()
    at.button(key="compare_run").click().run()
    job = finish_job(at)
    assert job.error is None, job.error
    rows = at.session_state["compare"]
    assert [r["model"] for r in rows] == ["original", "pruned"] and all(r["prompt"] == "Hello there" for r in rows)
    assert [s.value for s in at.subheader] == ["original", "pruned"]
    assert {m.label for m in at.metric} == {"Latency", "Tokens / s"}
    assert "6 layers" in at.caption[0].value and "4 layers" in at.caption[1].value


def test_sweep_of_both_strategies_draws_the_figure(tmp_path):
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/1_Model_and_data.py").run()
    at.number_input(key="data_n_samples").set_value(4)
    at.number_input(key="data_max_length").set_value(32)
    at.button(key="data_apply").click().run()
    at.switch_page("pages/2_Similarity.py").run()
    at.button(key="sim_run").click().run()
    finish_job(at)
    at.switch_page("pages/6_Evaluate.py").run()
    assert at.multiselect(key="sweep_strategies").value == ["similarity", "deepest"]
    at.multiselect(key="sweep_fractions").set_value([0.2, 0.5])
    at.number_input(key="eval_probe_limit").set_value(4)
    at.text_input(key="sweep_dir").input(str(tmp_path / "sweep"))
    at.button(key="sweep_run").click().run()
    job = finish_job(at)
    assert job.error is None, job.error
    frame = at.session_state["sweep"]
    assert sorted(frame["n"]) == [0, 1, 1, 3, 3]  # unpruned, then 20% and 50% of 6 layers for both strategies
    assert at.selectbox(key="sweep_metric").value == "probe_accuracy"
    assert len(at.get("plotly_chart")) == 1
    assert (tmp_path / "sweep" / "results.csv").is_file()


def test_multiple_choice_from_an_uploaded_file():
    import json

    questions = [{"question": f"What is {i} + 1?", "choices": [str(i + 1), str(i + 2), str(i)], "answer": 0}
                 for i in range(4)]
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/6_Evaluate.py").run()
    at.multiselect(key="eval_tasks").set_value(["mc"]).run()
    assert at.button(key="eval_run").disabled  # no question file yet
    at.file_uploader(key="eval_mc_file").upload("qs.jsonl", "\n".join(map(json.dumps, questions)).encode(),
                                                "application/jsonl")
    at.run()
    at.button(key="eval_run").click().run()
    job = finish_job(at)
    assert job.error is None, job.error
    row = at.dataframe[0].value.iloc[0]
    assert row["model"] == "original" and 0 <= row["mc_accuracy"] <= 1 and row["mc_chance"] == pytest.approx(1 / 3)


def test_export_saves_then_push_fails_clearly_offline(tmp_path, monkeypatch):
    at = open_app()
    load_tiny(at)
    at.switch_page("pages/7_Export.py").run()
    assert "prune the model first" in at.info[0].value
    prune_deepest(at)
    at.switch_page("pages/7_Export.py").run()
    at.text_input(key="export_folder").input(str(tmp_path / "out"))
    at.button(key="export_save").click().run()
    assert (tmp_path / "out" / "config.json").is_file() and "Saved to" in at.success[0].value
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    at.text_input(key="export_repo").input("someone/tiny-pruned")
    at.text_input(key="export_token").input("hf_not_a_real_token").run()
    at.button(key="export_push").click().run()
    assert "Hub" in at.error[0].value and "hf_not_a_real_token" not in at.error[0].value
