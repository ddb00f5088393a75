"""On-disk, memory-mapped cache of teacher outputs."""

from lelp_lightning.cache.teacher_cache import CachedSplit, TeacherCache, cache_key
from lelp_lightning.cache.blocks import BlockBuild, PassTarget

__all__ = ["BlockBuild", "CachedSplit", "PassTarget", "TeacherCache", "cache_key"]
