"""HTTP(S) and ``file:`` retrieval: conditional GET, limits, redirects, address guard, statuses.

``client`` is the Fetcher; ``guard`` decides which addresses it may reach; ``body`` reads
a body under the size cap; ``outcome`` turns a response into a result; ``files`` serves
``file:`` sources; ``failure`` classifies what goes wrong.
"""

from feedsvc.fetch.client import Fetcher
from feedsvc.fetch.guard import AddressPolicy

__all__ = ["AddressPolicy", "Fetcher"]
