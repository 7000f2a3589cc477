"""Kasmina: host networks, seed slots and the seed lifecycle."""

from esper_env.kasmina.export import BakedSeed, export_static
from esper_env.kasmina.host import CifarHost, build_host
from esper_env.kasmina.lifecycle import TRANSITIONS, Transition, blend_alpha
from esper_env.kasmina.model import MorphogeneticModel, ResumableHost, SeedFactory
from esper_env.kasmina.slot import SeedSlot
from esper_env.kasmina.wrap import wrap

__all__ = [
    "TRANSITIONS",
    "BakedSeed",
    "CifarHost",
    "MorphogeneticModel",
    "ResumableHost",
    "SeedFactory",
    "SeedSlot",
    "Transition",
    "blend_alpha",
    "build_host",
    "export_static",
    "wrap",
]
