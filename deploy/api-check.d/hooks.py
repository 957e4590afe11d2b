"""Schemathesis hooks for deploy/api-check (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key names one request (contract section 9.1): the server
replays it for the same route and body bytes and refuses it, 422
IDEMPOTENCY_KEY_REUSED, with any other. Hypothesis draws short keys ("0",
"A") again and again with different bodies, so most keyed pushes and bulks
would be refused 422 and never reach the sync engine. Each valid generated
key is therefore bound to its request: the key, cut to 100 characters, a
dot, and 16 hex digits of a hash of the method, path and body as sent.
The same request sent twice keeps its key (and is replayed, which the run
then checks against the document); another request gets another key. An
invalid key (negative cases) is sent as generated.
"""

import hashlib
import json
import re

import schemathesis

HEADER = "Idempotency-Key"
VALID = re.compile(r"[!-~]{1,128}")


def bind(case):
    headers = case.headers
    key = headers.get(HEADER) if headers else None
    if not isinstance(key, str) or not VALID.fullmatch(key):
        return case
    # Key order kept: the same body object is the same bytes on the wire.
    request = json.dumps([case.method.upper(), case.path, case.body], default=repr)
    bound = hashlib.sha256(request.encode()).hexdigest()[:16]
    headers[HEADER] = f"{key[:100]}.{bound}"
    return case


# At generation, not before each call: a check that sends a case again
# (without its token, say) must send it as generated.
@schemathesis.hook
def map_case(context, case):
    return bind(case)


# The document's examples (one example key for every push and the bulk)
# do not pass through `map_case`.
@schemathesis.hook
def before_add_examples(context, examples):
    for case in examples:
        bind(case)
