"""The LLM engine: bounded, rate-limited, retried, cached and counted calls.

Plain asyncio; Dagster appears only in `resource.py`. Every chat and embedding call of
every asset goes through `LLMEngine`.
"""

from resources.llm.engine import LLMEngine
from resources.llm.items import ChatItem, EmbedItem, ItemResult
from resources.llm.metrics import BatchMetrics
from resources.llm.settings import LLMSettings

__all__ = ["BatchMetrics", "ChatItem", "EmbedItem", "ItemResult", "LLMEngine", "LLMSettings"]
