"""Blueprints: what grows into the seed slots.

- `blueprints.ir`: BlueprintIR, the validated op graph of a seed (symbolic widths).
- `blueprints.catalog`: the built-in blueprints (`CATALOG`).
- `blueprints.lowering`: IR plus a channel count to a `Plan` (functional fx graph).
- `blueprints.compiler`: Tezzeret, cached builds and background `torch.compile`.
- `blueprints.evaluate`: Urabrask, params, FLOPs, latency and numerical checks.
- `blueprints.library`: Urza, the persistent SQLite library of blueprints.
- `blueprints.kernels`: the slot's blend, fused in Triton on CUDA.

Depends on torch, triton and pydantic only; nothing here imports `esper_env` or `agents`.
"""
