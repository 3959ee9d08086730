"""Pure core: canonical encoding, identities, ops, validity, causal DAG and the fold.

No I/O, no clock, no randomness: time and random bytes are passed in.
"""

from gossipmind.core.errors import (
    ConfigError,
    EncodingError,
    GossipmindError,
    IdentityError,
    InvalidOp,
    NetworkError,
    NotFound,
    RecipeError,
    SchemaError,
    StoreError,
    SyncError,
)
from gossipmind.core.identity import Identity
from gossipmind.core.ops import KINDS, MAX_OP_SIZE, Op
from gossipmind.core.policy import Policy
from gossipmind.core.replica import IngestResult, Replica, create_genesis
from gossipmind.core.schema import fix_id, pattern_id

__all__ = [
    "KINDS",
    "MAX_OP_SIZE",
    "ConfigError",
    "EncodingError",
    "GossipmindError",
    "Identity",
    "IdentityError",
    "IngestResult",
    "InvalidOp",
    "NetworkError",
    "NotFound",
    "Op",
    "Policy",
    "RecipeError",
    "Replica",
    "SchemaError",
    "StoreError",
    "SyncError",
    "create_genesis",
    "fix_id",
    "pattern_id",
]
