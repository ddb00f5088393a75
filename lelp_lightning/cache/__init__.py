"""On-disk, memory-mapped cache of teacher outputs, and the one protocol that writes it."""

from lelp_lightning.cache.blocks import BlockBuild, PassTarget, build_entry
from lelp_lightning.cache.plan import CachePlan
from lelp_lightning.cache.teacher_cache import CachedSplit, TeacherCache, cache_key

__all__ = ["BlockBuild", "CachePlan", "CachedSplit", "PassTarget", "TeacherCache", "build_entry", "cache_key"]
