"""moto's server, with DynamoDB's conditional writes made atomic.

DynamoDB evaluates a write's condition and applies the write as one step: of
many concurrent conditional writes to one item, exactly those whose condition
holds in some serial order succeed. moto 5 serves each request on its own
thread and checks the condition, then writes, with no lock between, so two
concurrent takers of one lease can both win. The lease protocol relies on that
guarantee, and the conformance suite tests it; this wrapper provides it by
serialising conditional single-item writes and transactions (unconditional
writes, BatchWriteItem's among them, are left to run in parallel).

Usage: python moto_atomic.py [moto_server's arguments]
"""

import functools
import inspect
import threading

from moto import server
from moto.dynamodb.models import DynamoDBBackend

_lock = threading.RLock()


def _atomic(method, always=False):
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs).arguments
        conditional = always or bound.get("condition_expression") or bound.get("expected")
        if not conditional:
            return method(self, *args, **kwargs)
        with _lock:
            return method(self, *args, **kwargs)

    return wrapper


DynamoDBBackend.put_item = _atomic(DynamoDBBackend.put_item)
DynamoDBBackend.delete_item = _atomic(DynamoDBBackend.delete_item)
DynamoDBBackend.update_item = _atomic(DynamoDBBackend.update_item, always=True)
DynamoDBBackend.transact_write_items = _atomic(DynamoDBBackend.transact_write_items, always=True)

if __name__ == "__main__":
    server.main()
