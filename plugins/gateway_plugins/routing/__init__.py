"""The ``routing`` plugin family: model routing across OpenAI-compatible upstreams.

`plugin` is the plugin; `config` its table; `table`, `plan`, `health`, `limits`
and `kinds` the parts it is made of, each usable without a request.
"""

from .plugin import DEPLOYMENT_HEADER, Routing

__all__ = ["DEPLOYMENT_HEADER", "Routing"]
