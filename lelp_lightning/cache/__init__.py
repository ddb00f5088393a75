"""On-disk, memory-mapped cache of teacher outputs."""

from lelp_lightning.cache.teacher_cache import CachedSplit, TeacherCache, cache_key

__all__ = ["CachedSplit", "TeacherCache", "cache_key"]
