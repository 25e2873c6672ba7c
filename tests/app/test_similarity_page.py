"""The Similarity page on a tiny model: the job, the heatmap, the l*(n) table, the chosen block, the Prune page."""

from __future__ import annotations

import pytest
from apphelpers import finish_job, load_tiny, open_app

pytestmark = pytest.mark.app


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNE_CORE_CACHE", str(tmp_path / "cache"))


def compute(at):
    at.switch_page("pages/1_Model_and_data.py").run()
    at.number_input(key="data_n_samples").set_value(8)
    at.number_input(key="data_max_length").set_value(64)
    at.button(key="data_apply").click().run()
    at.switch_page("pages/2_Similarity.py").run()
    assert "8 samples x 64 tokens" in at.caption[0].value
    at.button(key="sim_run").click().run()
    return finish_job(at)


def test_similarity_heatmap_table_and_block_choice(tmp_path):
    at = open_app()
    load_tiny(at)
    job = compute(at)
    assert job.error is None, job.error
    assert any(p.stage for p in job.history)  # the library reported progress to the job
    result = at.session_state["similarity"]
    assert result.num_layers == 6 and not at.exception
    assert len(at.get("plotly_chart")) == 2  # heatmap and min-distance curve
    at.slider(key="sim_n").set_value(2).run()
    start = result.best_start(2)
    assert f"removes layers **{start}-{start + 1}**" in at.success[0].value
    at.radio(key="sim_by").set_value("fraction").run()
    at.slider(key="sim_fraction").set_value(0.5).run()
    assert "Dropping **3** of 6 layers" in at.success[0].value
    at.switch_page("pages/3_Prune.py").run()  # the Prune page proposes the best block of the chosen size
    assert at.radio(key="prune_method").value == "similarity" and at.slider(key="prune_n").value == 3
    at.button(key="prune_run").click().run()
    assert at.session_state["pruned"].model.config.prune_removed_layers == result.best_layers(3)
    at.text_input(key="prune_folder").input(str(tmp_path / "out"))
    at.button(key="prune_save").click().run()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "How the block was chosen" in card and "angular_last" in card
    assert "layer_range" in (tmp_path / "out" / "mergekit.yml").read_text()


def test_changing_the_data_drops_the_stale_result():
    at = open_app()
    load_tiny(at)
    compute(at)
    assert "similarity" in at.session_state
    at.switch_page("pages/1_Model_and_data.py").run()
    at.selectbox(key="data_builtin").set_value("shakespeare")
    at.button(key="data_apply").click().run()
    assert "similarity" not in at.session_state
