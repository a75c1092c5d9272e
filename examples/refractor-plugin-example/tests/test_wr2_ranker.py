"""The example plugin's tests: the whole conformance kit, plus what is specific to wr2."""

from __future__ import annotations

from refractor_core.testing.conformance import RankerConformance
from refractor_core.testing.samples import default_samples


class TestWR2Ranker(RankerConformance):
    """Every ranker check of the conformance kit, run on the installed `wr2` ranker."""

    component_name = "wr2"


def test_orders_by_wr2_and_goof_weight_changes_the_order():
    from refractor_core.plugins import get_registry

    samples = default_samples()
    refined = samples.refined
    # a candidate with the lowest wR2 but a GooF far from 1
    odd = refined[1].model_copy(update={"wr2": 0.01, "goof": 4.0, "meta": {"conformance_id": "odd"}})
    registry = get_registry()
    plain = registry.build("ranker", "wr2", {}).rank(samples.reflections, [*refined, odd])
    assert plain[0].meta["conformance_id"] == "odd"
    weighted = registry.build("ranker", "wr2", {"goof_weight": 0.1}).rank(samples.reflections, [*refined, odd])
    assert weighted[0].meta["conformance_id"] == 0
    assert weighted[0].score_details["ranker"] == "wr2"
