"""The benchmark cases, in the order they run. Each module has ``NAME``, ``TITLE`` and
``run(ctx) -> list[Result]``."""

CASES = (
    "mosaic_cost",
    "shared_sources",
    "cold_start",
    "glass_to_glass",
    "gateway",
    "jit",
    "frame_bus",
    "urldsl",
    "low_latency",
    "monitoring",
    "tile_economy",
    "jit_longgop",
    "jit_compare",
    "worker_costs",
    "tile_transport",
    "cluster",
    "jit_capacity",
)
