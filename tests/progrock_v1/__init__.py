"""The seed's ProgRock (Channels 1 code) on headrace.compat.v1, for tests/test_compat_v1.py."""
