"""XLA's CPU settings under which MJX compiles to fast code, set before JAX starts a backend.

XLA's newer CPU fusion emitters compile MJX's body-tree recursions (forward
kinematics over a chain of bodies, unrolled level by level) into fusions that
recompute the whole chain for every output element: on SwimmerSwimmer6 (a
7-level chain) the kinematics of 16 envs took 6.7 ms with them and 0.37 ms
without, and a whole float64 step 35x longer (benchmarks/xla_cpu_flags.py).
So, unless the user has decided, ``XLA_FLAGS`` gets
``--xla_cpu_use_fusion_emitters=false`` (XLA's previous CPU emitters) when
this module is imported, which ``jacobian_wrappers`` does first. It only
affects XLA's CPU backend, and only takes effect if no JAX backend has started
yet: import ``jacobian_wrappers`` before running JAX code, or set the flag
yourself.
``DYNAMIC_SPARSITY_XLA_FLAGS=off`` leaves ``XLA_FLAGS`` alone, and so does a
jaxlib with a GPU or TPU plugin (unless ``JAX_PLATFORMS=cpu``): MJX then runs on
the accelerator, which the flag does not concern.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["CPU_FLAG", "configure_xla_cpu"]

#: The flag this package adds to ``XLA_FLAGS``.
CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"
_OPT_OUT = "DYNAMIC_SPARSITY_XLA_FLAGS"


def configure_xla_cpu() -> bool:
    """Add :data:`CPU_FLAG` to ``XLA_FLAGS`` unless the user set that flag or opted out.

    Returns:
        Whether the flag is in ``XLA_FLAGS`` now.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    name = CPU_FLAG.split("=")[0]
    if name in flags:
        return CPU_FLAG in flags  # the user's own choice
    if os.environ.get(_OPT_OUT, "").lower() == "off":
        return False
    if _accelerator_jaxlib():
        return False  # the flag tunes XLA's CPU backend only; an accelerator runs MJX here
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            f"JAX started before jacobian_wrappers was imported, so XLA_FLAGS={CPU_FLAG} "
            "could not be set: on a CPU, MJX steps may then run many times slower. Import "
            "jacobian_wrappers first, or set the flag in the environment.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_FLAG}".strip()
    return True


def _accelerator_jaxlib() -> bool:
    """Whether JAX will run on a GPU or TPU.

    True when an accelerator plugin is installed and ``JAX_PLATFORMS`` does not
    ask for the CPU.
    """
    import importlib.util

    if os.environ.get("JAX_PLATFORMS", "").lower().startswith("cpu"):
        return False
    plugins = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_rocm60_plugin", "libtpu")
    return any(importlib.util.find_spec(name) is not None for name in plugins)


configure_xla_cpu()
