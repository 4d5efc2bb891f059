"""The result store keeps an unchanged family as the object it recorded before.

Renderers convert a probe family to text once per object, so a run whose values
did not change must hand them the previous objects (a 1 s probe's families are
mostly the same from one second to the next).
"""

from __future__ import annotations

from exporter.db.session import Health
from exporter.metrics import StoreCollector
from exporter.samples import Family, counter, gauge
from exporter.store import ResultStore


def families(longest: float, running: float = 0.0) -> list[Family]:
    return [
        gauge("gecko_longest_active_query_seconds", "x", longest),
        gauge("gecko_slow_queries_running", "x", running),
        gauge("gecko_maintenance_running", "x", labelnames=("kind",),
              values={("vacuum",): 0.0, ("backup",): 0.0}),
    ]  # fmt: skip


def persistent(total: float) -> list[Family]:
    return [counter("gecko_slow_queries_total", "x", total)]


def record(store: ResultStore, fams: list[Family], total: float = 0.0) -> None:
    store.record("slow_queries", success=True, duration_seconds=0.001, families=fams,
                 persistent=persistent(total))  # fmt: skip


def test_an_equal_run_keeps_the_previous_objects_and_still_counts() -> None:
    store = ResultStore()
    store.register("slow_queries", 1, 2)
    record(store, families(0.5))
    first = store.snapshot()["slow_queries"]
    version = store.version
    record(store, families(0.5))
    second = store.snapshot()["slow_queries"]
    assert second.families is first.families
    assert second.persistent is first.persistent
    # the run itself is still a change: gecko_probe_runs_total and the duration move on
    assert second.runs == first.runs + 1
    assert store.version == version + 1


def test_only_the_changed_family_is_a_new_object() -> None:
    store = ResultStore()
    store.register("slow_queries", 1, 2)
    record(store, families(0.5))
    first = store.snapshot()["slow_queries"]
    record(store, families(0.75), total=1.0)
    second = store.snapshot()["slow_queries"]
    assert second.families[0] is not first.families[0]
    assert second.families[0].samples[0].value == 0.75
    assert second.families[1] is first.families[1]
    assert second.families[2] is first.families[2]
    assert second.persistent[0].samples[0].value == 1.0


def test_a_family_that_comes_or_goes_keeps_the_others_by_name() -> None:
    store = ResultStore()
    store.register("slow_queries", 1, 2)
    record(store, families(0.5))
    first = store.snapshot()["slow_queries"].families
    record(store, families(0.5)[1:])
    second = store.snapshot()["slow_queries"].families
    assert [f.name for f in second] == [f.name for f in first[1:]]
    assert all(a is b for a, b in zip(second, first[1:], strict=True))
    record(store, families(0.5))
    third = store.snapshot()["slow_queries"].families
    assert third[0] == first[0] and third[1] is first[1] and third[2] is first[2]


def test_the_collector_hands_renderers_the_same_noted_object_for_an_unchanged_family() -> None:
    """The HELP note is applied per family once: an unchanged family stays the same object
    for the renderer (which converts per object) when another family of the probe changed."""
    store = ResultStore()
    store.register("slow_queries", 1, 2)
    collector = StoreCollector(store, Health(), up_stale_seconds=10)
    record(store, families(0.5))
    before = {f.name: f for f in collector.pieces().families}
    record(store, families(0.75))
    after = {f.name: f for f in collector.pieces().families}
    assert after["gecko_slow_queries_running"] is before["gecko_slow_queries_running"]
    assert after["gecko_maintenance_running"] is before["gecko_maintenance_running"]
    assert (
        after["gecko_longest_active_query_seconds"]
        is not before["gecko_longest_active_query_seconds"]
    )
    assert after["gecko_slow_queries_running"].documentation.endswith(
        "Sampled by probe slow_queries every 1s."
    )
