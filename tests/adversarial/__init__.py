"""The adversarial suite: hostile clients and broken upstreams against a real gateway.

Each case checks that the gateway's own answers are JSON in the error envelope with a
fitting status, what the upstream received (often: nothing at all), and that no
answer is a 500 or carries a stack trace.  ``README.md`` beside this file lists
which classes of input each test file covers.
"""
